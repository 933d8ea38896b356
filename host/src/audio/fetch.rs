//! Streaming HTTP(S) media source. Bytes arrive on the media runtime and are read by a media
//! worker (see `inflow`), so playback starts with the first chunk. When the server accepts byte ranges the
//! source is seekable (a new ranged request), which containers with trailing indexes need.
//! Every request, ranged ones included, goes through the guarded [`Egress`].

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use prometheus_client::metrics::counter::Counter;
use reqwest::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use symphonia::core::io::MediaSource;
use tokio::runtime::Handle;

use super::inflow::{self, InflowReader, Readiness};

use crate::egress::{Egress, EgressError, Outgoing};

/// How fetches are made.
#[derive(Clone)]
pub struct FetchOptions {
    pub egress: Egress,
    pub runtime: Handle,
    /// Chunks buffered between the network and the decoder.
    pub channel_capacity: usize,
    /// `MEDIA_MAX_BYTES`: the most one track may download.
    pub max_bytes: u64,
    /// Counts decoder reads that found nothing received yet and had to wait.
    pub stalls: Counter,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error("server answered HTTP {0}")]
    Status(u16),
    #[error("not audio: the server says {0}")]
    NotAudio(String),
}

/// What the server told us about a media URL.
#[derive(Debug, Clone)]
pub struct Probe {
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub ranges: bool,
}

