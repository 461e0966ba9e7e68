//! Protocol v2's sessions on the deterministic `sim` network: captured datagrams replayed
//! later, from the same address and from another one; rekeys in the middle of transfers
//! under loss, duplication and reordering; a session the node ended; a table that stays
//! bounded whatever arrives. Every run is seeded (`BEELINE_SIM_SEED=<seed>` replays one).

use std::net::SocketAddr;

use beeline_dataplane::client::{ClientError, Progress};
use beeline_dataplane::io::sim::Impairments;
use beeline_dataplane::node::NoControl;
use beeline_dataplane::session::handshake::{
    CHALLENGE_LEN, CONFIRM_LEN, ClusterKeys, INITIATE_LEN, Kind, Message, write_initiate,
};
use beeline_dataplane::session::peer::ClientHandshake;
use beeline_dataplane::store::mem::MemStore;
use beeline_dataplane::testkit::fuzzing::pattern;
use beeline_dataplane::testkit::harness::{self, SimHarness, SimOptions, outcome};
use beeline_dataplane::wire::{self, ClusterKey, Opcode, Repr};

const KEY: ClusterKey = ClusterKey::new([0x42; 32]);
const FRAG: u16 = 1400;

fn seeds() -> Vec<u64> {
    harness::seeds(4)
}

fn harness(options: SimOptions) -> SimHarness<MemStore, NoControl> {
    SimHarness::new(options, MemStore::new(), NoControl)
}

fn attacker() -> SocketAddr {
    "10.0.0.66:4444".parse().unwrap()
}

/// Sends every datagram from `from` to the node and lets it answer.
fn replay(sim: &mut SimHarness<MemStore, NoControl>, from: SocketAddr, datagrams: &[Vec<u8>]) -> u64 {
    let mut sent_bytes = 0;
    for datagram in datagrams {
        sim.net.borrow_mut().send_to_node(from, sim.node_addr, datagram);
        sent_bytes += datagram.len() as u64;
        sim.step(&mut []);
    }
    for _ in 0..10 {
        sim.step(&mut []);
    }
    sent_bytes
}

fn exchange(sim: &mut SimHarness<MemStore, NoControl>, opcode: Opcode, chunk_id: u128, expect: Opcode) {
    let mut machine = [sim.exchange(Repr { chunk_id, ..Repr::new(opcode) }, &[], expect)];
    outcome(sim.run(&mut machine, 100_000)[0]).unwrap_or_else(|error| panic!("{opcode:?}: {error:?}"));
}

