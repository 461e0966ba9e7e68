//! ARP and ICMP echo for a port the kernel no longer sees (DPDK): the node answers who-has
//! for its own IPv4 address and replies to pings, rewriting the request frame in place
//! into the reply, so neither needs a buffer of its own.
//!
//! The bytes are untrusted; [`answer_in_place`] checks every length before it reads or
//! writes and never panics. Frames it does not answer are left untouched. IPv6 neighbour
//! discovery is not answered (a DPDK port serves IPv4 peers, or peers with static
//! neighbour entries).

use core::net::Ipv4Addr;

use crate::io::netstack::{ETHERNET_LEN, ETHERTYPE_IPV4, IPV4_LEN, MacAddr, fold, sum_bytes};

const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet + the IPv4-over-Ethernet ARP body.
const ARP_FRAME_LEN: usize = ETHERNET_LEN + 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const IP_PROTOCOL_ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_HEADER_LEN: usize = 8;
const TTL: u8 = 64;

/// What [`answer_in_place`] made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The frame now holds an ARP reply: send its first `len` bytes back.
    ArpReply { len: usize },
    /// The frame now holds an ICMP echo reply: send its first `len` bytes back.
    EchoReply { len: usize },
    /// Not an ARP request or ping for this node; the frame is unchanged.
    NotMine,
}

fn be16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// Turns an ARP request for `ip` or an ICMP echo request to `ip` into its reply, in place.
pub fn answer_in_place(frame: &mut [u8], mac: MacAddr, ip: Ipv4Addr) -> Answer {
    if frame.len() < ETHERNET_LEN {
        return Answer::NotMine;
    }
    match be16(frame, 12) {
        ETHERTYPE_ARP => answer_arp(frame, mac, ip),
        ETHERTYPE_IPV4 => answer_echo(frame, mac, ip),
        _ => Answer::NotMine,
    }
}

fn answer_arp(frame: &mut [u8], mac: MacAddr, ip: Ipv4Addr) -> Answer {
    if frame.len() < ARP_FRAME_LEN {
        return Answer::NotMine;
    }
    let arp = ETHERNET_LEN;
    // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses, a request for our address.
    let is_request_for_us = be16(frame, arp) == 1
        && be16(frame, arp + 2) == ETHERTYPE_IPV4
        && frame[arp + 4] == 6
        && frame[arp + 5] == 4
        && be16(frame, arp + 6) == ARP_REQUEST
        && frame[arp + 24..arp + 28] == ip.octets();
    if !is_request_for_us {
        return Answer::NotMine;
    }
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&frame[arp + 8..arp + 14]);
    let mut sender_ip = [0u8; 4];
    sender_ip.copy_from_slice(&frame[arp + 14..arp + 18]);
    frame[0..6].copy_from_slice(&sender_mac);
    frame[6..12].copy_from_slice(&mac);
    frame[arp + 6..arp + 8].copy_from_slice(&ARP_REPLY.to_be_bytes());
    frame[arp + 8..arp + 14].copy_from_slice(&mac);
    frame[arp + 14..arp + 18].copy_from_slice(&ip.octets());
    frame[arp + 18..arp + 24].copy_from_slice(&sender_mac);
    frame[arp + 24..arp + 28].copy_from_slice(&sender_ip);
    Answer::ArpReply { len: ARP_FRAME_LEN }
}

