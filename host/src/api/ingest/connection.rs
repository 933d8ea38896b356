//! A client connection as a port accepted it: the first bytes read to tell what it is, then
//! the rest of the socket, readable and writable as one stream; and its place among its
//! address's connections (`MAX_CONNECTIONS_PER_ADDRESS`), held for as long as the stream
//! lives, through an upgrade to a WebSocket too.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Chain, Join, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The open connections of each client address, and how many one may have.
pub struct AddressSlots {
    pub limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressSlots {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, open: Mutex::default() })
    }

    /// A place for one more connection from `ip`, unless it has all it may.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { slots: self.clone(), ip })
    }
}

/// One connection's place among its address's; given back when dropped.
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

pub struct Connection {
    io: Join<Chain<Cursor<Vec<u8>>, OwnedReadHalf>, OwnedWriteHalf>,
    _slot: Option<AddressSlot>,
}

impl Connection {
    /// `stream` with `opening` (bytes already read from it) in front again, holding `slot`.
    pub fn new(stream: TcpStream, opening: Vec<u8>, slot: Option<AddressSlot>) -> Self {
        let (read, write) = stream.into_split();
        Self { io: tokio::io::join(Cursor::new(opening).chain(read), write), _slot: slot }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