/// The attack: a put, a get and a delete are captured; a newer chunk is stored
/// after them; then every captured datagram (handshake included) is replayed, from the
/// client's own address and from another one. Nothing comes back to life, nothing is
/// deleted or served, and no address gets more than 3x the bytes it sent.
#[test]
fn captured_datagrams_replayed_later_change_nothing_and_amplify_nothing() {
    for seed in seeds() {
        let mut sim = harness(SimOptions::new(seed, KEY));
        sim.capture = Some(Vec::new());
        let old = pattern(300_000, seed);
        sim.put(1, &old, FRAG).unwrap();
        assert!(sim.get(1, old.len() as u32, FRAG).unwrap() == old);
        exchange(&mut sim, Opcode::Stat, 1, Opcode::StatReply);
        exchange(&mut sim, Opcode::Delete, 1, Opcode::DeleteDone);
        let captured = sim.capture.take().unwrap();
        let initiates = captured.iter().filter(|d| d.len() == INITIATE_LEN && wire::is_handshake(d)).count() as u64;
        assert!(initiates >= 1 && captured.len() > 200, "seed {seed}: the capture holds the handshake and the data");
        let new = pattern(200_000, seed + 100);
        sim.put(2, &new, FRAG).unwrap();

        let before = *sim.poll.node.counters();
        let to_client_before = sim.bytes_to.get(&sim.client_addr).copied().unwrap_or(0);
        let client_addr = sim.client_addr;
        replay(&mut sim, client_addr, &captured);
        let sent_by_attacker = replay(&mut sim, attacker(), &captured);
        let after = *sim.poll.node.counters();

        let store = sim.poll.node.store();
        assert_eq!(store.chunk(1), None, "seed {seed}: a replayed put brought a deleted chunk back");
        assert!(store.chunk(2) == Some(&new[..]), "seed {seed}: the newer chunk changed");
        assert_eq!(store.chunk_count(), 1);
        let unchanged = |field: fn(&beeline_dataplane::counters::Counters) -> u64| field(&after) == field(&before);
        assert!(unchanged(|c| c.fragments_stored), "seed {seed}: replayed fragments were stored");
        assert!(unchanged(|c| c.chunks_deleted) && unchanged(|c| c.gets) && unchanged(|c| c.stats), "seed {seed}");
        assert!(unchanged(|c| c.sessions_established), "seed {seed}: a replayed Confirm made a session");
        // Replies: only the stateless Challenge to each replayed Initiate, to each address.
        assert_eq!(after.handshake_challenges - before.handshake_challenges, 2 * initiates, "seed {seed}");
        let to_client = sim.bytes_to.get(&sim.client_addr).copied().unwrap_or(0) - to_client_before;
        assert_eq!(to_client, initiates * CHALLENGE_LEN as u64, "seed {seed}: the node answered a replayed request");
        let to_attacker = sim.bytes_to.get(&attacker()).copied().unwrap_or(0);
        assert_eq!(to_attacker, initiates * CHALLENGE_LEN as u64, "seed {seed}");
        assert!(3 * to_attacker <= sent_by_attacker, "seed {seed}: {to_attacker} bytes for {sent_by_attacker}");
        // Counted by reason: the same address hits the replay window (data) and the
        // remembered client randoms (Confirm); another address, the session's address
        // check and the cookie's.
        let data_datagrams = captured.iter().filter(|d| !wire::is_handshake(d)).count() as u64;
        let confirms = captured.iter().filter(|d| d.len() == CONFIRM_LEN && wire::is_handshake(d)).count() as u64;
        assert_eq!(after.dropped_replayed - before.dropped_replayed, data_datagrams + confirms, "seed {seed}");
        assert_eq!(after.dropped_wrong_address - before.dropped_wrong_address, data_datagrams, "seed {seed}");
        assert_eq!(after.dropped_bad_cookie - before.dropped_bad_cookie, confirms, "seed {seed}");
        // And the client's own session still works.
        assert!(sim.get(2, new.len() as u32, FRAG).unwrap() == new, "seed {seed}");
    }
}

/// After a rekey the old session's datagrams name a session the node no longer uses for
/// that client; once the node ends it, they name nothing at all.
#[test]
fn datagrams_of_an_ended_session_are_refused_as_unknown() {
    let mut options = SimOptions::new(5, KEY);
    options.node_config.session_lifetime_ms = 2_000;
    let mut sim = harness(options);
    sim.capture = Some(Vec::new());
    sim.put(1, &pattern(50_000, 1), FRAG).unwrap();
    let captured: Vec<Vec<u8>> = sim.capture.take().unwrap().into_iter().filter(|d| !wire::is_handshake(d)).collect();
    exchange(&mut sim, Opcode::Delete, 1, Opcode::DeleteDone);
    // Past the node's lifetime: the session ends, and the client's next request finds out
    // by silence, handshakes again and succeeds.
    for _ in 0..2_500 {
        sim.step(&mut []);
    }
    let before = *sim.poll.node.counters();
    let newer = pattern(70_000, 2);
    sim.put(3, &newer, FRAG).unwrap();
    let after = *sim.poll.node.counters();
    assert!(after.dropped_no_session > before.dropped_no_session, "the expired session's datagrams were refused");
    assert_eq!(sim.client.handshakes_completed, 2);
    let client_addr = sim.client_addr;
    replay(&mut sim, client_addr, &captured);
    let replayed = *sim.poll.node.counters();
    assert_eq!(replayed.dropped_no_session - after.dropped_no_session, captured.len() as u64);
    assert_eq!(sim.poll.node.store().chunk(1), None);
    assert!(sim.poll.node.store().chunk(3) == Some(&newer[..]));
}

