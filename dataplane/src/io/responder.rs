//! ARP, ICMP echo, IPv6 neighbour discovery and ICMPv6 echo for a port the kernel no
//! longer sees (DPDK): the node answers who-has for its own IPv4 address, Neighbor
//! Solicitations for its IPv6 link-local address, and pings over both, rewriting the
//! request frame in place into the reply, so none needs a buffer of its own.
//!
//! The bytes are untrusted: they reach smoltcp's `wire` views only through `new_checked`,
//! and every request is validated whole before its frame is written, so [`answer_in_place`]
//! never panics and leaves the frames it does not answer untouched. Only untagged frames
//! are answered (peers reach a DPDK port on its native VLAN).

use core::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet,
    Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use crate::io::netstack::{ETHERNET_LEN, IPV4_LEN, IPV6_LEN, MacAddr};

/// Ethernet + the IPv4-over-Ethernet ARP body.
const ARP_FRAME_LEN: usize = ETHERNET_LEN + 28;
const TTL: u8 = 64;
/// RFC 4861: ND messages are sent, and accepted, only with hop limit 255, which proves
/// they were not forwarded by a router.
const ND_HOP_LIMIT: u8 = 255;
/// A Neighbor Advertisement: ICMPv6 header, flags, target address.
const NA_LEN: usize = 24;
/// A Neighbor Advertisement with its target link-layer address option.
const NA_WITH_OPTION_LEN: usize = NA_LEN + 8;

/// The node's addresses on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    pub ipv6_link_local: Ipv6Addr,
}

impl LocalAddrs {
    /// The port's addresses, its IPv6 link-local one derived from `mac`.
    pub fn new(mac: MacAddr, ipv4: Ipv4Addr) -> Self {
        Self { mac, ipv4, ipv6_link_local: link_local_from_mac(mac) }
    }

    fn owns_ipv6(&self, addr: Ipv6Addr) -> bool {
        addr == self.ipv6_link_local
    }
}

/// fe80::/64 with the modified EUI-64 interface id of `mac` (RFC 4291 appendix A), the
/// address the kernel would give the port. Hand-written: smoltcp's `wire` has no helper
/// for it.
pub fn link_local_from_mac(mac: MacAddr) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, a ^ 0x02, b, c, 0xff, 0xfe, d, e, f])
}

/// ff02::1:ffXX:XXXX, where Neighbor Solicitations for `addr` are multicast (RFC 4291
/// 2.7.1). Hand-written: smoltcp keeps its own helper crate-private.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

/// 33:33 and the low 32 bits of a multicast IPv6 address (RFC 2464 section 7).
fn multicast_mac(addr: Ipv6Addr) -> MacAddr {
    let o = addr.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// What [`answer_in_place`] made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The frame now holds an ARP reply: send its first `len` bytes back.
    ArpReply { len: usize },
    /// The frame now holds an ICMP echo reply: send its first `len` bytes back.
    EchoReply { len: usize },
    /// The frame now holds an IPv6 Neighbor Advertisement: send its first `len` bytes back.
    NeighborAdvert { len: usize },
    /// The frame now holds an ICMPv6 echo reply: send its first `len` bytes back.
    Echo6Reply { len: usize },
    /// Not an ARP request, Neighbor Solicitation or ping for this node; the frame is
    /// unchanged.
    NotMine,
}

/// Turns an ARP request for the node's IPv4 address, a Neighbor Solicitation for its IPv6
/// address, or a ping to either into its reply, in place.
pub fn answer_in_place(frame: &mut [u8], local: &LocalAddrs) -> Answer {
    let Ok(ethernet) = EthernetFrame::new_checked(&*frame) else { return Answer::NotMine };
    let answer = match ethernet.ethertype() {
        EthernetProtocol::Arp => answer_arp(frame, local).map(|len| Answer::ArpReply { len }),
        EthernetProtocol::Ipv4 => answer_echo(frame, local).map(|len| Answer::EchoReply { len }),
        EthernetProtocol::Ipv6 => answer_ipv6(frame, local),
        _ => None,
    };
    answer.unwrap_or(Answer::NotMine)
}

