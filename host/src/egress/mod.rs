//! The one guarded way out. Every request the host makes for media (direct links, the
//! locators resolvers return, range re-requests, plugins' `http` calls, and the programs
//! plugins run, through [`proxy`]) goes through [`Egress`], which:
//! - resolves names itself and connects only to the addresses it checked (no second lookup
//!   to re-point), refusing loopback, private, link-local, CGNAT, multicast, reserved and
//!   unspecified addresses in every IPv4 and IPv6 form unless the operator listed the host
//!   in `MEDIA_ALLOW_HOSTS`;
//! - follows redirects itself, checking every hop the same way;
//! - ignores proxy environment variables, and bounds connect, answer and idle time.

pub mod address;
pub mod allow;
pub mod proxy;
pub mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, COOKIE, LOCATION, PROXY_AUTHORIZATION};
use reqwest::{Method, StatusCode};
use url::{Host, Url};

pub use allow::AllowList;
use resolve::{GuardedResolver, Lookup, RefusedName, Scope};

#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// `MEDIA_ALLOW_HOSTS`: hosts opened although they are not public.
    pub allow: AllowList,
    /// `MEDIA_DNS_SERVER`: ask this DNS server instead of the system's resolver.
    pub dns_server: Option<SocketAddr>,
    pub connect_timeout: Duration,
    /// Until a server's answer (status and headers) arrives, per hop.
    pub answer_timeout: Duration,
    /// Longest silence while a body streams.
    pub idle_timeout: Duration,
    pub max_redirects: usize,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            allow: AllowList::default(),
            dns_server: None,
            connect_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("{0}: links can only be http or https")]
    Scheme(String),
    #[error("{host} is a {kind} address, not a public one")]
    RefusedAddress { host: String, kind: &'static str },
    #[error("{0}, not a public one")]
    RefusedName(RefusedName),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("a redirect without a valid Location")]
    BadRedirect,
    #[error("the server did not answer in time")]
    Timeout,
    #[error("{0}")]
    Failed(String),
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// Which addresses a request may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Public addresses and the operator's listed hosts (all media).
    Public,
    /// Anything (a plugin whose operator granted it private networks).
    Any,
}

/// One outgoing request.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub follow_redirects: bool,
    pub reach: Reach,
    /// Replaces the answer timeout (a plugin's own bound); still bounded by the caller.
    pub timeout: Option<Duration>,
}

impl Outgoing {
    /// A GET for media: redirects followed, public reach.
    pub fn get(url: &str, headers: &[(String, String)]) -> Self {
        Self {
            method: Method::GET,
            url: url.to_string(),
            headers: headers.to_vec(),
            body: None,
            follow_redirects: true,
            reach: Reach::Public,
            timeout: None,
        }
    }
}

#[derive(Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

struct Inner {
    /// Public addresses only.
    public: reqwest::Client,
    /// Also the private addresses of listed names (used only for a listed host and port).
    listed: reqwest::Client,
    /// Anything.
    any: reqwest::Client,
    /// The resolvers of `public` and `listed`, for tunnels (the proxy's CONNECT).
    public_resolver: GuardedResolver,
    listed_resolver: GuardedResolver,
    allow: Arc<AllowList>,
    settings: EgressSettings,
}

impl Egress {
    pub fn new(settings: EgressSettings) -> Result<Self, EgressError> {
        let lookup = match settings.dns_server {
            Some(addr) => Lookup::server(addr),
            None => Lookup::System,
        };
        let allow = Arc::new(settings.allow.clone());
        let public_resolver =
            GuardedResolver { lookup: lookup.clone(), scope: Scope::Public(Arc::new(AllowList::default())) };
        let listed_resolver = GuardedResolver { lookup: lookup.clone(), scope: Scope::Public(allow.clone()) };
        let client = |resolver: GuardedResolver| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(resolver))
                .connect_timeout(settings.connect_timeout)
                .read_timeout(settings.idle_timeout)
                .user_agent(concat!("mesastream/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| EgressError::Setup(e.to_string()))
        };
        let inner = Inner {
            public: client(public_resolver.clone())?,
            listed: client(listed_resolver.clone())?,
            any: client(GuardedResolver { lookup, scope: Scope::Any })?,
            public_resolver,
            listed_resolver,
            allow,
            settings,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Sends `out`, checking every hop; the answer's body is the caller's to read.
    pub async fn send(&self, out: Outgoing) -> Result<reqwest::Response, EgressError> {
        let mut url = Url::parse(out.url.trim()).map_err(|e| EgressError::InvalidUrl(e.to_string()))?;
        let mut method = out.method;
        let mut body = out.body;
        let mut headers = out.headers;
        let answer_timeout = out.timeout.unwrap_or(self.inner.settings.answer_timeout);
        for _hop in 0..=self.inner.settings.max_redirects {
            let client = self.client_for(&url, out.reach)?;
            let mut request = client.request(method.clone(), url.clone());
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            if let Some(bytes) = &body {
                request = request.body(bytes.clone());
            }
            let response = tokio::time::timeout(answer_timeout, request.send())
                .await
                .map_err(|_| EgressError::Timeout)?
                .map_err(classify)?;
            if !out.follow_redirects || !is_redirect(response.status()) {
                return Ok(response);
            }
            let next = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or(EgressError::BadRedirect)?;
            if response.status() == StatusCode::SEE_OTHER || method == Method::POST {
                method = Method::GET;
                body = None;
            }
            if next.origin() != url.origin() {
                // Credentials meant for one site are not handed to the next.
                let private = [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION];
                headers.retain(|(name, _)| !private.iter().any(|p| p.as_str().eq_ignore_ascii_case(name)));
            }
            url = next;
        }
        Err(EgressError::TooManyRedirects(self.inner.settings.max_redirects))
    }

    /// The client that may carry a request to `url`, after checking what can be checked
    /// before connecting (scheme, literal addresses, the allow-list).
    fn client_for(&self, url: &Url, reach: Reach) -> Result<&reqwest::Client, EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressError::Scheme(url.scheme().to_string()));
        }
        let host = url.host().ok_or_else(|| EgressError::InvalidUrl(format!("{url} has no host")))?;
        if reach == Reach::Any {
            return Ok(&self.inner.any);
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let listed = self.inner.allow.permits(&host, port);
        if !listed {
            refuse_literal(&host)?;
        }
        Ok(if listed { &self.inner.listed } else { &self.inner.public })
    }

