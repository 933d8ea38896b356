//! `MEDIA_ALLOW_HOSTS`: the hosts an operator opens although they are not public (a media
//! server on the LAN, a test server on loopback). Entries are `host` (any port) or
//! `host:port`; IPv6 literals are written in brackets (`[fd00::1]:8000`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use url::Host;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is not a host or host:port")]
pub struct AllowListError {
    pub entry: String,
}

/// Listed hosts, each with its ports (`None`: every port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: BTreeMap<String, Option<Vec<u16>>>,
}

impl AllowList {
    pub fn parse(raw: &str) -> Result<Self, AllowListError> {
        let mut list = Self::default();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (host, port) = split_entry(entry).ok_or_else(|| AllowListError { entry: entry.to_string() })?;
            list.add(&host, port);
        }
        Ok(list)
    }

    /// Opens `host` (a name or an IP literal) on `port`, or on every port.
    pub fn add(&mut self, host: &str, port: Option<u16>) {
        let slot = self.hosts.entry(normalize(host)).or_insert_with(|| Some(Vec::new()));
        match (slot, port) {
            (Some(ports), Some(port)) => ports.push(port),
            (slot, None) => *slot = None,
            (None, Some(_)) => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether a URL's `host` on `port` is opened.
    pub fn permits(&self, host: &Host<&str>, port: u16) -> bool {
        let key = match host {
            Host::Domain(name) => normalize(name),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        match self.hosts.get(&key) {
            Some(None) => true,
            Some(Some(ports)) => ports.contains(&port),
            None => false,
        }
    }

    /// Whether some entry names `name` (a domain as DNS sees it), on any port.
    pub fn names(&self, name: &str) -> bool {
        self.hosts.contains_key(&normalize(name))
    }
}

fn normalize(host: &str) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

fn split_entry(entry: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (ip, None),
            _ => (ip, Some(after.strip_prefix(':')?)),
        }
    } else if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        (entry, None)
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let valid = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    valid.then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permits(list: &AllowList, url: &str) -> bool {
        let url = url::Url::parse(url).expect("url");
        list.permits(&url.host().expect("host"), url.port_or_known_default().expect("port"))
    }

    #[test]
    fn names_hosts_with_or_without_ports() {
        let list = AllowList::parse(" media.lan , 127.0.0.1:8000,[::1]:9000, fd00::1 ,Radio.Local.:80").unwrap();
        assert!(permits(&list, "http://media.lan:1234/a.mp3"));
        assert!(permits(&list, "http://MEDIA.lan./a.mp3"));
        assert!(permits(&list, "http://127.0.0.1:8000/a.mp3"));
        assert!(!permits(&list, "http://127.0.0.1:8001/a.mp3"));
        assert!(permits(&list, "http://[::1]:9000/"));
        assert!(!permits(&list, "http://[::1]:9001/"));
        assert!(permits(&list, "http://[fd00::1]:1/"));
        assert!(permits(&list, "http://radio.local/"));
        assert!(!permits(&list, "https://radio.local/"));
        assert!(!permits(&list, "http://other.lan/"));
        assert!(list.names("media.lan") && list.names("radio.local") && !list.names("other.lan"));
    }

    #[test]
    fn a_bare_host_opens_every_port_whatever_the_order() {
        let list = AllowList::parse("a.lan:1,a.lan").unwrap();
        assert!(permits(&list, "http://a.lan:2/"));
        let list = AllowList::parse("a.lan,a.lan:1").unwrap();
        assert!(permits(&list, "http://a.lan:2/"));
    }

    #[test]
    fn refuses_what_is_not_a_host() {
        for bad in ["http://a.lan", "a.lan:0", "a.lan:99999", "[::1", "[nope]:80", "a b", "a.lan:", ":80"] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowList::parse("").unwrap().is_empty());
    }
}