/// Writes the reply's Ethernet addresses: back to `peer`, from the node.
fn address_ethernet(frame: &mut [u8], peer: EthernetAddress, local: &LocalAddrs) -> Option<()> {
    let mut ethernet = EthernetFrame::new_checked(frame).ok()?;
    ethernet.set_dst_addr(peer);
    ethernet.set_src_addr(EthernetAddress(local.mac));
    Some(())
}

fn answer_arp(frame: &mut [u8], local: &LocalAddrs) -> Option<usize> {
    let ethernet = EthernetFrame::new_checked(&*frame).ok()?;
    let arp = ArpPacket::new_checked(ethernet.payload()).ok()?;
    // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses, a request for our address.
    let ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: peer_mac,
        source_protocol_addr: peer_ip,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&arp).ok()?
    else {
        return None;
    };
    if target_protocol_addr != local.ipv4 {
        return None;
    }
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(local.mac),
        source_protocol_addr: local.ipv4,
        target_hardware_addr: peer_mac,
        target_protocol_addr: peer_ip,
    };
    let frame = frame.get_mut(..ARP_FRAME_LEN)?;
    address_ethernet(frame, peer_mac, local)?;
    let mut ethernet = EthernetFrame::new_checked(frame).ok()?;
    reply.emit(&mut ArpPacket::new_checked(ethernet.payload_mut()).ok()?);
    Some(ARP_FRAME_LEN)
}

/// The sender of an ICMP echo request to the node, and the request's IPv4 length.
fn echo_request(frame: &[u8], local: &LocalAddrs) -> Option<(EthernetAddress, Ipv4Addr, usize)> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if ethernet.dst_addr().0 != local.mac {
        return None;
    }
    let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
    let fragmented = ip.more_frags() || ip.frag_offset() != 0;
    if ip.version() != 4
        || usize::from(ip.header_len()) < IPV4_LEN
        || fragmented
        || ip.next_header() != IpProtocol::Icmp
        || ip.dst_addr() != local.ipv4
    {
        return None;
    }
    let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
    if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
        return None;
    }
    Some((ethernet.src_addr(), ip.src_addr(), usize::from(ip.total_len())))
}

fn answer_echo(frame: &mut [u8], local: &LocalAddrs) -> Option<usize> {
    let (peer_mac, peer_ip, ip_len) = echo_request(frame, local)?;
    let frame = frame.get_mut(..ETHERNET_LEN + ip_len)?;
    // The reply goes back the way the request came, addresses swapped.
    address_ethernet(frame, peer_mac, local)?;
    let mut ethernet = EthernetFrame::new_checked(frame).ok()?;
    let mut ip = Ipv4Packet::new_checked(ethernet.payload_mut()).ok()?;
    ip.set_src_addr(local.ipv4);
    ip.set_dst_addr(peer_ip);
    ip.set_hop_limit(TTL);
    ip.fill_checksum();
    let mut icmp = Icmpv4Packet::new_checked(ip.payload_mut()).ok()?;
    icmp.set_msg_type(Icmpv4Message::EchoReply);
    icmp.fill_checksum();
    Some(ETHERNET_LEN + ip_len)
}

/// An ICMPv6 request the node answers, validated and read out of its frame.
#[derive(Debug, Clone, Copy)]
enum Icmpv6Request {
    /// A Neighbor Solicitation for `target`; `with_option` when the frame has room for
    /// the target link-layer address option.
    Solicit {
        peer_mac: EthernetAddress,
        peer_ip: Ipv6Addr,
        target: Ipv6Addr,
        with_option: bool,
    },
    Echo {
        peer_mac: EthernetAddress,
        peer_ip: Ipv6Addr,
        local_ip: Ipv6Addr,
    },
}