    /// The checked addresses for a tunnel to `host:port` (the proxy's CONNECT).
    pub async fn tunnel_target(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        // An address literal may come with or without IPv6 brackets; anything else is a name.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let owned = match bare.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => Host::Ipv4(ip),
            Ok(std::net::IpAddr::V6(ip)) => Host::Ipv6(ip),
            Err(_) => Host::parse(bare).map_err(|e| EgressError::InvalidUrl(format!("{host}: {e}")))?,
        };
        let parsed = match &owned {
            Host::Domain(name) => Host::Domain(name.as_str()),
            Host::Ipv4(ip) => Host::Ipv4(*ip),
            Host::Ipv6(ip) => Host::Ipv6(*ip),
        };
        let listed = self.inner.allow.permits(&parsed, port);
        if !listed {
            refuse_literal(&parsed)?;
        }
        let ips = match parsed {
            Host::Ipv4(ip) => vec![ip.into()],
            Host::Ipv6(ip) => vec![ip.into()],
            Host::Domain(name) => {
                let resolver = if listed { &self.inner.listed_resolver } else { &self.inner.public_resolver };
                resolver.resolve_checked(name).await.map_err(|e| classify_source(e.as_ref()))?
            }
        };
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }

    pub fn connect_timeout(&self) -> Duration {
        self.inner.settings.connect_timeout
    }
}

fn refuse_literal(host: &Host<&str>) -> Result<(), EgressError> {
    let ip = match host {
        Host::Ipv4(ip) => (*ip).into(),
        Host::Ipv6(ip) => (*ip).into(),
        Host::Domain(_) => return Ok(()),
    };
    match address::forbidden(ip) {
        Some(kind) => Err(EgressError::RefusedAddress { host: ip.to_string(), kind: kind.describe() }),
        None => Ok(()),
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// A request error as the user should read it: the refusal when the resolver refused, else
/// the chain of causes without the URL.
fn classify(e: reqwest::Error) -> EgressError {
    if e.is_timeout() {
        return EgressError::Timeout;
    }
    classify_source(&e.without_url())
}

fn classify_source(e: &(dyn std::error::Error + 'static)) -> EgressError {
    let mut causes = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(refused) = cause.downcast_ref::<RefusedName>() {
            return EgressError::RefusedName(refused.clone());
        }
        let text = cause.to_string();
        if !causes.iter().any(|c: &String| c.contains(&text)) {
            causes.push(text);
        }
        next = cause.source();
    }
    EgressError::Failed(causes.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tunnels_go_only_to_public_or_listed_hosts() {
        let mut allow = AllowList::default();
        allow.add("127.0.0.1", Some(8443));
        let egress = Egress::new(EgressSettings { allow, ..Default::default() }).expect("egress");
        let refused = egress.tunnel_target("127.0.0.1", 443).await.unwrap_err();
        assert_eq!(refused.to_string(), "127.0.0.1 is a loopback address, not a public one");
        let refused = egress.tunnel_target("::ffff:10.0.0.1", 443).await.unwrap_err();
        assert!(refused.to_string().contains("private network address"), "{refused}");
        let refused = egress.tunnel_target("localhost", 443).await.unwrap_err();
        assert!(refused.to_string().starts_with("localhost resolves to a loopback address"), "{refused}");
        let listed = egress.tunnel_target("127.0.0.1", 8443).await.expect("a listed host and port");
        assert_eq!(listed, vec![SocketAddr::from(([127, 0, 0, 1], 8443))]);
        let public = egress.tunnel_target("93.184.216.34", 443).await.expect("a public address");
        assert_eq!(public, vec![SocketAddr::from(([93, 184, 216, 34], 443))]);
        // The proxy hands IPv6 literals over without their brackets.
        let v6 = egress.tunnel_target("2606:4700::1111", 443).await.expect("a public IPv6 address");
        assert_eq!(v6, vec!["[2606:4700::1111]:443".parse().expect("address")]);
    }
}
