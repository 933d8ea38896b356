//! An HTTP proxy on loopback through which the programs plugins run (yt-dlp) reach the
//! network, so what they fetch passes the same checks as the host's own requests: CONNECT
//! tunnels go only to checked addresses, plain requests are sent through [`Egress`] one hop
//! at a time (the program sees each redirect and asks again, through here). Programs are
//! pointed at it by the proxy environment variables, with credentials only they are given.

use std::convert::Infallible;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};

use super::{Egress, Outgoing, Reach};

/// Largest request body a program may send through the proxy.
const MAX_REQUEST_BODY: usize = 1 << 20;

type Body = BoxBody<Bytes, std::io::Error>;

/// A running proxy; its URL carries the credentials.
pub struct GuardProxy {
    url: String,
}

impl GuardProxy {
    /// Listens on a free loopback port; call within the runtime that should carry it.
    pub async fn start(egress: Egress) -> std::io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let secret: String = (0..24).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("mesastream:{secret}")));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let egress = egress.clone();
                let expected = expected.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let egress = egress.clone();
                        let expected = expected.clone();
                        async move { Ok::<_, Infallible>(handle(request, &egress, &expected).await) }
                    });
                    let served = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "guard proxy connection ended");
                    }
                });
            }
        });
        Ok(Self { url: format!("http://mesastream:{secret}@{addr}") })
    }

    /// The variables that point a program at this proxy (both spellings, as tools differ),
    /// each `http://user:secret@127.0.0.1:port`.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
            .into_iter()
            .map(|name| (name, self.url.clone()))
            .collect()
    }
}

async fn handle(request: Request<Incoming>, egress: &Egress, expected: &str) -> Response<Body> {
    let presented = request.headers().get(PROXY_AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
    if !bool::from(presented.ct_eq(expected.as_bytes())) {
        let mut response = answer(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "proxy credentials required");
        response.headers_mut().insert(PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"mesastream\""));
        return response;
    }
    if request.method() == Method::CONNECT { tunnel(request, egress).await } else { forward(request, egress).await }
}

fn answer(status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{text}\n"))).map_err(|never| match never {}).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// CONNECT host:port: connects to a checked address, then splices the two streams.
async fn tunnel(request: Request<Incoming>, egress: &Egress) -> Response<Body> {
    let Some(authority) = request.uri().authority().cloned() else {
        return answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(port) = authority.port_u16() else {
        return answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let targets = match egress.tunnel_target(host, port).await {
        Ok(targets) => targets,
        Err(e) => return answer(StatusCode::FORBIDDEN, &format!("refused: {e}")),
    };
    let upstream = match tokio::time::timeout(egress.connect_timeout(), TcpStream::connect(&targets[..])).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return answer(StatusCode::BAD_GATEWAY, &format!("cannot connect to {authority}: {e}")),
        Err(_) => return answer(StatusCode::GATEWAY_TIMEOUT, &format!("{authority} did not answer in time")),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "guard proxy tunnel was not upgraded"),
        }
    });
    Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed())
}

/// Headers that belong to one connection, not to the request or answer they travel with.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// An absolute-form request (`GET http://host/path`): one hop through the guarded client.
async fn forward(request: Request<Incoming>, egress: &Egress) -> Response<Body> {
    let url = request.uri().to_string();
    if request.uri().scheme().is_none() {
        return answer(StatusCode::BAD_REQUEST, "a proxy request needs an absolute URL");
    }
    let method = request.method().clone();
    let headers = request
        .headers()
        .iter()
        .filter(|(name, _)| !hop_by_hop(name))
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return answer(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let outgoing = Outgoing {
        method,
        url,
        headers,
        body: (!body.is_empty()).then(|| body.to_vec()),
        follow_redirects: false,
        reach: Reach::Public,
        timeout: None,
    };
    let upstream = match egress.send(outgoing).await {
        Ok(response) => response,
        Err(e @ (super::EgressError::RefusedAddress { .. } | super::EgressError::RefusedName(_))) => {
            return answer(StatusCode::FORBIDDEN, &format!("refused: {e}"));
        }
        Err(e) => return answer(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    let stream = upstream.bytes_stream().map_ok(Frame::data).map_err(std::io::Error::other);
    response
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|e| answer(StatusCode::BAD_GATEWAY, &e.to_string()))
}
