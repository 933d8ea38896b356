//! One port for two protocols: a source client's upload (`SOURCE …`, `PUT /live/…`) is an
//! endless body without a length, which HTTP servers read as empty, so such connections are
//! told apart by their first bytes and handed to the ingest; every other connection goes on
//! to the HTTP server unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::source::Ingest;

/// How often a connection whose first bytes are still partial is looked at again.
const SNIFF_RETRY: Duration = Duration::from_millis(10);
/// Connections accepted and not yet taken by the HTTP server.
const BACKLOG: usize = 256;

/// Which requests are a source's upload on this port.
#[derive(Debug, Clone, Copy)]
pub enum Port {
    /// The API port: `SOURCE` anywhere, `PUT` under `/live/`.
    Api,
    /// `INGEST_PORT`: any `SOURCE` or `PUT` (Icecast's `/{mount}`).
    Ingest,
}

impl Port {
    fn openings(self) -> &'static [&'static [u8]] {
        match self {
            Port::Api => &[b"SOURCE ", b"PUT /live/"],
            Port::Ingest => &[b"SOURCE ", b"PUT "],
        }
    }
}

/// The HTTP server's side: the connections that are not uploads.
pub struct SplitListener {
    incoming: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for SplitListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it never does while the server runs).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts on `listener`: uploads go to `ingest`, the rest to the returned listener.
pub fn split(listener: TcpListener, ingest: Arc<Ingest>, port: Port) -> std::io::Result<SplitListener> {
    let local = listener.local_addr()?;
    let (tx, incoming) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        while !tx.is_closed() {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, ingest) = (tx.clone(), ingest.clone());
            tokio::spawn(async move {
                let wait = ingest.header_timeout();
                match tokio::time::timeout(wait, is_upload(&stream, port)).await {
                    Ok(Some(true)) => ingest.serve(stream, peer).await,
                    Ok(None) => {}
                    // Not an upload, or too slow to say: HTTP has its own timeouts.
                    Ok(Some(false)) | Err(_) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                }
            });
        }
    });
    Ok(SplitListener { incoming, local })
}

/// Whether the connection opens like an upload; none when it closed before saying.
async fn is_upload(stream: &TcpStream, port: Port) -> Option<bool> {
    let mut buf = [0u8; 16];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let seen = &buf[..n];
        let openings = port.openings();
        if openings.iter().any(|o| seen.starts_with(o)) {
            return Some(true);
        }
        if !openings.iter().any(|o| o.starts_with(seen)) {
            return Some(false);
        }
        // A prefix of an upload's opening so far: wait for the rest.
        tokio::time::sleep(SNIFF_RETRY).await;
    }
}
