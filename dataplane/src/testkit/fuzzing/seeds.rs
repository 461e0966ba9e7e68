//! The seed corpus: hand-made inputs for every fuzz target, written to `fuzz/corpus/` by
//! `tests/fuzz_corpus.rs` and replayed by it.

use super::*;

/// One file of the seed corpus.
pub struct Seed {
    /// The fuzz target (and `fuzz/corpus/` directory) it belongs to.
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::io::netstack::{Route, Vlan, write_headers};
    use crate::io::responder::{link_local_from_mac, solicited_node};
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let peer_mac = [0x02, 0, 0, 0, 0, 2];
    let peer_ip = Ipv4Addr::new(10, 0, 0, 2);
    let arp = frames::arp_request(peer_mac, peer_ip, FRAME_NODE_IP);
    seeds.push(("arp-request".into(), arp.clone()));
    let mut other = arp;
    other[41] = 99;
    seeds.push(("arp-request-other-ip".into(), other));

    let echo = frames::echo_request((FRAME_NODE_MAC, FRAME_NODE_IP), (peer_mac, peer_ip), &[0; 16]);
    seeds.push(("icmp-echo".into(), echo.clone()));
    seeds.push(("icmp-echo-truncated".into(), echo[..40].to_vec()));

    let node6 = link_local_from_mac(FRAME_NODE_MAC);
    let peer6 = (peer_mac, link_local_from_mac(peer_mac));
    let group = solicited_node(node6);
    let group_mac = [0x33, 0x33, 0xff, 0, 0, 1];
    seeds.push(("nd-solicit-multicast".into(), frames::neighbor_solicitation(group_mac, group, peer6, node6, 255)));
    seeds.push(("nd-solicit-unicast".into(), frames::neighbor_solicitation(FRAME_NODE_MAC, node6, peer6, node6, 255)));
    seeds.push(("nd-solicit-hop-64".into(), frames::neighbor_solicitation(group_mac, group, peer6, node6, 64)));
    let echo6 = frames::echo6_request((FRAME_NODE_MAC, node6), peer6, &[0; 16]);
    seeds.push(("icmpv6-echo".into(), echo6.clone()));
    seeds.push(("icmpv6-echo-truncated".into(), echo6[..60].to_vec()));

    let datagram = unsealed(request(Opcode::Ping, 0), &[]);
    for (name, vlan, dst) in [
        ("udp-v4", None, SocketAddr::from((FRAME_NODE_IP, 7777))),
        ("udp-v4-vlan", Some(Vlan { tpid: 0x8100, tci: 7 }), SocketAddr::from((FRAME_NODE_IP, 7777))),
        ("udp-v6", None, "[fd00::1]:7777".parse().expect("constant address")),
    ] {
        let src = if dst.is_ipv4() {
            SocketAddr::from((peer_ip, 40000))
        } else {
            "[fd00::2]:40000".parse().expect("constant")
        };
        let route = Route { src_mac: peer_mac, dst_mac: FRAME_NODE_MAC, vlan, src, dst };
        let header_len = route.header_len().expect("same family");
        let mut frame = std::vec![0u8; header_len + datagram.len()];
        frame[header_len..].copy_from_slice(&datagram);
        write_headers(&route, 1, &mut frame).expect("fits");
        seeds.push((name.into(), frame));
    }
    seeds
}

/// Hand-made inputs that reach each protocol path on the preloaded node and each client
/// reaction, as plaintext datagrams (the targets seal them), plus malformed variants. libFuzzer starts from
/// these instead of having to discover the header layout and the preloaded ids.
pub fn seed_corpus() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed { target, name: std::format!("seed-{name}"), bytes });
    };
    for (name, bytes) in packet_seeds() {
        add("packet", &name, bytes);
    }
    for (name, bytes) in client_seeds() {
        add("client_reply", &name, bytes);
    }
    for (name, bytes) in frame_seeds() {
        add("frame", &name, bytes);
    }
    for (name, bytes) in handshake_seeds() {
        add("handshake", &name, bytes);
    }
    seeds
}

fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::session::handshake::*;
    let keys = ClusterKeys::new(*FUZZ_KEY.bytes());
    let (client_random, node_random) = HANDSHAKE_RANDOMS;
    let session = keys.session(&client_random, &node_random);
    let cookie = [0x33; COOKIE_LEN];
    let mut initiate = [0u8; INITIATE_LEN];
    write_initiate(&mut initiate, &keys, 7, &client_random);
    let mut challenge = [0u8; CHALLENGE_LEN];
    write_challenge(&mut challenge, &keys, 7, &node_random, &cookie);
    let mut confirm = [0u8; CONFIRM_LEN];
    write_confirm(&mut confirm, &session, 7, &client_random, &node_random, &cookie);
    let mut accept = [0u8; ACCEPT_LEN];
    write_accept(&mut accept, &session, 7, 8);
    std::vec![
        ("initiate".into(), initiate.to_vec()),
        ("challenge".into(), challenge.to_vec()),
        ("confirm".into(), confirm.to_vec()),
        ("accept".into(), accept.to_vec()),
    ]
}

fn request(opcode: Opcode, chunk_id: ChunkId) -> Repr {
    Repr { request_id: 0x77, chunk_id, ..Repr::new(opcode) }
}

// Long on purpose: a list of seed datagrams, one per protocol path.
fn packet_seeds() -> Vec<(String, Vec<u8>)> {
    use ids::*;
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((name.into(), bytes));
    let frag_max = (FRAME_BYTES - HEADROOM_BYTES - HEADER_LEN) as u16;
    let ack = flags::ACK_REQUEST;

    add("ping", unsealed(request(Opcode::Ping, 0), &[]));
    add("put-fresh-single", put_fragment(FRESH, 100, 100, 0, &pattern(100, 7), ack));
    add("put-fresh-first-of-three", put_fragment(FRESH, 2500, 1000, 0, &pattern(1000, 7), ack));
    add("put-fresh-last-of-three", put_fragment(FRESH, 2500, 1000, 2, &pattern(500, 7), 0));
    add("put-fresh-empty", put_fragment(FRESH, 0, 512, 0, &[], ack));
    add(
        "put-fresh-frag-max",
        put_fragment(FRESH, u32::from(frag_max) * 2, frag_max, 1, &pattern(frag_max.into(), 7), ack),
    );
    add("put-fresh-frag-over-max", put_fragment(FRESH, 4000, frag_max + 1, 0, &[1; 8], ack));
    add("put-fresh-fragments-max", put_fragment(FRESH, 8192 * 6, 6, 8191, &[6; 6], ack));
    add("put-fresh-fragments-over-max", put_fragment(FRESH, 8192 * 6 + 1, 6, 8192, &[6; 1], ack));
    add("put-fresh-too-large", put_fragment(FRESH, CHUNK_BYTES_MAX + 1, 1024, 0, &[9; 1024], ack));
    add("put-fresh-disk-full", put_fragment(FRESH, CHUNK_BYTES_MAX, 1024, 0, &[9; 1024], ack));
    add("put-partial-complete", put_fragment(PARTIAL, PARTIAL_LEN, PARTIAL_FRAG, 1, &pattern(500, 3), ack));
    add("put-partial-duplicate", put_fragment(PARTIAL, PARTIAL_LEN, PARTIAL_FRAG, 0, &pattern(1000, 3), ack));
    add("put-partial-conflict", put_fragment(PARTIAL, PARTIAL_LEN, 500, 1, &[3; 500], ack));
    let sparse_len = SPARSE_COUNT * u32::from(SPARSE_FRAG);
    add("put-sparse-hole", put_fragment(SPARSE, sparse_len, SPARSE_FRAG, 4, &[4; 8], ack));
    add("put-sparse-last", put_fragment(SPARSE, sparse_len, SPARSE_FRAG, SPARSE_COUNT - 1, &[4; 8], ack));
    add("put-committing-again", put_fragment(COMMITTING, COMMITTING_LEN, COMMITTING_LEN as u16, 0, &[5; 10], ack));
    add("put-stored-retry", put_fragment(STORED, STORED_LEN, 1000, 0, &pattern(1000, 1), ack));
    add("put-stored-conflict", put_fragment(STORED, STORED_LEN + 1, 1000, 0, &[1; 1000], ack));
    let mut zero_frag = put_fragment(FRESH, 100, 100, 0, &[0; 100], ack);
    zero_frag[44..46].fill(0);
    add("put-zero-frag-len", zero_frag);
    let mut bad_count = put_fragment(FRESH, 3000, 1000, 0, &[0; 1000], ack);
    bad_count[36..40].copy_from_slice(&2u32.to_be_bytes());
    add("put-wrong-count", bad_count);
    let mut bad_index = put_fragment(FRESH, 3000, 1000, 0, &[0; 1000], ack);
    bad_index[32..36].copy_from_slice(&3u32.to_be_bytes());
    add("put-index-past-count", bad_index);
    add(
        "put-short-payload",
        unsealed(
            Repr { index: 0, count: 3, total_len: 3000, frag_len: 1000, ..request(Opcode::PutFrag, FRESH) },
            &[0; 999],
        ),
    );

    for id in [PARTIAL, SPARSE, COMMITTING, STORED, FRESH] {
        add(&std::format!("put-query-{id}"), unsealed(request(Opcode::PutQuery, id), &[]));
    }
    let get = |id: ChunkId, index: u32, count: u32, frag_len: u16| {
        unsealed(Repr { index, count, frag_len, ..request(Opcode::Get, id) }, &[])
    };
    add("get-stored-window", get(STORED, 0, 8, 500));
    add("get-stored-tail", get(STORED, 4, 3, 1000));
    add("get-stored-count-zero", get(STORED, 0, 0, 1000));
    add("get-stored-frag-max", get(STORED, 0, 3, frag_max));
    add("get-stored-frag-over-max", get(STORED, 0, 3, frag_max + 1));
    add("get-stored-frag-zero", get(STORED, 0, 3, 0));
    add("get-stored-index-past-end", get(STORED, 5, 1, 1000));
    add("get-stored-out-of-frames", get(STORED, 0, 100, 64));
    add("get-stored-huge-count", get(STORED, 1, u32::MAX, 1));
    add("get-empty", get(EMPTY, 0, 1, 1000));
    add("get-committing", get(COMMITTING, 0, 1, 1000));
    add("get-fresh", get(FRESH, 0, 1, 1000));
    for (name, id) in [("stored", STORED), ("partial", PARTIAL), ("committing", COMMITTING), ("fresh", FRESH)] {
        add(&std::format!("delete-{name}"), unsealed(request(Opcode::Delete, id), &[]));
        add(&std::format!("stat-{name}"), unsealed(request(Opcode::Stat, id), &[]));
    }
    add("control", unsealed(request(Opcode::Control, 0), b"\x01\x02postcard-ish"));
    // Every reply opcode takes the same path; a few are enough to start from.
    for opcode in [Opcode::Pong, Opcode::GetData, Opcode::Error] {
        add(&std::format!("unexpected-{opcode:?}").to_lowercase(), unsealed(request(opcode, STORED), &[]));
    }

    // Malformed and unauthenticated variants of a valid datagram.
    let base = put_fragment(FRESH, 2500, 1000, 0, &pattern(1000, 7), ack);
    let mut trailing = base.clone();
    trailing.extend_from_slice(b"trailing bytes past the payload");
    add("trailing-bytes", trailing);
    add("oversized-for-frame", put_fragment(FRESH, 4000, 2000, 0, &pattern(2000, 8), ack));
    add("empty", Vec::new());
    add("truncated-header", base[..40].to_vec());
    add("truncated-payload", base[..HEADER_LEN + 10].to_vec());
    let variant = |at: usize, value: u8| {
        let mut bytes = base.clone();
        bytes[at] = value;
        bytes
    };
    add("bad-magic", variant(0, 0xbf));
    add("bad-version", variant(2, VERSION + 1));
    add("opcode-zero", variant(3, 0));
    add("opcode-unknown", variant(3, 16));
    add("flags-unknown", variant(4, 0x80));
    add("status-unknown", variant(5, 8));
    add("reserved-nonzero", variant(53, 1));
    add("handshake-kind-unknown", variant(3, 0x85));
    // As it comes, this one names the fuzzed node's session with a fresh packet number
    // and a wrong tag: dropped as unauthenticated.
    let mut bad_tag = base.clone();
    bad_tag[48..52].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    bad_tag[56..64].copy_from_slice(&1_000_000u64.to_be_bytes());
    add("bad-tag", bad_tag);
    // Handshake messages and an old client's request reach the node's stateless paths.
    let keys = ClusterKeys::new(*FUZZ_KEY.bytes());
    let mut initiate = [0u8; hs::INITIATE_LEN];
    hs::write_initiate(&mut initiate, &keys, 9, &[0x44; 32]);
    add("handshake-initiate", initiate.to_vec());
    let session = keys.session(&[0x44; 32], &[0x55; 32]);
    let mut confirm = [0u8; hs::CONFIRM_LEN];
    hs::write_confirm(&mut confirm, &session, 9, &[0x44; 32], &[0x55; 32], &[0x66; hs::COOKIE_LEN]);
    add("handshake-confirm-bad-cookie", confirm.to_vec());
    let mut old = [0u8; v1::HEADER_LEN];
    v1::write_request(Opcode::Get, 5, &FUZZ_KEY, &mut old);
    add("version-one-get", old.to_vec());
    seeds
}