/// Rekeys every few milliseconds while chunks move over a lossy, duplicating, reordering
/// network: every put and get completes, byte for byte.
#[test]
fn rekeys_in_the_middle_of_transfers_under_impairments_fail_nothing() {
    for seed in seeds() {
        let mut options = SimOptions::new(seed, KEY);
        options.impairments =
            Impairments { loss_ppm: 10_000, duplicate_ppm: 10_000, reorder_ppm: 50_000, ..Impairments::NONE };
        let mut sim = harness(options);
        let files: Vec<Vec<u8>> = (0..4).map(|i| pattern(1 << 20, seed * 10 + i)).collect();
        let mut machines: Vec<_> =
            files.iter().enumerate().map(|(i, data)| sim.put_machine(i as u128, data, FRAG)).collect();
        sim.start(&mut machines);
        for step in 0..2_000_000u64 {
            if machines.iter().all(|machine| machine.progress() != Progress::Pending) {
                break;
            }
            if step % 7 == 6 {
                sim.rekey();
            }
            sim.step(&mut machines);
        }
        for (index, machine) in machines.iter().enumerate() {
            assert_eq!(machine.progress(), Progress::Done, "seed {seed}: put {index}");
        }
        drop(machines);
        assert!(
            sim.client.handshakes_completed >= 5,
            "seed {seed}: only {} handshakes",
            sim.client.handshakes_completed
        );
        for (index, data) in files.iter().enumerate() {
            sim.rekey();
            let back = sim.get(index as u128, data.len() as u32, FRAG).unwrap();
            assert!(back == *data, "seed {seed}: chunk {index} came back different");
        }
    }
}

/// A client without the cluster key never gets a session, whatever it sends.
#[test]
fn a_wrong_key_gets_no_session_and_no_reply() {
    let mut sim = harness(SimOptions::new(6, KEY));
    sim.set_client_key(&ClusterKey::new([0x43; 32]));
    let mut ping = [sim.exchange(Repr::new(Opcode::Ping), &[], Opcode::Pong)];
    assert_eq!(sim.run(&mut ping, 100_000)[0], Progress::Failed(ClientError::Unreachable));
    let counters = *sim.poll.node.counters();
    assert_eq!((counters.handshake_challenges, counters.sessions_established, counters.tx_packets), (0, 0, 0));
    assert!(counters.dropped_bad_mac > 0);
}

/// Handshakes from many addresses: the table never holds more than its size (the least
/// recently heard-from session makes room), and once every remembered client random is
/// young, new sessions wait (`handshake_busy`) instead of forgetting one.
#[test]
fn handshake_state_stays_bounded_whatever_arrives() {
    let mut options = SimOptions::new(7, KEY);
    options.sessions = 2;
    let mut sim = harness(options);
    let keys = ClusterKeys::new(*KEY.bytes());
    let seen_capacity = 2 * beeline_dataplane::node::sessions::SEEN_PER_SESSION;
    let mut established = 0;
    for client in 0..seen_capacity + 3 {
        let from: SocketAddr = format!("10.0.2.{}:5000", client + 1).parse().unwrap();
        let mut attempt = ClientHandshake::new(&keys, client as u32, [client as u8; 32]);
        let mut initiate = [0u8; INITIATE_LEN];
        attempt.initiate(&mut initiate);
        let challenge = roundtrip(&mut sim, from, &initiate).expect("every Initiate gets a Challenge");
        let mut confirm = [0u8; CONFIRM_LEN];
        attempt.on_challenge(&challenge, &mut confirm).unwrap();
        if let Some(accept) = roundtrip(&mut sim, from, &confirm) {
            assert_eq!(Message::new_checked(&accept[..]).unwrap().kind(), Kind::Accept);
            established += 1;
        }
        assert!(sim.poll.node.sessions_active() <= 2);
    }
    assert_eq!(established, seen_capacity);
    let counters = *sim.poll.node.counters();
    assert_eq!(counters.dropped_handshake_busy, 3);
    // A forged Initiate (no key) costs nothing but a drop.
    let mut forged = [0u8; INITIATE_LEN];
    write_initiate(&mut forged, &ClusterKeys::new([1; 32]), 9, &[9; 32]);
    assert!(roundtrip(&mut sim, attacker(), &forged).is_none());
}

/// Sends one message from `from` and returns the node's reply to that address, if any.
fn roundtrip(sim: &mut SimHarness<MemStore, NoControl>, from: SocketAddr, message: &[u8]) -> Option<Vec<u8>> {
    sim.net.borrow_mut().send_to_node(from, sim.node_addr, message);
    sim.poll.run_once(sim.now_ms).unwrap_or_else(|never| match never {});
    let mut buffer = [0u8; 2048];
    let mut reply = None;
    while let Some((_, to, len)) = sim.net.borrow_mut().recv_for_client(&mut buffer) {
        if to == from {
            reply = Some(buffer[..len].to_vec());
        }
    }
    reply
}
