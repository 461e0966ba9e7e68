//! Ethernet / VLAN / IPv4 / IPv6 / UDP for kernel-bypass backends: find the Beeline
//! datagram inside a received frame, and write the headers in front of a datagram to send.
//!
//! The header layouts and checksums are smoltcp's `wire` views; untrusted bytes only ever
//! reach them through `new_checked`, so no accessor can index past the frame and [`parse`]
//! never panics. [`write_headers`] fills the headroom in front of a datagram and computes
//! the IPv4 header checksum and the UDP checksum (mandatory over IPv6, and always sent over
//! IPv4 so receivers with checksum checks accept the packet). Receive does not verify the
//! UDP checksum: a kernel sender on veth hands over packets with a partial (offloaded)
//! checksum, and every Beeline datagram carries a keyed MAC that the node verifies anyway.

use core::net::{IpAddr, SocketAddr};
use core::ops::Range;

use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket,
};

pub const ETHERNET_LEN: usize = smoltcp::wire::ETHERNET_HEADER_LEN;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = smoltcp::wire::IPV4_HEADER_LEN;
pub const IPV6_LEN: usize = smoltcp::wire::IPV6_HEADER_LEN;
pub const UDP_LEN: usize = smoltcp::wire::UDP_HEADER_LEN;
/// Longest header stack written: Ethernet + VLAN + IPv6 + UDP.
pub const HEADERS_MAX: usize = ETHERNET_LEN + VLAN_LEN + IPV6_LEN + UDP_LEN;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88A8;
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

/// Splits one 802.1Q / 802.1ad tag off the front of an Ethernet payload: the tag, the
/// inner EtherType and the bytes after it. Hand-written because smoltcp's `wire` has no
/// VLAN support (its EthernetFrame sees 0x8100 as an unknown EtherType).
fn split_vlan(tpid: u16, payload: &[u8]) -> Option<(Vlan, u16, &[u8])> {
    let (tag, rest) = payload.split_first_chunk::<VLAN_LEN>()?;
    let tci = u16::from_be_bytes([tag[0], tag[1]]);
    Some((Vlan { tpid, tci }, u16::from_be_bytes([tag[2], tag[3]]), rest))
}

/// Where the UDP header starts within an IP packet, the IP packet's end, and both ends.
struct IpSpan {
    udp_at: usize,
    end: usize,
    src: IpAddr,
    dst: IpAddr,
}

fn parse_ipv4(ip: &[u8]) -> Result<IpSpan, ParseError> {
    let packet = Ipv4Packet::new_checked(ip).map_err(|_| ParseError::Truncated)?;
    if packet.version() != 4 {
        return Err(ParseError::NotIp);
    }
    // smoltcp's length check accepts an IHL below five words; IPv4 does not.
    if usize::from(packet.header_len()) < IPV4_LEN {
        return Err(ParseError::BadLength);
    }
    if packet.next_header() != IpProtocol::Udp {
        return Err(ParseError::NotUdp);
    }
    if packet.more_frags() || packet.frag_offset() != 0 {
        return Err(ParseError::Fragment);
    }
    Ok(IpSpan {
        udp_at: usize::from(packet.header_len()),
        end: usize::from(packet.total_len()),
        src: packet.src_addr().into(),
        dst: packet.dst_addr().into(),
    })
}

fn parse_ipv6(ip: &[u8]) -> Result<IpSpan, ParseError> {
    let packet = Ipv6Packet::new_checked(ip).map_err(|_| ParseError::Truncated)?;
    if packet.version() != 6 {
        return Err(ParseError::NotIp);
    }
    if packet.next_header() != IpProtocol::Udp {
        return Err(ParseError::NotUdp);
    }
    Ok(IpSpan {
        udp_at: IPV6_LEN,
        end: packet.total_len(),
        src: packet.src_addr().into(),
        dst: packet.dst_addr().into(),
    })
}