fn icmpv6_request(frame: &[u8], local: &LocalAddrs) -> Option<Icmpv6Request> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv6Packet::new_checked(ethernet.payload()).ok()?;
    // Extension headers before ICMPv6 are not followed: ND and ping never carry them here.
    if ip.version() != 6 || ip.next_header() != IpProtocol::Icmpv6 {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    if icmp.msg_code() != 0 || !icmp.verify_checksum(&src, &dst) {
        return None;
    }
    let peer_mac = ethernet.src_addr();
    match icmp.msg_type() {
        Icmpv6Message::EchoRequest => {
            let unicast_to_us = ethernet.dst_addr().0 == local.mac && local.owns_ipv6(dst);
            unicast_to_us.then_some(Icmpv6Request::Echo { peer_mac, peer_ip: src, local_ip: dst })
        }
        Icmpv6Message::NeighborSolicit => solicitation(&ethernet, &ip, &icmp, local),
        _ => None,
    }
}

fn solicitation(
    ethernet: &EthernetFrame<&[u8]>,
    ip: &Ipv6Packet<&[u8]>,
    icmp: &Icmpv6Packet<&[u8]>,
    local: &LocalAddrs,
) -> Option<Icmpv6Request> {
    if ip.hop_limit() != ND_HOP_LIMIT {
        return None;
    }
    let NdiscRepr::NeighborSolicit { target_addr: target, lladdr } = NdiscRepr::parse(icmp).ok()? else {
        return None;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let dst_mac = ethernet.dst_addr().0;
    let multicast = dst == solicited_node(target) && dst_mac == multicast_mac(dst);
    let unicast = dst == target && dst_mac == local.mac;
    // A duplicate address detection probe comes from ::. Its answer would go to all nodes
    // and must carry our link-layer address, for which its 24-byte frame has no room in
    // place; DAD is the prober's concern, the node's own address comes from its MAC.
    if !local.owns_ipv6(target) || !(multicast || unicast) || src.is_unspecified() {
        return None;
    }
    let peer_mac = match lladdr {
        Some(lladdr) => EthernetAddress(lladdr.as_bytes().try_into().ok()?),
        None => ethernet.src_addr(),
    };
    let with_option = ip.payload().len() >= NA_WITH_OPTION_LEN;
    // RFC 4861 7.2.4: the answer to a multicast solicitation carries the option.
    if multicast && !with_option {
        return None;
    }
    Some(Icmpv6Request::Solicit { peer_mac, peer_ip: src, target, with_option })
}

fn answer_ipv6(frame: &mut [u8], local: &LocalAddrs) -> Option<Answer> {
    match icmpv6_request(frame, local)? {
        Icmpv6Request::Solicit { peer_mac, peer_ip, target, with_option } => {
            let len = write_advert(frame, local, peer_mac, peer_ip, target, with_option)?;
            Some(Answer::NeighborAdvert { len })
        }
        Icmpv6Request::Echo { peer_mac, peer_ip, local_ip } => {
            let len = write_echo6_reply(frame, local, peer_mac, peer_ip, local_ip)?;
            Some(Answer::Echo6Reply { len })
        }
    }
}

/// Rewrites the IPv6 header for a reply from `src` to `dst` whose ICMPv6 body is
/// `icmp_len` bytes long, and returns the ICMPv6 view of that body.
fn reply_ipv6(
    frame: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp_len: usize,
) -> Option<Icmpv6Packet<&mut [u8]>> {
    let ip = frame.get_mut(ETHERNET_LEN..ETHERNET_LEN + IPV6_LEN + icmp_len)?;
    let (header, body) = ip.split_at_mut(IPV6_LEN);
    // Exactly the fixed 40-byte header, whose setters touch only fixed fields: the
    // unchecked view cannot index past it. `new_checked` would hold the request's payload
    // length (longer than the reply's) against this slice, and that is what gets rewritten.
    let mut header = Ipv6Packet::new_unchecked(header);
    header.set_payload_len(u16::try_from(icmp_len).ok()?);
    header.set_src_addr(src);
    header.set_dst_addr(dst);
    header.set_hop_limit(hop_limit);
    Icmpv6Packet::new_checked(body).ok()
}

fn write_advert(
    frame: &mut [u8],
    local: &LocalAddrs,
    peer_mac: EthernetAddress,
    peer_ip: Ipv6Addr,
    target: Ipv6Addr,
    with_option: bool,
) -> Option<usize> {
    let icmp_len = if with_option { NA_WITH_OPTION_LEN } else { NA_LEN };
    address_ethernet(frame, peer_mac, local)?;
    let mut icmp = reply_ipv6(frame, target, peer_ip, ND_HOP_LIMIT, icmp_len)?;
    let advert = NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
        target_addr: target,
        lladdr: with_option.then(|| RawHardwareAddress::from(EthernetAddress(local.mac))),
    };
    advert.emit(&mut icmp);
    icmp.fill_checksum(&target, &peer_ip);
    Some(ETHERNET_LEN + IPV6_LEN + icmp_len)
}

