//! Which IP addresses a URL from a stranger may reach: globally routable unicast only.
//! IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4) are judged by that address;
//! every other IPv6 address outside global unicast is refused, so a new special range does
//! not slip through a list of known bad ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not reachable for media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    Unspecified,
    Broadcast,
    Multicast,
    Documentation,
    Benchmarking,
    Reserved,
}

impl Forbidden {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private network",
            Self::LinkLocal => "link-local",
            Self::SharedCgnat => "carrier-grade NAT",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::Multicast => "multicast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Reserved => "reserved",
        }
    }
}

/// `None` when `ip` is a public address; otherwise what kind of address it is.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, ..) => Forbidden::Unspecified,
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => Forbidden::Private,
        (100, 64..=127, _) => Forbidden::SharedCgnat,
        (127, ..) => Forbidden::Loopback,
        (169, 254, _) => Forbidden::LinkLocal,
        // IETF protocol assignments and the retired 6to4 relay anycast.
        (192, 0, 0) | (192, 88, 99) => Forbidden::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Forbidden::Documentation,
        (198, 18..=19, _) => Forbidden::Benchmarking,
        (224..=239, ..) => Forbidden::Multicast,
        (255, 255, 255) if ip.is_broadcast() => Forbidden::Broadcast,
        (240..=255, ..) => Forbidden::Reserved,
        _ => return None,
    };
    Some(kind)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some(Forbidden::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Forbidden::Loopback);
    }
    // ::ffff:a.b.c.d (mapped), 64:ff9b::a.b.c.d (well-known NAT64 prefix).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded_v4(s[6], s[7]));
    }
    // 2002:wwxx:yyzz::/48 routes to the IPv4 address wwxx:yyzz (6to4).
    if s[0] == 0x2002 {
        return forbidden_v4(embedded_v4(s[1], s[2]));
    }
    let kind = match s[0] {
        0xff00..=0xffff => Forbidden::Multicast,
        0xfe80..=0xfebf => Forbidden::LinkLocal,
        // Unique local (fc00::/7) and the retired site-local (fec0::/10).
        0xfc00..=0xfdff | 0xfec0..=0xfeff => Forbidden::Private,
        // 2001::/23: IETF protocol assignments (Teredo, benchmarking, ORCHID, …).
        0x2001 if s[1] < 0x0200 => Forbidden::Reserved,
        0x2001 if s[1] == 0x0db8 => Forbidden::Documentation,
        0x3fff if s[1] < 0x1000 => Forbidden::Documentation,
        // Global unicast is 2000::/3; everything else (IPv4-compatible ::/96, discard
        // 100::/64, the local NAT64 64:ff9b:1::/48, …) is not a public host.
        0x2000..=0x3fff => return None,
        _ => Forbidden::Reserved,
    };
    Some(kind)
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<Forbidden> {
        forbidden(ip.parse().expect("an address"))
    }

    #[test]
    fn refuses_every_form_of_a_non_public_address() {
        use Forbidden::*;
        for (ip, expected) in [
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("255.255.255.255", Broadcast),
            ("224.0.0.1", Multicast),
            ("240.0.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("192.0.2.1", Documentation),
            ("198.18.0.1", Benchmarking),
            ("::1", Loopback),
            ("::", Unspecified),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b:1::1", Reserved),
            ("2002:7f00:1::", Loopback),
            ("2002:c0a8:101::1", Private),
            ("::127.0.0.1", Reserved),
            ("100::1", Reserved),
            ("2001::1", Reserved),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("fe80::1", LinkLocal),
            ("ff02::1", Multicast),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn lets_public_addresses_through() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }
}
