//! `mesastream:plugin/http`: requests to granted hosts only, through the host's guarded
//! client (so private addresses are refused unless this plugin is granted them or the
//! operator listed the host in `MEDIA_ALLOW_HOSTS`, and the checked address is the one
//! connected to); no redirects followed (the plugin sees them), bounded time and body size.

use futures_util::StreamExt;

use super::{Capabilities, bounded};
use crate::egress::{EgressError, Outgoing, Reach};
use crate::plugins::engine::PluginState;
use crate::plugins::resolver::bindings::mesastream::plugin0_1_0::http::{Error, Host, Request, Response};

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
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| Error::Failed(format!("invalid method {:?}", request.method)))?;
    let timeout = bounded(request.timeout_ms, caps.limits.http_timeout);
    let max = caps.limits.http_max_bytes;
    let outgoing = Outgoing {
        method,
        url: url.to_string(),
        headers: request.headers,
        body: request.body,
        follow_redirects: false,
        reach: if grant.private { Reach::Any } else { Reach::Public },
        timeout: Some(timeout),
    };
    let egress = caps.services.egress.clone();
    caps.services.runtime.block_on(async move {
        let work = async {
            let response = egress.send(outgoing).await.map_err(classify)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| Error::Failed(e.without_url().to_string()))?;
                if body.len() + chunk.len() > max {
                    return Err(Error::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response { status, headers, body })
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| Error::Timeout)?
    })
}

fn classify(e: EgressError) -> Error {
    match e {
        EgressError::Timeout => Error::Timeout,
        EgressError::RefusedAddress { .. } | EgressError::RefusedName(_) | EgressError::Scheme(_) => {
            Error::Denied(e.to_string())
        }
        other => Error::Failed(other.to_string()),
    }
}