fn write_echo6_reply(
    frame: &mut [u8],
    local: &LocalAddrs,
    peer_mac: EthernetAddress,
    peer_ip: Ipv6Addr,
    local_ip: Ipv6Addr,
) -> Option<usize> {
    let icmp_len = {
        let ethernet = EthernetFrame::new_checked(&*frame).ok()?;
        usize::from(Ipv6Packet::new_checked(ethernet.payload()).ok()?.payload_len())
    };
    address_ethernet(frame, peer_mac, local)?;
    let mut icmp = reply_ipv6(frame, local_ip, peer_ip, TTL, icmp_len)?;
    icmp.set_msg_type(Icmpv6Message::EchoReply);
    icmp.fill_checksum(&local_ip, &peer_ip);
    Some(ETHERNET_LEN + IPV6_LEN + icmp_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fuzzing::frames;
    use proptest::prelude::*;
    use std::vec::Vec;

    const MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
    const PEER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x02];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
    const ETHERTYPE_ARP: u16 = 0x0806;
    const ETHERTYPE_IPV4: u16 = 0x0800;
    const ETHERTYPE_IPV6: u16 = 0x86DD;
    const ARP_REPLY: u16 = 2;
    const ICMP_ECHO_REPLY: u8 = 0;

    fn local() -> LocalAddrs {
        LocalAddrs::new(MAC, IP)
    }

    fn be16(frame: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([frame[at], frame[at + 1]])
    }

    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        frames::arp_request(PEER_MAC, PEER_IP, target)
    }

    fn echo_request(payload: &[u8]) -> Vec<u8> {
        frames::echo_request((MAC, IP), (PEER_MAC, PEER_IP), payload)
    }

    fn peer6() -> (MacAddr, Ipv6Addr) {
        (PEER_MAC, link_local_from_mac(PEER_MAC))
    }

    /// A solicitation for `target` to its solicited-node group, as Linux sends it.
    fn solicitation(target: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
        let group = solicited_node(target);
        frames::neighbor_solicitation(multicast_mac(group), group, peer6(), target, hop_limit)
    }

    /// The IPv6 packet and ICMPv6 body of a reply, checksum verified.
    fn icmpv6_reply(frame: &[u8], len: usize) -> (Ipv6Packet<&[u8]>, Icmpv6Packet<&[u8]>) {
        let ip = Ipv6Packet::new_checked(&frame[ETHERNET_LEN..len]).unwrap();
        assert_eq!(ETHERNET_LEN + ip.total_len(), len);
        let icmp = Icmpv6Packet::new_checked(&frame[ETHERNET_LEN + IPV6_LEN..len]).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()), "ICMPv6 checksum");
        (ip, icmp)
    }

    #[test]
    fn arp_request_for_our_address_becomes_a_reply() {
        let mut frame = arp_request(IP);
        assert_eq!(answer_in_place(&mut frame, &local()), Answer::ArpReply { len: 42 });
        assert_eq!(frame[0..6], PEER_MAC);
        assert_eq!(frame[6..12], MAC);
        assert_eq!(be16(&frame, 20), ARP_REPLY);
        assert_eq!(frame[22..28], MAC);
        assert_eq!(frame[28..32], IP.octets());
        assert_eq!(frame[32..38], PEER_MAC);
        assert_eq!(frame[38..42], PEER_IP.octets());
    }

    #[test]
    fn arp_for_another_address_is_left_alone() {
        let mut frame = arp_request(Ipv4Addr::new(10, 78, 0, 9));
        let before = frame.clone();
        assert_eq!(answer_in_place(&mut frame, &local()), Answer::NotMine);
        assert_eq!(frame, before);
    }

    #[test]
    fn ping_becomes_a_reply_with_valid_checksums() {
        let mut frame = echo_request(b"beeline ping payload!");
        let len = frame.len();
        assert_eq!(answer_in_place(&mut frame, &local()), Answer::EchoReply { len });
        assert_eq!(frame[0..6], PEER_MAC);
        assert_eq!(frame[26..30], IP.octets());
        assert_eq!(frame[30..34], PEER_IP.octets());
        assert_eq!(frame[34], ICMP_ECHO_REPLY);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        assert!(Icmpv4Packet::new_checked(&frame[34..]).unwrap().verify_checksum(), "ICMP checksum");
        assert_eq!(&frame[42..], b"beeline ping payload!");
    }

    #[test]
    fn truncated_or_foreign_pings_are_left_alone() {
        let good = echo_request(b"abc");
        for cut in 0..good.len() {
            let mut frame = good[..cut].to_vec();
            assert_eq!(answer_in_place(&mut frame, &local()), Answer::NotMine, "cut at {cut}");
        }
        let mut other = good.clone();
        other[30] = 11;
        assert_eq!(answer_in_place(&mut other, &local()), Answer::NotMine);
    }

    #[test]
    fn link_local_and_solicited_node_addresses() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(link_local_from_mac(mac), "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap());
        let group = solicited_node("fe80::5054:ff:fe12:3456".parse().unwrap());
        assert_eq!(group, "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(group), [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn solicitation_for_our_link_local_becomes_an_advertisement() {
        let local = local();
        let mut frame = solicitation(local.ipv6_link_local, 255);
        let len = frame.len();
        assert_eq!(answer_in_place(&mut frame, &local), Answer::NeighborAdvert { len: ETHERNET_LEN + IPV6_LEN + 32 });
        assert_eq!(len, ETHERNET_LEN + IPV6_LEN + 32);
        assert_eq!(frame[0..6], PEER_MAC, "back to the solicitation's source link-layer address");
        assert_eq!(frame[6..12], MAC);
        let (ip, icmp) = icmpv6_reply(&frame, len);
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(ip.src_addr(), local.ipv6_link_local);
        assert_eq!(ip.dst_addr(), peer6().1);
        let NdiscRepr::NeighborAdvert { flags, target_addr, lladdr } = NdiscRepr::parse(&icmp).unwrap() else {
            panic!("not an advertisement");
        };
        assert_eq!(flags, NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE);
        assert_eq!(target_addr, local.ipv6_link_local);
        assert_eq!(lladdr.unwrap().as_bytes(), &MAC);
    }

    #[test]
    fn unicast_solicitation_is_answered_too() {
        let local = local();
        let target = local.ipv6_link_local;
        let mut frame = frames::neighbor_solicitation(MAC, target, peer6(), target, 255);
        let len = frame.len();
        assert_eq!(answer_in_place(&mut frame, &local), Answer::NeighborAdvert { len });
        icmpv6_reply(&frame, len);
    }

    #[test]
    fn wrong_target_hop_limit_or_checksum_gets_no_advertisement() {
        let local = local();
        let other: Ipv6Addr = "fe80::1234".parse().unwrap();
        let mut bad_checksum = solicitation(local.ipv6_link_local, 255);
        let last = bad_checksum.len() - 1;
        bad_checksum[last] ^= 1;
        let mut wrong_group = solicitation(local.ipv6_link_local, 255);
        wrong_group[2] ^= 1; // Ethernet destination no longer the solicited-node group
        let mut from_unspecified = frames::neighbor_solicitation(
            multicast_mac(solicited_node(local.ipv6_link_local)),
            solicited_node(local.ipv6_link_local),
            (PEER_MAC, Ipv6Addr::UNSPECIFIED),
            local.ipv6_link_local,
            255,
        );
        for (name, frame) in [
            ("other target", &mut solicitation(other, 255)),
            ("hop limit 64", &mut solicitation(local.ipv6_link_local, 64)),
            ("hop limit 254", &mut solicitation(local.ipv6_link_local, 254)),
            ("bad checksum", &mut bad_checksum),
            ("wrong group", &mut wrong_group),
            ("from ::", &mut from_unspecified),
        ] {
            let before = frame.clone();
            assert_eq!(answer_in_place(frame, &local), Answer::NotMine, "{name}");
            assert_eq!(*frame, before, "{name}");
        }
    }

    #[test]
    fn ping6_becomes_a_reply_with_a_valid_checksum() {
        let local = local();
        let mut frame = frames::echo6_request((MAC, local.ipv6_link_local), peer6(), b"beeline ping6 payload");
        let len = frame.len();
        assert_eq!(answer_in_place(&mut frame, &local), Answer::Echo6Reply { len });
        assert_eq!(frame[0..6], PEER_MAC);
        assert_eq!(frame[6..12], MAC);
        let (ip, icmp) = icmpv6_reply(&frame, len);
        assert_eq!(ip.src_addr(), local.ipv6_link_local);
        assert_eq!(ip.dst_addr(), peer6().1);
        assert_eq!(icmp.msg_type(), Icmpv6Message::EchoReply);
        assert_eq!(icmp.echo_ident(), 0x1234);
        assert_eq!(icmp.payload(), b"beeline ping6 payload");
    }

    #[test]
    fn truncated_or_foreign_ping6_is_left_alone() {
        let local = local();
        let good = frames::echo6_request((MAC, local.ipv6_link_local), peer6(), b"abc");
        for cut in 0..good.len() {
            let mut frame = good[..cut].to_vec();
            assert_eq!(answer_in_place(&mut frame, &local), Answer::NotMine, "cut at {cut}");
        }
        let mut other = frames::echo6_request((MAC, "fe80::99".parse().unwrap()), peer6(), b"abc");
        assert_eq!(answer_in_place(&mut other, &local), Answer::NotMine);
        let mut bad = good.clone();
        bad[ETHERNET_LEN + IPV6_LEN + 8] ^= 1;
        assert_eq!(answer_in_place(&mut bad, &local), Answer::NotMine);
    }

    proptest! {
        #[test]
        fn never_panics_and_replies_fit_the_frame(bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..4) {
            let mut frame = bytes;
            // Steer some inputs into the ARP, IPv4 and IPv6 paths so they are exercised deeply.
            if frame.len() >= 14 && kind < 3 {
                let ethertype = [ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6][usize::from(kind)];
                frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
                frame[0..6].copy_from_slice(&MAC);
            }
            let before = frame.clone();
            match answer_in_place(&mut frame, &local()) {
                Answer::ArpReply { len } | Answer::EchoReply { len } | Answer::NeighborAdvert { len } | Answer::Echo6Reply { len } => {
                    prop_assert!(len <= frame.len())
                }
                Answer::NotMine => prop_assert_eq!(frame, before),
            }
        }

        #[test]
        fn mangled_solicitations_never_panic(flips in proptest::collection::vec((0usize..86, any::<u8>()), 0..6), cut in 0usize..86) {
            let local = local();
            let mut frame = solicitation(local.ipv6_link_local, 255);
            for (at, byte) in flips {
                frame[at] ^= byte;
            }
            frame.truncate(frame.len() - cut.min(frame.len()));
            let before = frame.clone();
            match answer_in_place(&mut frame, &local) {
                Answer::NeighborAdvert { len } => {
                    prop_assert!(len <= frame.len());
                    icmpv6_reply(&frame, len);
                }
                Answer::NotMine => prop_assert_eq!(frame, before),
                Answer::ArpReply { len } | Answer::EchoReply { len } | Answer::Echo6Reply { len } => {
                    prop_assert!(len <= frame.len())
                }
            }
        }
    }
}