/// Parses an Ethernet frame (at most one VLAN tag) carrying IPv4 or IPv6 and UDP.
pub fn parse(frame: &[u8]) -> Result<Datagram, ParseError> {
    let ethernet = EthernetFrame::new_checked(frame).map_err(|_| ParseError::Truncated)?;
    let mut ethertype = u16::from(ethernet.ethertype());
    let mut l3_at = ETHERNET_LEN;
    let mut ip = ethernet.payload();
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        let (tag, inner, rest) = split_vlan(ethertype, ip).ok_or(ParseError::Truncated)?;
        (vlan, ethertype, ip, l3_at) = (Some(tag), inner, rest, l3_at + VLAN_LEN);
    }
    let span = match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Ipv4 => parse_ipv4(ip)?,
        EthernetProtocol::Ipv6 => parse_ipv6(ip)?,
        _ => return Err(ParseError::NotIp),
    };
    let segment = ip.get(span.udp_at..span.end).ok_or(ParseError::BadLength)?;
    let udp = UdpPacket::new_checked(segment).map_err(|_| ParseError::BadLength)?;
    let payload_at = l3_at + span.udp_at + UDP_LEN;
    Ok(Datagram {
        src_mac: ethernet.src_addr().0,
        dst_mac: ethernet.dst_addr().0,
        vlan,
        src: SocketAddr::new(span.src, udp.src_port()),
        dst: SocketAddr::new(span.dst, udp.dst_port()),
        payload: payload_at..payload_at + udp.payload().len(),
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
    let (ethertype, ip_len) = match route.src.ip() {
        IpAddr::V4(_) => (ETHERTYPE_IPV4, IPV4_LEN),
        IpAddr::V6(_) => (ETHERTYPE_IPV6, IPV6_LEN),
    };
    let total_len = u16::try_from(ip_len + udp_len).map_err(|_| BuildError::TooLong)?;

    // Our own buffer, its length checked above: the unchecked views only ever see it.
    let mut ethernet = EthernetFrame::new_unchecked(&mut *packet);
    ethernet.set_dst_addr(EthernetAddress(route.dst_mac));
    ethernet.set_src_addr(EthernetAddress(route.src_mac));
    let mut l3_at = ETHERNET_LEN;
    match route.vlan {
        Some(vlan) => {
            // smoltcp has no VLAN tag: the TPID goes in the EtherType, the tag after it.
            ethernet.set_ethertype(EthernetProtocol::from(vlan.tpid));
            let tag = &mut packet[ETHERNET_LEN..ETHERNET_LEN + VLAN_LEN];
            tag[..2].copy_from_slice(&vlan.tci.to_be_bytes());
            tag[2..].copy_from_slice(&ethertype.to_be_bytes());
            l3_at += VLAN_LEN;
        }
        None => ethernet.set_ethertype(EthernetProtocol::from(ethertype)),
    }
    let ip = &mut packet[l3_at..];
    let (src, dst) = match (route.src.ip(), route.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            write_ipv4(&mut ip[..IPV4_LEN + udp_len], src, dst, ip_id, total_len);
            (IpAddress::Ipv4(src), IpAddress::Ipv4(dst))
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            write_ipv6(&mut ip[..IPV6_LEN], src, dst, udp_len16);
            (IpAddress::Ipv6(src), IpAddress::Ipv6(dst))
        }
        _ => return Err(BuildError::FamilyMismatch),
    };
    let mut udp = UdpPacket::new_unchecked(&mut ip[ip_len..ip_len + udp_len]);
    udp.set_src_port(route.src.port());
    udp.set_dst_port(route.dst.port());
    udp.set_len(udp_len16);
    // Sends a computed zero as all ones: an all-zero UDP checksum means "none".
    udp.fill_checksum(&src, &dst);
    Ok(header_len)
}

fn write_ipv4(ip: &mut [u8], src: core::net::Ipv4Addr, dst: core::net::Ipv4Addr, ip_id: u16, total_len: u16) {
    let mut packet = Ipv4Packet::new_unchecked(ip);
    packet.set_version(4);
    packet.set_header_len(IPV4_LEN as u8);
    packet.set_dscp(0);
    packet.set_ecn(0);
    packet.set_total_len(total_len);
    packet.set_ident(ip_id);
    packet.clear_flags();
    packet.set_dont_frag(true);
    packet.set_frag_offset(0);
    packet.set_hop_limit(TTL);
    packet.set_next_header(IpProtocol::Udp);
    packet.set_src_addr(src);
    packet.set_dst_addr(dst);
    packet.fill_checksum();
}

fn write_ipv6(ip: &mut [u8], src: core::net::Ipv6Addr, dst: core::net::Ipv6Addr, payload_len: u16) {
    let mut packet = Ipv6Packet::new_unchecked(ip);
    packet.set_version(6);
    packet.set_traffic_class(0);
    packet.set_flow_label(0);
    packet.set_payload_len(payload_len);
    packet.set_next_header(IpProtocol::Udp);
    packet.set_hop_limit(TTL);
    packet.set_src_addr(src);
    packet.set_dst_addr(dst);
}

/// Whether the IPv4 header checksum and the UDP checksum of `frame` verify (tests and
/// diagnostics; the receive path relies on the Beeline MAC instead). An absent (zero) UDP
/// checksum does not verify: Beeline always sends one.
pub fn checksums_ok(frame: &[u8]) -> bool {
    let Ok(datagram) = parse(frame) else { return false };
    let udp_at = datagram.payload.start - UDP_LEN;
    let Some(segment) = frame.get(udp_at..datagram.payload.end) else { return false };
    let Ok(udp) = UdpPacket::new_checked(segment) else { return false };
    let (src, dst) = match (datagram.src.ip(), datagram.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let Some(Ok(ip)) = frame.get(udp_at - IPV4_LEN..).map(Ipv4Packet::new_checked) else { return false };
            if !ip.verify_checksum() {
                return false;
            }
            (IpAddress::Ipv4(src), IpAddress::Ipv4(dst))
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)),
        _ => return false,
    };
    udp.checksum() != 0 && udp.verify_checksum(&src, &dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// RFC 1071, sixteen bits at a time: the reference smoltcp's checksums must agree with.
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
        fn ipv4_header_checksum_matches_rfc1071(bytes in proptest::array::uniform20(any::<u8>())) {
            let mut header = bytes;
            header[0] = 0x45;
            header[2..4].copy_from_slice(&20u16.to_be_bytes());
            Ipv4Packet::new_checked(&mut header[..]).unwrap().fill_checksum();
            // 0x0000 and 0xffff are the same number in one's complement.
            let sum = reference_sum(&header);
            prop_assert!(sum == 0xffff || sum == 0);
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
        let mut header: Vec<u8> = [
            0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0,
            0xa8, 0x00, 0xc7,
        ]
        .to_vec();
        header.resize(0x73, 0);
        let mut packet = Ipv4Packet::new_checked(&mut header[..]).unwrap();
        packet.fill_checksum();
        assert_eq!(packet.checksum(), 0xb861);
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
