//! Baselines the benchmarks measure in their own run, so a figure is read against what the
//! same machine did that minute.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};

use mesastream::audio::decode::{SourceDecoder, Unit};
use mesastream::audio::encode::{FRAME_LEN, OpusEncoder, tone_frame};
use mesastream::audio::opus_packets::PacketDecoder;

/// Frames each codec loop times (after a warm-up, see [`us_per_round`]).
const FRAMES: u32 = 3000;

/// libopus alone, at the server's default settings (128 kbit/s, complexity 10), encoding one
/// synthetic frame over and over: µs per 20 ms stereo frame.
pub fn encode_only_us_per_frame() -> f64 {
    encode_us_per_frame(&[tone_frame(440.0, 0.4, 0)])
}

/// A track as the server decodes it: consecutive 20 ms stereo frames at 48 kHz (the file
/// must be at 48 kHz already; the benchmarks' fixtures are).
pub fn track_frames(path: &Path) -> Vec<Vec<f32>> {
    let file = std::fs::File::open(path).expect("fixture opens");
    let mut decoder = SourceDecoder::open(Box::new(file), None).expect("fixture decodes");
    let mut samples = Vec::new();
    while let Some(unit) = decoder.next_unit().expect("fixture decodes") {
        match unit {
            Unit::Pcm { rate, samples: pcm } => {
                assert_eq!(rate, 48_000, "the baseline's fixture is at 48 kHz");
                samples.extend_from_slice(pcm);
            }
            Unit::Opus(_) => panic!("the baseline's fixture is not Opus"),
        }
    }
    samples.chunks_exact(FRAME_LEN).map(<[f32]>::to_vec).collect()
}

/// libopus encoding `frames` in order (and again from the start, one encoder throughout),
/// at the server's defaults: µs per frame. On a real track's frames this is the encode a
/// transcoding player cannot avoid.
pub fn encode_us_per_frame(frames: &[Vec<f32>]) -> f64 {
    let mut encoder = OpusEncoder::new(128).expect("encoder");
    us_per_round(FRAMES, |i| {
        std::hint::black_box(encoder.encode_in_place(&frames[i as usize % frames.len()]).expect("encode").len());
    })
}

/// libopus decoding `frames`' encode in order: µs per frame. What a filtered play of a
/// cached track adds to the encode.
pub fn decode_us_per_frame(frames: &[Vec<f32>]) -> f64 {
    let mut encoder = OpusEncoder::new(128).expect("encoder");
    let packets: Vec<Vec<u8>> = frames.iter().map(|f| encoder.encode(f).expect("encode")).collect();
    let mut decoder = PacketDecoder::default();
    us_per_round(FRAMES, |i| {
        std::hint::black_box(decoder.decode(&packets[i as usize % packets.len()]).expect("decode").len());
    })
}

/// What one passthrough packet physically costs on this machine, each part timed in a tight
/// loop: µs per packet.
pub struct PacketBaseline {
    /// DAVE frame encryption of a 160-byte Opus frame by the same library the server uses,
    /// in a formed two-member group.
    pub dave: f64,
    /// The AES-256-GCM transport seal with the RTP header as associated data.
    pub transport: f64,
    /// One UDP send on loopback to a socket a thread keeps reading, as the listener does (on
    /// loopback the receiving side's kernel work and wake-up run on the sender's CPU).
    pub send: f64,
    /// The same send to a socket nobody reads: the kernel drops it at the full receive
    /// queue, so it costs less than a packet anyone hears (what this baseline was before).
    pub send_unread: f64,
    /// Sends across 1000 connected sockets (a socket per voice connection, as the server
    /// has) one system call each, and the same submitted 16 at a time through io_uring:
    /// what batching the system calls would save.
    pub send_many_sockets: f64,
    pub send_batched: f64,
}

impl PacketBaseline {
    /// DAVE + transport seal + a send someone receives: the physical cost of one packet.
    pub fn total(&self) -> f64 {
        self.dave + self.transport + self.send
    }
}

const PACKETS: u32 = 200_000;
const SOCKETS: usize = 1000;
const BATCH: usize = 16;

