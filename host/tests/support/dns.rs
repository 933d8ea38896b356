//! A real DNS server on a loopback UDP port whose answers a test scripts per name: each
//! query for a name takes the next answer, and the last one repeats. With TTL 0 nothing
//! caches, so a name can be re-pointed between two lookups (DNS rebinding).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata};

#[derive(Default)]
struct Script {
    answers: HashMap<String, Vec<IpAddr>>,
    asked: HashMap<String, usize>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl DnsServer {
    pub async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind dns server");
        let addr = socket.local_addr().expect("dns addr");
        let script = Arc::new(Mutex::new(Script::default()));
        let answering = script.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let reply = answer(&query, &answering);
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, script }
    }

    /// Answers `name` with `ips` in turn (the last one from then on).
    pub fn point(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|ip| ip.parse().expect("an address")).collect();
        self.script.lock().expect("dns script").answers.insert(name.trim_end_matches('.').to_string(), ips);
    }

    /// How many A queries asked for `name`.
    pub fn asked(&self, name: &str) -> usize {
        self.script.lock().expect("dns script").asked.get(name).copied().unwrap_or(0)
    }
}

fn answer(query: &Message, script: &Mutex<Script>) -> Message {
    let mut reply = Message::new();
    reply.set_id(query.id()).set_message_type(MessageType::Response).set_recursion_available(true);
    reply.add_queries(query.queries().to_vec());
    let Some(question) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply;
    };
    let name = question.name().to_ascii().trim_end_matches('.').to_string();
    let mut script = script.lock().expect("dns script");
    let Some(ips) = script.answers.get(&name).cloned() else {
        reply.set_response_code(ResponseCode::NXDomain);
        return reply;
    };
    // Count and advance on A queries only, so an AAAA query beside it does not skip an answer.
    let asked = script.asked.entry(name).or_insert(0);
    let ip = ips[(*asked).min(ips.len() - 1)];
    if question.query_type() == RecordType::A {
        *asked += 1;
    }
    let data = match (question.query_type(), ip) {
        (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(rdata::A(v4))),
        (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(rdata::AAAA(v6))),
        _ => None,
    };
    if let Some(data) = data {
        reply.add_answer(Record::from_rdata(question.name().clone(), 0, data));
    }
    reply
}
