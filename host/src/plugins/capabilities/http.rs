//! `mesastream:plugin/http`: requests to granted hosts only, private addresses refused
//! unless granted (checked on the resolved addresses, which the request is then pinned
//! to, so a name cannot be re-pointed between check and use), no redirects followed,
//! bounded time and body size.

use std::net::{IpAddr, SocketAddr};

use futures_util::StreamExt;

use super::{Capabilities, bounded};
use crate::plugins::engine::PluginState;
use crate::plugins::resolver::bindings::mesastream::plugin::http::{Error, Host, Request, Response};

impl Host for PluginState {
    fn send(&mut self, request: Request) -> Result<Response, Error> {
        let Some(caps) = self.caps.clone() else {
            return Err(Error::Denied("http is not available to filters".into()));
        };
        self.in_host(|| send(&caps, request))
    }
}

fn send(caps: &Capabilities, request: Request) -> Result<Response, Error> {
    let Some(grant) = caps.grants.http.as_ref() else {
        return Err(Error::Denied("the http capability is not granted".into()));
    };
    let url =
        url::Url::parse(&request.url).map_err(|e| Error::Failed(format!("invalid URL {:?}: {e}", request.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Denied(format!("scheme {} is not allowed", url.scheme())));
    }
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    if !grant.allows_host(&host) {
        return Err(Error::Denied(format!("host {host} is not granted")));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let timeout = bounded(request.timeout_ms, caps.limits.http_timeout);
    let max = caps.limits.http_max_bytes;
    let private_ok = grant.private;
    caps.services.runtime.block_on(async move {
        let addrs: Vec<SocketAddr> = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|e| Error::Failed(format!("cannot resolve {host}: {e}")))?
            .collect();
        if !private_ok && let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(Error::Denied(format!("{host} resolves to the private address {}", bad.ip())));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| Error::Failed(e.to_string()))?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| Error::Failed(format!("invalid method {:?}", request.method)))?;
        let mut builder = client.request(method, url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(classify)?;
            if body.len() + chunk.len() > max {
                return Err(Error::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, headers, body })
    })
}

fn classify(e: reqwest::Error) -> Error {
    if e.is_timeout() { Error::Timeout } else { Error::Failed(e.to_string()) }
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, broadcast and multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_private_ranges() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
