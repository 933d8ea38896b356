//! Name resolution that is also the address check. The HTTP client connects to exactly the
//! addresses this resolver returned, so the name cannot be re-pointed between the check and
//! the connection (DNS rebinding): there is only one lookup.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address::{Forbidden, forbidden};
use super::allow::AllowList;

/// Where names are looked up.
#[derive(Clone)]
pub enum Lookup {
    /// The system's resolver (`getaddrinfo`: hosts file, resolv.conf, nsswitch).
    System,
    /// One DNS server (`MEDIA_DNS_SERVER`), asked every time (no cache).
    Server(Arc<TokioResolver>),
}

impl Lookup {
    pub fn server(addr: SocketAddr) -> Self {
        let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut options = ResolverOpts::default();
        options.cache_size = 0;
        options.attempts = 1;
        let resolver = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(options)
            .build();
        Self::Server(Arc::new(resolver))
    }

    pub async fn addresses(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        match self {
            Self::System => Ok(tokio::net::lookup_host((name, 0)).await?.map(|a| a.ip()).collect()),
            Self::Server(resolver) => {
                let found = resolver.lookup_ip(name).await.map_err(std::io::Error::other)?;
                Ok(found.iter().collect())
            }
        }
    }
}

/// A name that resolved to an address media may not come from.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host} resolves to a {} address", kind.describe())]
pub struct RefusedName {
    pub host: String,
    pub ip: IpAddr,
    pub kind: Forbidden,
}

/// Which resolved addresses are acceptable.
#[derive(Clone)]
pub enum Scope {
    /// Public addresses, and any address of a name the operator listed.
    Public(Arc<AllowList>),
    /// Any address (a plugin granted private networks).
    Any,
}

/// The resolver the media clients connect through.
#[derive(Clone)]
pub struct GuardedResolver {
    pub lookup: Lookup,
    pub scope: Scope,
}

impl GuardedResolver {
    /// The addresses of `name`, refused whole when one of them is not acceptable (a name
    /// that mixes public and private answers is not trusted with either).
    pub async fn resolve_checked(&self, name: &str) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addresses = self.lookup.addresses(name).await?;
        if addresses.is_empty() {
            return Err(format!("{name} has no address").into());
        }
        let open = match &self.scope {
            Scope::Any => true,
            Scope::Public(allowed) => allowed.names(name),
        };
        if !open && let Some((ip, kind)) = addresses.iter().find_map(|ip| forbidden(*ip).map(|k| (*ip, k))) {
            return Err(Box::new(RefusedName { host: name.trim_end_matches('.').to_string(), ip, kind }));
        }
        Ok(addresses)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addresses = this.resolve_checked(name.as_str()).await?;
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
