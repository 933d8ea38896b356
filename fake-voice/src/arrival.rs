//! When a packet reached the listener's socket. The kernel stamps each datagram as it is
//! queued (`SO_TIMESTAMPNS`); the listener uses that stamp rather than the moment its thread
//! read the packet, so a listener that is busy (many senders, a shared CPU) does not make the
//! sender look late. Linux only, like the server.

use std::io;
use std::mem::{size_of, size_of_val};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Asks the kernel to stamp every datagram `socket` receives; without it arrivals are the
/// moment of reading.
pub fn enable_timestamps(socket: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to an int of the length given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Receives one datagram from an IPv4 sender: its length, sender and arrival.
pub fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Instant)> {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // u64s keep the control buffer aligned for the cmsg headers.
    let mut control = [0u64; 8];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points at live buffers of the lengths it states.
    let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let read_at = Instant::now();
    let mut arrival = read_at;
    // SAFETY: the kernel filled `control` up to `msg_controllen`; the CMSG macros walk it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let stamp: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let queued = UNIX_EPOCH + Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32);
                if let Ok(waited) = SystemTime::now().duration_since(queued) {
                    arrival = read_at.checked_sub(waited).unwrap_or(read_at);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let ip = Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
    Ok((len as usize, SocketAddr::from((ip, u16::from_be(from.sin_port))), arrival))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel switches receive timestamps on system-wide a moment after the first socket
    /// asks (from a work queue); until then a packet is stamped when it is read. Waits until a
    /// probe comes back stamped before it was read.
    fn wait_until_stamped_on_arrival(listener: &UdpSocket, sender: &UdpSocket) {
        let mut buf = [0u8; 64];
        for _ in 0..200 {
            sender.send_to(b"probe", listener.local_addr().expect("addr")).expect("send");
            std::thread::sleep(Duration::from_millis(2));
            let (_, _, arrival) = recv_from(listener, &mut buf).expect("receive");
            if Instant::now().duration_since(arrival) >= Duration::from_millis(1) {
                return;
            }
        }
        panic!("the kernel never stamped a packet on arrival");
    }

    #[test]
    fn a_packet_read_late_keeps_the_time_it_arrived() {
        let listener = UdpSocket::bind("127.0.0.1:0").expect("bind");
        enable_timestamps(&listener);
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        wait_until_stamped_on_arrival(&listener, &sender);
        let sent = Instant::now();
        sender.send_to(b"frame", listener.local_addr().expect("addr")).expect("send");
        // The listener is busy elsewhere for a while before it reads.
        std::thread::sleep(Duration::from_millis(60));
        let mut buf = [0u8; 64];
        let (len, from, arrival) = recv_from(&listener, &mut buf).expect("receive");
        let read = Instant::now();
        assert_eq!((&buf[..len], from), (&b"frame"[..], sender.local_addr().expect("addr")));
        let (queued, waited) = (arrival.duration_since(sent), read.duration_since(arrival));
        assert!(waited >= Duration::from_millis(50), "arrived {queued:?} after sending, read {waited:?} later");
        assert!(queued < waited, "arrived {queued:?} after sending, read {waited:?} later");
    }
}
