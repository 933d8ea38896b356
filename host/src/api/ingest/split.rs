//! One port for two protocols: a source client's upload (`SOURCE …`, `PUT /live/…`) is an
//! endless body without a length, which HTTP servers read as empty, so such connections are
//! told apart by their first bytes and handed to the ingest; every other connection goes on
//! to the HTTP server with those bytes in front, unchanged.
//!
//! Every connection also holds a place among its address's (`MAX_CONNECTIONS_PER_ADDRESS`,
//! both ports together) for as long as it is open; one past them is answered `429` and
//! closed, so one client cannot use up the node's file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub use super::connection::AddressSlots;
use super::connection::Connection;
use super::source::{Ingest, reply};
use crate::api::ApiError;

/// Connections accepted and not yet taken by the HTTP server.
const BACKLOG: usize = 256;
/// The most bytes read to tell an upload from a request (the longest opening).
const SNIFF_BYTES: usize = 16;

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

/// A connection for the HTTP server, with its client's address.
pub struct Accepted {
    pub io: Connection,
    pub peer: SocketAddr,
}

/// The HTTP server's side: the connections that are not uploads.
pub struct SplitListener {
    incoming: mpsc::Receiver<Accepted>,
}

impl SplitListener {
    /// The next connection; pending forever once the accepting task has ended.
    pub async fn accept(&mut self) -> Accepted {
        match self.incoming.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }
}

/// Accepts on `listener`: uploads go to `ingest`, the rest to the returned listener.
pub fn split(listener: TcpListener, ingest: Arc<Ingest>, port: Port, slots: Arc<AddressSlots>) -> SplitListener {
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
            let (slot, limit) = (slots.take(peer.ip()), slots.limit);
            tokio::spawn(async move {
                let Some(slot) = slot else {
                    let mut io = Connection::new(stream, Vec::new(), None);
                    let message = format!(
                        "{} has {} connections open (MAX_CONNECTIONS_PER_ADDRESS); close some first",
                        peer.ip(),
                        limit
                    );
                    return reply(&mut io, &ApiError::limit(message)).await;
                };
                let mut stream = stream;
                let wait = ingest.header_timeout();
                let (kind, opening) = match tokio::time::timeout(wait, sniff(&mut stream, port)).await {
                    Ok(sniffed) => sniffed,
                    // Too slow to say: HTTP has its own header timeout.
                    Err(_) => (Kind::Request, Vec::new()),
                };
                let io = Connection::new(stream, opening, Some(slot));
                match kind {
                    Kind::Upload => ingest.serve(io, peer).await,
                    Kind::Request => {
                        let _ = tx.send(Accepted { io, peer }).await;
                    }
                    Kind::Closed => {}
                }
            });
        }
    });
    SplitListener { incoming }
}

enum Kind {
    Upload,
    Request,
    Closed,
}

/// Reads the connection's first bytes until they tell an upload from a request; each read
/// waits for the socket, so a client that sends a byte at a time costs nothing between them.
async fn sniff(stream: &mut TcpStream, port: Port) -> (Kind, Vec<u8>) {
    let mut seen = Vec::with_capacity(SNIFF_BYTES);
    let openings = port.openings();
    loop {
        let mut more = [0u8; SNIFF_BYTES];
        let room = SNIFF_BYTES - seen.len();
        match stream.read(&mut more[..room]).await {
            Ok(0) | Err(_) => return (Kind::Closed, seen),
            Ok(n) => seen.extend_from_slice(&more[..n]),
        }
        if openings.iter().any(|o| seen.starts_with(o)) {
            return (Kind::Upload, seen);
        }
        if !openings.iter().any(|o| o.starts_with(&seen)) || seen.len() == SNIFF_BYTES {
            return (Kind::Request, seen);
        }
    }
}
