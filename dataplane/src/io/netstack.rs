//! Just enough Ethernet / VLAN / IPv4 / IPv6 / UDP for kernel-bypass backends: find the
//! Beeline datagram inside a received frame, and write the headers in front of a datagram
//! to send.
//!
//! [`parse`] reads untrusted bytes and never panics: every length is checked before it is
//! used. [`write_headers`] fills the headroom in front of a datagram and computes the IPv4
//! header checksum and the UDP checksum (mandatory over IPv6, and always sent over IPv4 so
//! receivers with checksum checks accept the packet). Receive does not verify the UDP
//! checksum: a kernel sender on veth hands over packets with a partial (offloaded)
//! checksum, and every Beeline datagram carries a keyed MAC that the node verifies anyway.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::ops::Range;

pub const ETHERNET_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
/// Longest header stack written: Ethernet + VLAN + IPv6 + UDP.
pub const HEADERS_MAX: usize = ETHERNET_LEN + VLAN_LEN + IPV6_LEN + UDP_LEN;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88A8;
const IP_PROTOCOL_UDP: u8 = 17;
const TTL: u8 = 64;

pub type MacAddr = [u8; 6];

/// One 802.1Q / 802.1ad tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vlan {
    /// The tag's EtherType (0x8100 or 0x88A8).
    pub tpid: u16,
    /// Priority, DEI and VLAN id.
    pub tci: u16,
}

/// Why a frame is not a UDP datagram this backend can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its headers say.
    Truncated,
    /// Neither IPv4 nor IPv6 (after at most one VLAN tag).
    NotIp,
    /// IP, but not UDP (or IPv6 with extension headers before UDP).
    NotUdp,
    /// An IPv4 fragment: Beeline datagrams are never fragmented.
    Fragment,
    /// Header fields that contradict each other or the frame's length.
    BadLength,
}

/// A received UDP datagram: where it is in the frame and who sent it to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<Vlan>,
    /// The sender (the peer).
    pub src: SocketAddr,
    /// The address it was sent to (this node).
    pub dst: SocketAddr,
    /// The UDP payload's bytes within the parsed slice.
    pub payload: Range<usize>,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn mac(bytes: &[u8], at: usize) -> Option<MacAddr> {
    bytes.get(at..at + 6)?.try_into().ok()
}

/// Parses an Ethernet frame (at most one VLAN tag) carrying IPv4 or IPv6 and UDP.
pub fn parse(frame: &[u8]) -> Result<Datagram, ParseError> {
    use ParseError::*;
    let dst_mac = mac(frame, 0).ok_or(Truncated)?;
    let src_mac = mac(frame, 6).ok_or(Truncated)?;
    let mut ethertype = be16(frame, 12).ok_or(Truncated)?;
    let mut l3 = ETHERNET_LEN;
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        let tci = be16(frame, 14).ok_or(Truncated)?;
        vlan = Some(Vlan { tpid: ethertype, tci });
        ethertype = be16(frame, 16).ok_or(Truncated)?;
        l3 += VLAN_LEN;
    }
    let ip = frame.get(l3..).ok_or(Truncated)?;
    let (src_ip, dst_ip, udp_start, ip_end) = match ethertype {
        ETHERTYPE_IPV4 => {
            let header = ip.get(..IPV4_LEN).ok_or(Truncated)?;
            if header[0] >> 4 != 4 {
                return Err(NotIp);
            }
            let ihl = usize::from(header[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
            if ihl < IPV4_LEN || total < ihl {
                return Err(BadLength);
            }
            if header[9] != IP_PROTOCOL_UDP {
                return Err(NotUdp);
            }
            // More-fragments flag or a fragment offset.
            if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
                return Err(Fragment);
            }
            if total > ip.len() {
                return Err(Truncated);
            }
            let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
            let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), ihl, total)
        }
        ETHERTYPE_IPV6 => {
            let header = ip.get(..IPV6_LEN).ok_or(Truncated)?;
            if header[0] >> 4 != 6 {
                return Err(NotIp);
            }
            if header[6] != IP_PROTOCOL_UDP {
                return Err(NotUdp);
            }
            let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if IPV6_LEN + payload > ip.len() {
                return Err(Truncated);
            }
            let mut src = [0u8; 16];
            src.copy_from_slice(&header[8..24]);
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&header[24..40]);
            (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)), IPV6_LEN, IPV6_LEN + payload)
        }
        _ => return Err(NotIp),
    };
    let udp = ip.get(udp_start..ip_end).ok_or(BadLength)?;
    let header = udp.get(..UDP_LEN).ok_or(BadLength)?;
    let src_port = u16::from_be_bytes([header[0], header[1]]);
    let dst_port = u16::from_be_bytes([header[2], header[3]]);
    let udp_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if udp_len < UDP_LEN || udp_len > udp.len() {
        return Err(BadLength);
    }
    let payload_start = l3 + udp_start + UDP_LEN;
    Ok(Datagram {
        src_mac,
        dst_mac,
        vlan,
        src: SocketAddr::new(src_ip, src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        payload: payload_start..payload_start + (udp_len - UDP_LEN),
    })
}