/// `work(i)` for a warm-up of `n / 20` and then `n` timed rounds: µs per round.
fn us_per_round(n: u32, mut work: impl FnMut(u32)) -> f64 {
    for i in 0..n / 20 {
        work(i);
    }
    let start = Instant::now();
    for i in 0..n {
        work(i);
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// A sender in a formed DAVE group (the listener is the other member).
fn dave_sender() -> davey::DaveSession {
    use fake_voice::dave::{ExternalSenderRole, Member};
    let role = ExternalSenderRole::new(7).expect("external sender");
    let package = role.package().expect("external sender package");
    let mut sender = Member::new(1, 7, &package).expect("sender");
    let mut listener = Member::new(2, 7, &package).expect("listener");
    sender.key_package().expect("sender key package");
    let proposals = role.propose_add(0, &[listener.key_package().expect("key package")]).expect("proposal");
    let formed = sender.commit_to(&proposals).expect("commit").expect("a commit");
    sender.apply_commit(&formed.commit, 0).expect("apply commit");
    assert!(sender.session.can_encrypt(), "the group formed");
    sender.session
}

/// A loopback socket a thread drains until the returned guard is dropped.
struct DrainedSink {
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl DrainedSink {
    fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("sink");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let (reader, done) = (socket.try_clone().expect("sink clone"), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                let _ = reader.recv(&mut buffer);
            }
        });
        Self { socket, stop, reader: Some(reader) }
    }
}

impl Drop for DrainedSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn sender_to(sink: &UdpSocket) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket.connect(sink.local_addr().expect("sink address")).expect("connect");
    socket.set_nonblocking(true).expect("nonblocking");
    socket
}

/// Times each part of a packet's work.
pub fn packet_us() -> PacketBaseline {
    let opus = [0x5au8; 160];
    let mut dave = dave_sender();
    let mut frame = Vec::with_capacity(256);
    let dave_us = us_per_round(PACKETS, |_| {
        dave.encrypt_into(davey::MediaType::AUDIO, davey::Codec::OPUS, &opus, &mut frame).expect("DAVE encrypt");
    });

    let transport = Aes256Gcm::new(&[9u8; 32].into());
    let header = [0x80, 0x78, 0, 1, 0, 0, 3, 0xc0, 0, 0, 0, 7];
    let mut packet = Vec::with_capacity(256);
    let transport_us = us_per_round(PACKETS, |i| {
        packet.clear();
        packet.extend_from_slice(&header);
        packet.extend_from_slice(&frame);
        let (_, body) = packet.split_at_mut(header.len());
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&i.to_be_bytes());
        let tag = transport.encrypt_in_place_detached((&nonce).into(), &header, body).expect("seal");
        packet.extend_from_slice(&tag);
        packet.extend_from_slice(&i.to_be_bytes());
    });

    let sink = DrainedSink::new();
    let socket = sender_to(&sink.socket);
    let send_us = us_per_round(PACKETS, |_| {
        let _ = socket.send(&packet);
    });
    let sockets: Vec<UdpSocket> = (0..SOCKETS).map(|_| sender_to(&sink.socket)).collect();
    let send_many_us = us_per_round(PACKETS, |i| {
        let _ = sockets[i as usize % SOCKETS].send(&packet);
    });
    let batched_us = batched_send_us(&sockets, &packet);
    drop((sockets, socket, sink));

    let unread = UdpSocket::bind("127.0.0.1:0").expect("unread sink");
    let socket = sender_to(&unread);
    let unread_us = us_per_round(PACKETS, |_| {
        let _ = socket.send(&packet);
    });
    PacketBaseline {
        dave: dave_us,
        transport: transport_us,
        send: send_us,
        send_unread: unread_us,
        send_many_sockets: send_many_us,
        send_batched: batched_us,
    }
}

/// `packet` sent round-robin over `sockets`, [`BATCH`] sends per io_uring submission.
fn batched_send_us(sockets: &[UdpSocket], packet: &[u8]) -> f64 {
    use std::os::fd::AsRawFd;
    let mut ring = io_uring::IoUring::new(BATCH as u32 * 2).expect("io_uring");
    let mut next = 0usize;
    let batches = PACKETS / BATCH as u32;
    us_per_round(batches, |_| {
        {
            let mut queue = ring.submission();
            for _ in 0..BATCH {
                let fd = io_uring::types::Fd(sockets[next % sockets.len()].as_raw_fd());
                next += 1;
                let send = io_uring::opcode::Send::new(fd, packet.as_ptr(), packet.len() as u32).build();
                // SAFETY: the socket and the packet outlive the submission, which is
                // waited for before this closure returns.
                unsafe { queue.push(&send).expect("room in the queue") };
            }
        }
        ring.submit_and_wait(BATCH).expect("submit");
        ring.completion().for_each(drop);
    }) / BATCH as f64
}