fn client_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| seeds.push((name.into(), bytes));
    let reply =
        |opcode: Opcode| Repr { request_id: ids::CLIENT_REQUEST, chunk_id: ids::CLIENT_CHUNK, ..Repr::new(opcode) };
    let put_count = wire::fragment_count(CLIENT_PUT_LEN as u32, CLIENT_PUT_FRAG);
    let status = |index: u32, flags: u8, credits: u16| Repr {
        index,
        flags,
        credits,
        count: put_count,
        total_len: CLIENT_PUT_LEN as u32,
        frag_len: CLIENT_PUT_FRAG,
        ..reply(Opcode::PutStatus)
    };
    add("put-status-nothing", unsealed(status(0, 0, CLIENT_PUT_CREDITS), &[]));
    add("put-status-some", unsealed(status(10, 0, 64), &[0b1010_0101, 0xff, 0x01]));
    add("put-status-holes", unsealed(status(3, 0, 8), &[0xfe; 16]));
    add("put-status-beyond-count", unsealed(status(put_count + 5, 0, u16::MAX), &[0xff; 128]));
    add("put-status-complete", unsealed(status(put_count, flags::COMPLETE, 1), &[]));
    add("put-done", unsealed(Repr { total_len: CLIENT_PUT_LEN as u32, ..reply(Opcode::PutDone) }, &[]));
    add("put-done-wrong-len", unsealed(Repr { total_len: 1, ..reply(Opcode::PutDone) }, &[]));
    for status in [Status::Busy, Status::NotFound, Status::DiskFull, Status::Conflict, Status::Ok] {
        add(&std::format!("error-{status:?}").to_lowercase(), unsealed(Repr { status, ..reply(Opcode::Error) }, &[]));
    }
    let get_data = |index: u32, total_len: u32, frag_len: u16, len: usize| {
        let repr = Repr {
            index,
            total_len,
            frag_len,
            count: wire::fragment_count(total_len, frag_len),
            ..reply(Opcode::GetData)
        };
        unsealed(repr, &pattern(len, u64::from(index)))
    };
    let frag = CLIENT_GET_FRAG;
    add("get-data-first", get_data(1, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-last-of-range", get_data(21, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-before-range", get_data(0, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-past-range", get_data(25, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-unrequested", get_data(15, CLIENT_GET_TOTAL, frag, 100));
    add("get-data-short", get_data(2, CLIENT_GET_TOTAL, frag, 99));
    add("get-data-wrong-total", get_data(1, CLIENT_GET_TOTAL + 1, frag, 100));
    add("get-data-wrong-frag", get_data(1, CLIENT_GET_TOTAL, frag * 2, 200));
    add("pong", unsealed(Repr { credits: 8, total_len: CHUNK_BYTES_MAX, frag_len: 1856, ..reply(Opcode::Pong) }, &[]));
    add("pong-with-payload", unsealed(reply(Opcode::Pong), b"unexpected but harmless"));
    add("pong-payload-too-big", unsealed(reply(Opcode::Pong), &[0x70; client::DATAGRAM_BYTES_MAX + 1]));
    add("delete-done", unsealed(reply(Opcode::DeleteDone), &[]));
    add("other-request-id", unsealed(Repr { request_id: 1, ..reply(Opcode::PutDone) }, &[]));
    add("other-chunk", unsealed(Repr { chunk_id: 1, ..reply(Opcode::Pong) }, &[]));
    add("request-opcode", unsealed(reply(Opcode::Get), &[]));
    let mut tag_set = unsealed(reply(Opcode::Pong), &[]);
    tag_set[HEADER_LEN - 1] ^= 1;
    add("tag-set", tag_set);
    add("truncated", unsealed(reply(Opcode::Pong), &[])[..30].to_vec());
    seeds
}