/// Everything needed to address a reply: learned from a datagram the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<Vlan>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl Route {
    /// The route back to the sender of `datagram`.
    pub fn reply_to(datagram: &Datagram) -> Route {
        Route {
            src_mac: datagram.dst_mac,
            dst_mac: datagram.src_mac,
            vlan: datagram.vlan,
            src: datagram.dst,
            dst: datagram.src,
        }
    }

    /// Bytes of headers [`write_headers`] puts in front of the payload; `None` when the
    /// two ends are of different IP families (no route).
    pub fn header_len(&self) -> Option<usize> {
        let ip = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_LEN,
            (IpAddr::V6(_), IpAddr::V6(_)) => IPV6_LEN,
            _ => return None,
        };
        Some(ETHERNET_LEN + if self.vlan.is_some() { VLAN_LEN } else { 0 } + ip + UDP_LEN)
    }
}

/// Why headers could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// The route's two ends are of different IP families.
    FamilyMismatch,
    /// The buffer is shorter than headers plus payload, or the datagram is too long for IP.
    TooLong,
}

/// Writes Ethernet (+ VLAN) + IP + UDP headers at the start of `packet`, whose bytes after
/// the headers (`route.header_len()`) are the payload; returns the header length.
/// `ip_id` is the IPv4 identification (unused for IPv6).
pub fn write_headers(route: &Route, ip_id: u16, packet: &mut [u8]) -> Result<usize, BuildError> {
    let header_len = route.header_len().ok_or(BuildError::FamilyMismatch)?;
    let payload_len = packet.len().checked_sub(header_len).ok_or(BuildError::TooLong)?;
    let udp_len = UDP_LEN + payload_len;
    let udp_len16 = u16::try_from(udp_len).map_err(|_| BuildError::TooLong)?;

    packet[0..6].copy_from_slice(&route.dst_mac);
    packet[6..12].copy_from_slice(&route.src_mac);
    let mut at = 12;
    if let Some(vlan) = route.vlan {
        packet[12..14].copy_from_slice(&vlan.tpid.to_be_bytes());
        packet[14..16].copy_from_slice(&vlan.tci.to_be_bytes());
        at = 16;
    }
    let (pseudo, udp_at) = match (route.src.ip(), route.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            packet[at..at + 2].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let ip_at = at + 2;
            let total = u16::try_from(IPV4_LEN + udp_len).map_err(|_| BuildError::TooLong)?;
            let ip = &mut packet[ip_at..ip_at + IPV4_LEN];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
            ip[8] = TTL;
            ip[9] = IP_PROTOCOL_UDP;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let sum = !fold(sum_bytes(0, ip));
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let mut pseudo = sum_bytes(0, &src.octets());
            pseudo = add(pseudo, sum_bytes(0, &dst.octets()));
            pseudo = add(pseudo, u64::from(IP_PROTOCOL_UDP) + u64::from(udp_len16));
            (pseudo, ip_at + IPV4_LEN)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            packet[at..at + 2].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let ip_at = at + 2;
            let ip = &mut packet[ip_at..ip_at + IPV6_LEN];
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            ip[4..6].copy_from_slice(&udp_len16.to_be_bytes());
            ip[6] = IP_PROTOCOL_UDP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            let mut pseudo = sum_bytes(0, &src.octets());
            pseudo = add(pseudo, sum_bytes(0, &dst.octets()));
            pseudo = add(pseudo, u64::from(IP_PROTOCOL_UDP) + udp_len as u64);
            (pseudo, ip_at + IPV6_LEN)
        }
        _ => return Err(BuildError::FamilyMismatch),
    };
    debug_assert_eq!(udp_at + UDP_LEN, header_len);
    let udp = &mut packet[udp_at..];
    udp[0..2].copy_from_slice(&route.src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&route.dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len16.to_be_bytes());
    udp[6..8].fill(0);
    let mut checksum = !fold(sum_bytes(pseudo, udp));
    // An all-zero UDP checksum means "none": a computed zero is sent as all ones.
    if checksum == 0 {
        checksum = 0xffff;
    }
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    Ok(header_len)
}

/// One's-complement addition of two partial sums.
fn add(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u64::from(carry)
}

/// Adds `bytes` (as big-endian 16-bit words, an odd last byte padded with zero) to the
/// partial sum `sum`, eight bytes at a time.
pub fn sum_bytes(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        sum = add(sum, u64::from_be_bytes(word));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    add(sum, u64::from_be_bytes(tail))
}

