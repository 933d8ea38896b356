//! The HTTP server of the API port (and `INGEST_PORT`'s metadata route): one hyper HTTP/1.1
//! connection per accepted client, with a header-read timeout (`HTTP_HEADER_TIMEOUT_SECONDS`:
//! a request head must arrive in time, and so must the next one on a kept-alive connection),
//! upgrades for WebSockets, the client's address for the handlers, and a graceful shutdown
//! that lets requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use super::ingest::split::{Accepted, SplitListener};

/// Serves `app` on `listener` until `graceful` resolves, then waits for open connections to
/// finish what they are doing.
pub async fn serve(
    mut listener: SplitListener,
    app: Router,
    header_timeout: Duration,
    graceful: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopping) = watch::channel(false);
    // Each connection holds a sender; when all are dropped, every connection has ended.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    tokio::pin!(graceful);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let connection = serve_connection(accepted, app.clone(), header_timeout, stopping.clone());
                let open = open.clone();
                tokio::spawn(async move {
                    connection.await;
                    drop(open);
                });
            }
            () = &mut graceful => break,
        }
    }
    let _ = stop.send(true);
    drop(open);
    let _ = all_closed.recv().await;
}

async fn serve_connection(accepted: Accepted, app: Router, header_timeout: Duration, mut stop: watch::Receiver<bool>) {
    let Accepted { io, peer } = accepted;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.oneshot(request).await.unwrap_or_else(|never| match never {})) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    loop {
        tokio::select! {
            served = &mut connection => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "http connection ended");
                }
                break;
            }
            changed = stop.changed(), if !*stop.borrow() => {
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
