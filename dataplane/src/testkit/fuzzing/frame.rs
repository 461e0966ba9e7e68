//! The `frame` fuzz target: untrusted Ethernet frames as a kernel-bypass port receives
//! them, through the ARP/ICMP/ND responder and the UDP parser; and builders of the frames
//! its seeds are made of.

use super::*;

/// The node's own address on a kernel-bypass port, for [`fuzz_frame`].
pub const FRAME_NODE_MAC: crate::io::netstack::MacAddr = [0x02, 0xbe, 0xe1, 0, 0, 1];
pub const FRAME_NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// One untrusted Ethernet frame, as a DPDK port receives it: the ARP / ICMP / ND
/// responder may rewrite it into a reply (which must then be well formed and no longer
/// than the frame) or must leave it untouched; then the UDP parser must not panic and must
/// point inside the frame.
pub fn fuzz_frame(data: &[u8]) {
    use crate::io::netstack;
    use crate::io::responder::{Answer, LocalAddrs, answer_in_place};
    use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet};

    let local = LocalAddrs::new(FRAME_NODE_MAC, FRAME_NODE_IP);
    let mut frame = data.to_vec();
    match answer_in_place(&mut frame, &local) {
        Answer::NotMine => assert_eq!(frame, data, "a frame the responder does not answer must stay as it was"),
        Answer::ArpReply { len } => {
            assert!(len <= frame.len());
            assert_eq!(frame[6..12], FRAME_NODE_MAC, "an ARP reply comes from the node");
            assert_eq!(frame[28..32], FRAME_NODE_IP.octets(), "an ARP reply announces the node's address");
            assert_eq!(frame[20..22], [0, 2], "an ARP reply has opcode 2");
        }
        Answer::EchoReply { len } => {
            assert!(len <= frame.len());
            let ip = Ipv4Packet::new_checked(&frame[14..len]).expect("a well-formed IPv4 reply");
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert!(Icmpv4Packet::new_checked(ip.payload()).unwrap().verify_checksum(), "ICMP checksum");
            assert_eq!(ip.src_addr(), FRAME_NODE_IP, "an echo reply comes from the node");
        }
        Answer::NeighborAdvert { len } | Answer::Echo6Reply { len } => {
            assert!(len <= frame.len());
            assert_eq!(frame[6..12], FRAME_NODE_MAC, "an ICMPv6 reply comes from the node");
            let ip = Ipv6Packet::new_checked(&frame[14..len]).expect("a well-formed IPv6 reply");
            assert_eq!(14 + ip.total_len(), len);
            assert_eq!(ip.src_addr(), local.ipv6_link_local, "an ICMPv6 reply comes from the node's address");
            let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("a well-formed ICMPv6 reply");
            assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()), "ICMPv6 checksum");
        }
    }
    if let Ok(datagram) = netstack::parse(data) {
        assert!(datagram.payload.start <= datagram.payload.end && datagram.payload.end <= data.len());
    }
}