/// Folds a partial sum to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether the IPv4 header checksum and the UDP checksum of `frame` verify (tests and
/// diagnostics; the receive path relies on the Beeline MAC instead).
pub fn checksums_ok(frame: &[u8]) -> bool {
    let Ok(datagram) = parse(frame) else { return false };
    let udp_end = datagram.payload.end;
    let udp_start = datagram.payload.start - UDP_LEN;
    let Some(udp) = frame.get(udp_start..udp_end) else { return false };
    let pseudo = match (datagram.src.ip(), datagram.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let ip = &frame[udp_start - IPV4_LEN..udp_start];
            if fold(sum_bytes(0, ip)) != 0xffff {
                return false;
            }
            add(add(sum_bytes(0, &src.octets()), sum_bytes(0, &dst.octets())), 17 + udp.len() as u64)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            add(add(sum_bytes(0, &src.octets()), sum_bytes(0, &dst.octets())), 17 + udp.len() as u64)
        }
        _ => return false,
    };
    fold(sum_bytes(pseudo, udp)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// RFC 1071, sixteen bits at a time: the reference for the eight-byte version.
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn route(v6: bool, vlan: bool) -> Route {
        let (src, dst): (SocketAddr, SocketAddr) = if v6 {
            ("[fd00::1]:7777".parse().unwrap(), "[fd00::2]:40000".parse().unwrap())
        } else {
            ("10.9.0.1:7777".parse().unwrap(), "10.9.0.2:40000".parse().unwrap())
        };
        Route {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            vlan: vlan.then_some(Vlan { tpid: ETHERTYPE_VLAN, tci: 42 }),
            src,
            dst,
        }
    }

    proptest! {
        #[test]
        fn eight_byte_sum_matches_rfc1071(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let fast = fold(sum_bytes(0, &bytes));
            let reference = reference_sum(&bytes);
            // 0x0000 and 0xffff are the same number in one's complement.
            prop_assert!(fast == reference || (fast == 0xffff && reference == 0) || (fast == 0 && reference == 0xffff));
        }

        #[test]
        fn built_frames_parse_back_with_valid_checksums(
            payload in proptest::collection::vec(any::<u8>(), 0..2000), v6: bool, vlan: bool, id: u16,
        ) {
            let route = route(v6, vlan);
            let header_len = route.header_len().unwrap();
            let mut frame = std::vec![0u8; header_len + payload.len()];
            frame[header_len..].copy_from_slice(&payload);
            prop_assert_eq!(write_headers(&route, id, &mut frame).unwrap(), header_len);
            prop_assert!(checksums_ok(&frame));
            let parsed = parse(&frame).unwrap();
            prop_assert_eq!(&frame[parsed.payload.clone()], &payload[..]);
            prop_assert_eq!(parsed.src, route.src);
            prop_assert_eq!(parsed.dst, route.dst);
            prop_assert_eq!(parsed.vlan, route.vlan);
            // The reply route swaps the ends back.
            let back = Route::reply_to(&parsed);
            prop_assert_eq!(back.dst, route.src);
            prop_assert_eq!(back.dst_mac, route.src_mac);
            // A flipped payload bit breaks the UDP checksum.
            if !payload.is_empty() {
                frame[header_len] ^= 1;
                prop_assert!(!checksums_ok(&frame));
            }
        }

        #[test]
        fn any_bytes_parse_or_reject_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(datagram) = parse(&bytes) {
                prop_assert!(datagram.payload.end <= bytes.len());
            }
        }

        #[test]
        fn truncating_a_valid_frame_never_panics(cut in 0usize..120, v6: bool, vlan: bool) {
            let route = route(v6, vlan);
            let header_len = route.header_len().unwrap();
            let mut frame = std::vec![7u8; header_len + 64];
            write_headers(&route, 1, &mut frame).unwrap();
            let cut = cut.min(frame.len());
            let result = parse(&frame[..frame.len() - cut]);
            prop_assert_eq!(result.is_ok(), cut == 0);
        }
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The example header of RFC 1071's errata / Wikipedia: checksum 0xb861.
        let header: Vec<u8> = [
            0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0,
            0xa8, 0x00, 0xc7,
        ]
        .to_vec();
        assert_eq!(!fold(sum_bytes(0, &header)), 0xb861);
    }

    #[test]
    fn rejects_what_is_not_a_plain_udp_datagram() {
        let route = route(false, false);
        let mut frame = std::vec![0u8; route.header_len().unwrap() + 10];
        write_headers(&route, 1, &mut frame).unwrap();
        let mut fragment = frame.clone();
        fragment[ETHERNET_LEN + 6] |= 0x20; // more fragments
        assert_eq!(parse(&fragment), Err(ParseError::Fragment));
        let mut tcp = frame.clone();
        tcp[ETHERNET_LEN + 9] = 6;
        assert_eq!(parse(&tcp), Err(ParseError::NotUdp));
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&arp), Err(ParseError::NotIp));
        let mut long_udp = frame.clone();
        let udp_len_at = ETHERNET_LEN + IPV4_LEN + 4;
        long_udp[udp_len_at..udp_len_at + 2].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(parse(&long_udp), Err(ParseError::BadLength));
        // Trailing Ethernet padding after the IP packet is ignored.
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(parse(&padded).unwrap().payload, parse(&frame).unwrap().payload);
        let mismatched = Route { dst: "[::1]:1".parse().unwrap(), ..route };
        assert_eq!(mismatched.header_len(), None);
        assert_eq!(write_headers(&mismatched, 0, &mut frame), Err(BuildError::FamilyMismatch));
    }
}