fn answer_echo(frame: &mut [u8], mac: MacAddr, ip: Ipv4Addr) -> Answer {
    let l3 = ETHERNET_LEN;
    if frame.len() < l3 + IPV4_LEN || frame[0..6] != mac {
        return Answer::NotMine;
    }
    let version_ihl = frame[l3];
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(be16(frame, l3 + 2));
    let fragmented = be16(frame, l3 + 6) & 0x3fff != 0;
    if version_ihl >> 4 != 4
        || header_len < IPV4_LEN
        || total_len < header_len + ICMP_HEADER_LEN
        || l3 + total_len > frame.len()
        || fragmented
        || frame[l3 + 9] != IP_PROTOCOL_ICMP
        || frame[l3 + 16..l3 + 20] != ip.octets()
    {
        return Answer::NotMine;
    }
    let icmp = l3 + header_len;
    if frame[icmp] != ICMP_ECHO_REQUEST || frame[icmp + 1] != 0 {
        return Answer::NotMine;
    }
    // Swap the Ethernet and IP addresses; the reply goes back the way the request came.
    let mut peer_mac = [0u8; 6];
    peer_mac.copy_from_slice(&frame[6..12]);
    frame[0..6].copy_from_slice(&peer_mac);
    frame[6..12].copy_from_slice(&mac);
    let mut peer_ip = [0u8; 4];
    peer_ip.copy_from_slice(&frame[l3 + 12..l3 + 16]);
    frame[l3 + 12..l3 + 16].copy_from_slice(&ip.octets());
    frame[l3 + 16..l3 + 20].copy_from_slice(&peer_ip);
    frame[l3 + 8] = TTL;
    frame[l3 + 10..l3 + 12].fill(0);
    let ip_checksum = !fold(sum_bytes(0, &frame[l3..icmp]));
    frame[l3 + 10..l3 + 12].copy_from_slice(&ip_checksum.to_be_bytes());
    frame[icmp] = ICMP_ECHO_REPLY;
    frame[icmp + 2..icmp + 4].fill(0);
    let icmp_checksum = !fold(sum_bytes(0, &frame[icmp..l3 + total_len]));
    frame[icmp + 2..icmp + 4].copy_from_slice(&icmp_checksum.to_be_bytes());
    Answer::EchoReply { len: l3 + total_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
    const PEER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x02];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);

    fn arp_request(target: Ipv4Addr) -> [u8; 60] {
        let mut frame = [0u8; 60];
        frame[0..6].fill(0xff);
        frame[6..12].copy_from_slice(&PEER_MAC);
        frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame[22..28].copy_from_slice(&PEER_MAC);
        frame[28..32].copy_from_slice(&PEER_IP.octets());
        frame[38..42].copy_from_slice(&target.octets());
        frame
    }

    fn echo_request(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut frame = std::vec![0u8; ETHERNET_LEN + IPV4_LEN + ICMP_HEADER_LEN + payload.len()];
        frame[0..6].copy_from_slice(&MAC);
        frame[6..12].copy_from_slice(&PEER_MAC);
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (IPV4_LEN + ICMP_HEADER_LEN + payload.len()) as u16;
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        frame[22] = 64;
        frame[23] = IP_PROTOCOL_ICMP;
        frame[26..30].copy_from_slice(&PEER_IP.octets());
        frame[30..34].copy_from_slice(&IP.octets());
        let checksum = !fold(sum_bytes(0, &frame[14..34]));
        frame[24..26].copy_from_slice(&checksum.to_be_bytes());
        frame[34] = ICMP_ECHO_REQUEST;
        frame[38..42].copy_from_slice(&[0x12, 0x34, 0, 1]);
        frame[42..].copy_from_slice(payload);
        let checksum = !fold(sum_bytes(0, &frame[34..]));
        frame[36..38].copy_from_slice(&checksum.to_be_bytes());
        frame
    }

    #[test]
    fn arp_request_for_our_address_becomes_a_reply() {
        let mut frame = arp_request(IP);
        assert_eq!(answer_in_place(&mut frame, MAC, IP), Answer::ArpReply { len: 42 });
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
        let before = frame;
        assert_eq!(answer_in_place(&mut frame, MAC, IP), Answer::NotMine);
        assert_eq!(frame, before);
    }

    #[test]
    fn ping_becomes_a_reply_with_valid_checksums() {
        let mut frame = echo_request(b"beeline ping payload!");
        let len = frame.len();
        assert_eq!(answer_in_place(&mut frame, MAC, IP), Answer::EchoReply { len });
        assert_eq!(frame[0..6], PEER_MAC);
        assert_eq!(frame[26..30], IP.octets());
        assert_eq!(frame[30..34], PEER_IP.octets());
        assert_eq!(frame[34], ICMP_ECHO_REPLY);
        assert_eq!(fold(sum_bytes(0, &frame[14..34])), 0xffff, "IPv4 header checksum");
        assert_eq!(fold(sum_bytes(0, &frame[34..])), 0xffff, "ICMP checksum");
        assert_eq!(&frame[42..], b"beeline ping payload!");
    }

    #[test]
    fn truncated_or_foreign_pings_are_left_alone() {
        let good = echo_request(b"abc");
        for cut in 0..good.len() {
            let mut frame = good[..cut].to_vec();
            assert_eq!(answer_in_place(&mut frame, MAC, IP), Answer::NotMine, "cut at {cut}");
        }
        let mut other = good.clone();
        other[30] = 11;
        assert_eq!(answer_in_place(&mut other, MAC, IP), Answer::NotMine);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_replies_fit_the_frame(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), kind in 0u8..3) {
            let mut frame = bytes;
            // Steer some inputs into the ARP and IPv4 paths so they are exercised deeply.
            if frame.len() >= 14 && kind < 2 {
                let ethertype = if kind == 0 { ETHERTYPE_ARP } else { ETHERTYPE_IPV4 };
                frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
                frame[0..6].copy_from_slice(&MAC);
            }
            match answer_in_place(&mut frame, MAC, IP) {
                Answer::ArpReply { len } | Answer::EchoReply { len } => proptest::prop_assert!(len <= frame.len()),
                Answer::NotMine => {}
            }
        }
    }
}