/// Test frames for the responder: requests as peers send them.
pub mod frames {
    use core::net::{Ipv4Addr, Ipv6Addr};
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet,
        IpProtocol, Ipv4Packet, Ipv6Packet, NdiscRepr, RawHardwareAddress,
    };
    use std::vec::Vec;

    use crate::io::netstack::{ETHERNET_LEN, IPV4_LEN, IPV6_LEN, MacAddr};

    fn ethernet(dst: MacAddr, src: MacAddr, ethertype: EthernetProtocol, body_len: usize) -> Vec<u8> {
        let mut frame = std::vec![0u8; ETHERNET_LEN + body_len];
        let mut ethernet = EthernetFrame::new_unchecked(&mut frame[..]);
        ethernet.set_dst_addr(EthernetAddress(dst));
        ethernet.set_src_addr(EthernetAddress(src));
        ethernet.set_ethertype(ethertype);
        frame
    }

    /// A 60-byte (padded) ARP who-has `target` from `peer`.
    pub fn arp_request(peer_mac: MacAddr, peer_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut frame = ethernet([0xff; 6], peer_mac, EthernetProtocol::Arp, 46);
        frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame[22..28].copy_from_slice(&peer_mac);
        frame[28..32].copy_from_slice(&peer_ip.octets());
        frame[38..42].copy_from_slice(&target.octets());
        frame
    }

    /// A ping from `peer` to `node`, with valid checksums.
    pub fn echo_request(node: (MacAddr, Ipv4Addr), peer: (MacAddr, Ipv4Addr), payload: &[u8]) -> Vec<u8> {
        let icmp_len = 8 + payload.len();
        let mut frame = ethernet(node.0, peer.0, EthernetProtocol::Ipv4, IPV4_LEN + icmp_len);
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETHERNET_LEN..]);
        ip.set_version(4);
        ip.set_header_len(IPV4_LEN as u8);
        ip.set_total_len((IPV4_LEN + icmp_len) as u16);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::Icmp);
        ip.set_src_addr(peer.1);
        ip.set_dst_addr(node.1);
        ip.fill_checksum();
        let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
        icmp.set_msg_type(Icmpv4Message::EchoRequest);
        icmp.set_echo_ident(0x1234);
        icmp.set_echo_seq_no(1);
        icmp.data_mut().copy_from_slice(payload);
        icmp.fill_checksum();
        frame
    }

    /// An IPv6 frame carrying an ICMPv6 body that `fill` writes; its checksum is then filled.
    pub fn icmpv6(
        macs: (MacAddr, MacAddr),
        addrs: (Ipv6Addr, Ipv6Addr),
        hop_limit: u8,
        icmp_len: usize,
        fill: impl FnOnce(&mut Icmpv6Packet<&mut [u8]>),
    ) -> Vec<u8> {
        let (dst_mac, src_mac) = macs;
        let (src, dst) = addrs;
        let mut frame = ethernet(dst_mac, src_mac, EthernetProtocol::Ipv6, IPV6_LEN + icmp_len);
        let mut ip = Ipv6Packet::new_unchecked(&mut frame[ETHERNET_LEN..]);
        ip.set_version(6);
        ip.set_payload_len(icmp_len as u16);
        ip.set_next_header(IpProtocol::Icmpv6);
        ip.set_hop_limit(hop_limit);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        let mut icmp = Icmpv6Packet::new_unchecked(ip.payload_mut());
        fill(&mut icmp);
        icmp.fill_checksum(&src, &dst);
        frame
    }

    /// A Neighbor Solicitation for `target` from `peer`, to `dst` (the target itself or
    /// its solicited-node group) at `dst_mac`, with the source link-layer address option.
    pub fn neighbor_solicitation(
        dst_mac: MacAddr,
        dst: Ipv6Addr,
        peer: (MacAddr, Ipv6Addr),
        target: Ipv6Addr,
        hop_limit: u8,
    ) -> Vec<u8> {
        let solicit = NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from(EthernetAddress(peer.0))),
        };
        icmpv6((dst_mac, peer.0), (peer.1, dst), hop_limit, solicit.buffer_len(), |icmp| solicit.emit(icmp))
    }

    /// An ICMPv6 echo request from `peer` to `node`.
    pub fn echo6_request(node: (MacAddr, Ipv6Addr), peer: (MacAddr, Ipv6Addr), payload: &[u8]) -> Vec<u8> {
        icmpv6((node.0, peer.0), (peer.1, node.1), 64, 8 + payload.len(), |icmp| {
            icmp.set_msg_type(Icmpv6Message::EchoRequest);
            icmp.set_msg_code(0);
            icmp.set_echo_ident(0x1234);
            icmp.set_echo_seq_no(1);
            icmp.payload_mut().copy_from_slice(payload);
        })
    }
}