fn header_str(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn probe_of(response: &reqwest::Response) -> Probe {
    Probe {
        content_type: header_str(response, CONTENT_TYPE),
        content_length: header_str(response, CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        ranges: header_str(response, ACCEPT_RANGES).is_some_and(|v| v.eq_ignore_ascii_case("bytes")),
    }
}

/// Content types that are certainly not media.
fn is_clearly_not_media(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct.starts_with("text/") || ct.contains("json") || ct.contains("xml") || ct.starts_with("image/")
}

/// Checks that `url` answers with something that may be media, without downloading it.
pub async fn check(egress: &Egress, url: &str) -> Result<Probe, FetchError> {
    let response = egress.send(Outgoing::get(url, &[])).await?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let probe = probe_of(&response);
    if let Some(ct) = probe.content_type.as_deref().filter(|ct| is_clearly_not_media(ct)) {
        return Err(FetchError::NotAudio(ct.to_string()));
    }
    Ok(probe)
}

/// A blocking, optionally seekable reader over an HTTP body.
pub struct HttpSource {
    url: String,
    headers: Vec<(String, String)>,
    options: FetchOptions,
    cancel: Arc<AtomicBool>,
    body: InflowReader,
    pos: u64,
    probe: Probe,
}

/// Starts a request (from `offset` when non-zero) and receives its body on the media runtime
/// into a new queue reporting to `readiness`.
fn start(
    url: &str,
    headers: &[(String, String)],
    options: &FetchOptions,
    offset: u64,
    readiness: &Arc<Readiness>,
    cancel: &Arc<AtomicBool>,
) -> Result<(Probe, InflowReader), FetchError> {
    let mut request = Outgoing::get(url, headers);
    if offset > 0 {
        request.headers.push((RANGE.to_string(), format!("bytes={offset}-")));
    }
    let egress = options.egress.clone();
    let response = options.runtime.block_on(async move { egress.send(request).await })?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let probe = probe_of(&response);
    let (tx, rx) = inflow::channel(options.channel_capacity, readiness, options.runtime.clone(), cancel.clone());
    let mut budget = options.max_bytes.saturating_sub(offset);
    options.runtime.spawn(async move {
        let mut response = response;
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                () = tx.closed() => return,
            };
            match chunk {
                Ok(Some(bytes)) if bytes.len() as u64 > budget => {
                    let limit = offset + budget;
                    return tx.fail(format!("the media is larger than the {limit} byte limit (MEDIA_MAX_BYTES)")).await;
                }
                Ok(Some(bytes)) => {
                    budget -= bytes.len() as u64;
                    if !tx.send(bytes).await {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return tx.fail(e.without_url().to_string()).await,
            }
        }
    });
    Ok((probe, rx))
}

impl HttpSource {
    /// Opens `url`; call from a blocking thread, not from the runtime.
    pub fn open(
        url: &str,
        headers: Vec<(String, String)>,
        options: FetchOptions,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self, FetchError> {
        let readiness = Readiness::new(options.channel_capacity, options.stalls.clone());
        let (probe, body) = start(url, &headers, &options, 0, &readiness, &cancel)?;
        if let Some(ct) = probe.content_type.as_deref().filter(|ct| is_clearly_not_media(ct)) {
            return Err(FetchError::NotAudio(ct.to_string()));
        }
        Ok(Self { url: url.to_string(), headers, options, cancel, body, pos: 0, probe })
    }

    /// Whether the next packet can be decoded without waiting, and who to tell when it can.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.body.readiness().clone()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.probe.content_type.as_deref()
    }

    fn seekable(&self) -> bool {
        self.probe.ranges && self.probe.content_length.is_some()
    }
}

impl Read for HttpSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf).map_err(|e| match (e.kind(), self.probe.content_length) {
            (io::ErrorKind::ConnectionAborted, Some(len)) => {
                io::Error::new(e.kind(), format!("connection closed after {} of {len} bytes ({e})", self.pos))
            }
            _ => e,
        })?;
        if n == 0
            && !buf.is_empty()
            && let Some(len) = self.probe.content_length.filter(|len| self.pos < *len)
        {
            // A body that ends early is a broken download, not the end of the track.
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("connection closed after {} of {len} bytes", self.pos),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for HttpSource {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let unsupported = || io::Error::new(io::ErrorKind::Unsupported, "source is not seekable");
        let target = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(unsupported)?,
            SeekFrom::End(d) => {
                self.probe.content_length.and_then(|len| len.checked_add_signed(d)).ok_or_else(unsupported)?
            }
        };
        if target == self.pos {
            return Ok(target);
        }
        let forward = target > self.pos && target - self.pos <= self.body.buffered() as u64 + 64 * 1024;
        if forward || !self.seekable() {
            if target < self.pos {
                return Err(unsupported());
            }
            let skip = target - self.pos;
            io::copy(&mut self.by_ref().take(skip), &mut io::sink())?;
            return if self.pos == target { Ok(target) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        let readiness = self.body.readiness().clone();
        let (_, body) = start(&self.url, &self.headers, &self.options, target, &readiness, &self.cancel)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.body = body;
        self.pos = target;
        Ok(target)
    }
}

impl MediaSource for HttpSource {
    fn is_seekable(&self) -> bool {
        self.seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        self.probe.content_length
    }
}

/// Media servers are strangers: whatever a server answers (a status, a length that lies,
/// ranges it claims and ignores, a body cut short), the source reads it or fails cleanly,
/// and an honest answer reads back byte for byte. A raw socket server answers each request
/// with the generated response.
#[cfg(test)]
mod properties {
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::{Arc, Mutex, OnceLock};

    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::egress::{AllowList, EgressSettings};

    struct Rig {
        runtime: tokio::runtime::Runtime,
        addr: std::net::SocketAddr,
        response: Arc<Mutex<Vec<u8>>>,
    }

    /// One server for every case: it answers with whatever `response` holds, then closes.
    fn rig() -> &'static Rig {
        static RIG: OnceLock<Rig> = OnceLock::new();
        RIG.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
            let addr = listener.local_addr().unwrap();
            let response: Arc<Mutex<Vec<u8>>> = Arc::default();
            let answer = response.clone();
            runtime.spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let bytes = answer.lock().unwrap().clone();
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = socket.write_all(&bytes).await;
                        let _ = socket.shutdown().await;
                    });
                }
            });
            Rig { runtime, addr, response }
        })
    }

    fn options(rig: &Rig) -> FetchOptions {
        let mut allow = AllowList::default();
        allow.add("127.0.0.1", Some(rig.addr.port()));
        let egress = rig.runtime.block_on(async { Egress::new(EgressSettings { allow, ..Default::default() }) });
        FetchOptions {
            egress: egress.unwrap(),
            runtime: rig.runtime.handle().clone(),
            channel_capacity: 4,
            max_bytes: 1 << 20,
            stalls: Counter::default(),
        }
    }

    #[derive(Debug, Clone)]
    struct Answer {
        status: u16,
        length: Option<usize>,
        ranges: bool,
        content_type: &'static str,
        body: Vec<u8>,
    }

    fn answers() -> impl Strategy<Value = Answer> {
        (
            prop::sample::select(vec![200u16, 206, 200, 404, 500, 302]),
            prop::option::of(0usize..6000),
            any::<bool>(),
            prop::sample::select(vec!["audio/mpeg", "application/octet-stream", "text/html", ""]),
            prop::collection::vec(any::<u8>(), 0..5000),
        )
            .prop_map(|(status, length, ranges, content_type, body)| Answer {
                status,
                length,
                ranges,
                content_type,
                body,
            })
    }

    fn bytes_of(answer: &Answer) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", answer.status);
        if let Some(length) = answer.length {
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        if answer.ranges {
            head.push_str("Accept-Ranges: bytes\r\n");
        }
        if !answer.content_type.is_empty() {
            head.push_str(&format!("Content-Type: {}\r\n", answer.content_type));
        }
        let mut bytes = format!("{head}\r\n").into_bytes();
        bytes.extend_from_slice(&answer.body);
        bytes
    }

    proptest! {
        #[test]
        fn any_answer_is_read_or_refused_cleanly(answer in answers(), seeks in prop::collection::vec(any::<u64>(), 0..4)) {
            let rig = rig();
            *rig.response.lock().unwrap() = bytes_of(&answer);
            let url = format!("http://{}/media", rig.addr);
            let Ok(mut source) = HttpSource::open(&url, Vec::new(), options(rig), Arc::default()) else { return Ok(()) };
            let mut read = Vec::new();
            let outcome = source.read_to_end(&mut read);
            let honest = answer.status == 200 && answer.length == Some(answer.body.len());
            if honest {
                prop_assert!(outcome.is_ok(), "{:?}", outcome);
                prop_assert_eq!(&read, &answer.body);
            }
            for seek in seeks {
                if source.seek(SeekFrom::Start(seek % 7000)).is_ok() {
                    let _ = source.read(&mut [0u8; 512]);
                }
            }
        }
    }
}
