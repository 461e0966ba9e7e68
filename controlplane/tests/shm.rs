//! The shared-memory transport against real node processes: edge-size round trips, clients
//! killed mid-put and mid-get, a client that scribbles on its ring, two clients at once,
//! and another user refused by the socket's permission.

mod common;
use common::node::{BIN, TestNode, ok};
use common::{Process, is_root, pattern};

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use beeline::shm::client::ShmLink;

/// Status over UDP, so that asking does not move the shared-memory counters.
const STATUS: &[&str] = &["--transport", "udp"];

fn counters(node: &TestNode) -> HashMap<String, u64> {
    node.counters(STATUS)
}

fn wait_counters(
    node: &TestNode,
    what: &str,
    condition: impl Fn(&HashMap<String, u64>) -> bool,
) -> HashMap<String, u64> {
    node.wait_counters(STATUS, what, condition)
}

fn start(dir: &std::path::Path) -> TestNode {
    TestNode::start(dir, &[])
}

fn round_trip(node: &TestNode, dir: &std::path::Path, name: &str, data: &[u8]) {
    let source = dir.join(format!("{name}.in"));
    std::fs::write(&source, data).unwrap();
    let out = dir.join(format!("{name}.out"));
    ok(&node.cli(&["put", source.to_str().unwrap(), "--as", name, "--transport", "shm"]));
    ok(&node.cli(&["get", name, "-o", out.to_str().unwrap(), "--transport", "shm"]));
    let back = std::fs::read(&out).unwrap();
    assert!(back == data, "{name}: {} bytes came back for {}", back.len(), data.len());
}

#[test]
fn edge_sizes_round_trip_over_shared_memory() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let chunk = 4 << 20;
    for (name, len) in [("empty", 0), ("one", 1), ("chunk", chunk), ("chunk-plus-one", chunk + 1)] {
        let before = counters(&node)["shm_requests"];
        round_trip(&node, dir.path(), name, &pattern(len, len as u64));
        let after = wait_counters(&node, "requests counted", |c| c["shm_requests"] > before);
        assert!(after["shm_requests"] > before, "{name} did not go through shared memory");
    }
    let before = counters(&node);
    round_trip(&node, dir.path(), "hundred", &pattern(100 << 20, 7));
    let after = wait_counters(&node, "the 100 MiB put and get counted", |c| {
        c["shm_bulk_bytes"] >= before["shm_bulk_bytes"] + 2 * (100 << 20)
    });
    // Every chunk went in and came out through the bulk slots as whole chunks (25 of 4 MiB
    // each way), and the node copied none of their bytes: what it copied between the
    // rings and its frames is headers, about a hundred bytes per request and reply.
    assert!(after["shm_bulk_requests"] >= before["shm_bulk_requests"] + 50);
    assert!(after["local_requests"] >= before["local_requests"] + 50);
    let copied = after["shm_bytes_copied"] - before["shm_bytes_copied"];
    assert!(copied < 64 << 10, "the node copied {copied} bytes for a 100 MiB round trip");
    let settled = wait_counters(&node, "clients gone", |c| c["shm_clients_connected"] == 0);
    assert_eq!(settled["shm_frames_held"], 0);
}

/// Kills a client with SIGKILL once it moved `min_bytes` through the rings, then checks
/// the node dropped it and reclaimed everything it held, and still serves.
fn kill_midway(node: &TestNode, args: &[&str], counter: &str, min_bytes: u64) {
    let before = counters(node)[counter];
    let mut client = Process::spawn(node.cli_command(args));
    wait_counters(node, "the transfer started", |c| c[counter] >= before + min_bytes);
    client.kill9();
    let killed = Instant::now();
    let after = wait_counters(node, "the killed client's region and puts reclaimed", |c| {
        c["shm_clients_connected"] == 0
            && c["shm_frames_held"] == 0
            && c["shm_region_bytes_mapped"] == 0
            && c["puts_in_flight:"] == 0
    });
    assert!(after["shm_clients_departed"] >= 1);
    // Well before the 30 s put idle timeout: the node abandons a departed client's puts.
    assert!(killed.elapsed() < Duration::from_secs(10), "reclaimed only after {:?}", killed.elapsed());
}

#[test]
fn a_client_killed_mid_put_or_mid_get_is_reclaimed_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let big = dir.path().join("big");
    std::fs::write(&big, pattern(400 << 20, 3)).unwrap();
    kill_midway(&node, &["put", big.to_str().unwrap(), "--as", "big", "--transport", "shm"], "shm_bulk_bytes", 8 << 20);
    ok(&node.cli(&["put", big.to_str().unwrap(), "--as", "whole", "--transport", "udp"]));
    kill_midway(&node, &["get", "whole", "-o", "/dev/null", "--transport", "shm"], "shm_bulk_bytes", 8 << 20);
    round_trip(&node, dir.path(), "after", &pattern(5 << 20, 9));
}

#[test]
fn random_descriptors_are_dropped_and_counted_and_the_node_is_unharmed() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let socket = beeline::shm::default_socket_path(node.port);
    let link = ShmLink::connect(&socket, node.port).expect("connect over shared memory");
    let mut state = 0x5EED_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..500 {
        let offset = next() as u32;
        let len = next() as u32 % 10_000;
        link.scribble(offset, len, None);
    }
    let scribbled = wait_counters(&node, "rejections counted", |c| {
        c["shm_rejected_out_of_bounds"] + c["shm_rejected_misaligned"] + c["shm_rejected_bad_length"] >= 450
    });
    assert_eq!(scribbled["shm_clients_connected"], 1, "garbage descriptors alone do not end the client");
    // A head far past the tail breaks the ring: the node drops the client.
    link.scribble(0, 0, Some(u32::MAX / 2));
    let broken = wait_counters(&node, "the broken client dropped", |c| {
        c["shm_rejected_bad_index"] >= 1 && c["shm_clients_connected"] == 0
    });
    assert_eq!(broken["shm_region_bytes_mapped"], 0);
    drop(link);
    round_trip(&node, dir.path(), "after-garbage", &pattern(3 << 20, 11));
}

/// Bulk requests the node must not serve: garbage in the frame, a slot that does not
/// exist, more bytes than a slot holds, a put under a get's opcode mix-up. Each is dropped
/// and counted; a get past a chunk's end is answered with an error; the client and node
/// carry on.
#[test]
fn malformed_bulk_requests_are_dropped_and_counted() {
    use beeline_dataplane::wire::{HEADER_LEN, Opcode, Repr};
    let dir = tempfile::tempdir().unwrap();
    // No tagger: its reads of "small" would be bulk requests of their own, at any moment.
    let node = TestNode::start(dir.path(), &["--auto-tag", "false"]);
    round_trip(&node, dir.path(), "small", &pattern(10_000, 5));
    let socket = beeline::shm::default_socket_path(node.port);
    let link = ShmLink::connect(&socket, node.port).expect("connect over shared memory");
    assert_eq!(link.bulk_slots(), beeline::shm::BULK_SLOTS);
    // The node publishes its counters every 100 ms: wait until they show the round trip's
    // put and get, so that nothing of it is counted below.
    let before = wait_counters(&node, "the round trip's bulk put and get", |c| c["shm_bulk_requests"] >= 2);
    let header = |repr: Repr| {
        let mut bytes = [0u8; HEADER_LEN];
        repr.emit(&mut bytes);
        bytes
    };
    assert!(link.send_bulk(&[0xAB; HEADER_LEN]), "garbage");
    assert!(link.send_bulk(&header(Repr { index: 99, total_len: 10, ..Repr::new(Opcode::Get) })), "no such slot");
    let too_long = link.bulk_slot_bytes() as u32 + 1;
    assert!(link.send_bulk(&header(Repr { index: 0, total_len: too_long, ..Repr::new(Opcode::PutFrag) })));
    assert!(link.send_bulk(&header(Repr { index: 0, total_len: 10, ..Repr::new(Opcode::Delete) })), "not put/get");
    let after = wait_counters(&node, "bad bulk requests counted", |c| {
        c["shm_rejected_bad_bulk"] >= before["shm_rejected_bad_bulk"] + 4
    });
    assert_eq!(after["shm_bulk_requests"], before["shm_bulk_requests"], "none was served");
    assert_eq!(after["shm_clients_connected"], 1);
    // Well formed, but for a chunk the node does not have: served, and refused.
    assert!(link.send_bulk(&header(Repr { chunk_id: 42, index: 1, total_len: 10, ..Repr::new(Opcode::Get) })));
    wait_counters(&node, "the get of a missing chunk refused", |c| {
        c["shm_bulk_requests"] > before["shm_bulk_requests"] && c["rejected_not_found"] > before["rejected_not_found"]
    });
    drop(link);
    round_trip(&node, dir.path(), "after-bad-bulk", &pattern(6 << 20, 13));
}

/// What lets a client read a bulk get's answer in place, in its slot, rather than copy it
/// out (`client/bulk.rs`): the node serves a client's bulk requests in ring order, so no
/// earlier request naming a slot, such as a retransmitted get still queued, writes the slot
/// after a later request's answer. Here an older get is sent twice and a newer one into the
/// same slot behind them: once all three are answered, the slot holds the newer chunk.
#[test]
fn a_bulk_slot_holds_the_chunk_of_the_last_request_that_named_it() {
    use beeline_dataplane::wire::{HEADER_LEN, Opcode, Packet, Repr};
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--auto-tag", "false"]);
    let older = pattern(3 << 20, 41);
    let newer = pattern(3 << 20, 42);
    round_trip(&node, dir.path(), "older", &older);
    round_trip(&node, dir.path(), "newer", &newer);
    let key = beeline::keyfile::load(&dir.path().join("cluster.key")).unwrap();
    let address = format!("127.0.0.1:{}", node.port).parse().unwrap();
    let mut client = beeline::client::Client::new(beeline::client::ClientOptions::new(address, key)).unwrap();
    let older_id = client.lookup("older").unwrap().chunk_id(0);
    let newer_id = client.lookup("newer").unwrap().chunk_id(0);
    let link = ShmLink::connect(&beeline::shm::default_socket_path(node.port), node.port).expect("connect");
    let get = |request_id: u64, chunk_id: u128| {
        let mut bytes = [0u8; HEADER_LEN];
        let total_len = 3 << 20;
        Repr { request_id, chunk_id, index: 0, total_len, ..Repr::new(Opcode::Get) }.emit(&mut bytes);
        assert!(link.send_bulk(&bytes), "the request ring has room");
    };
    get(1, older_id);
    get(1, older_id);
    get(2, newer_id);
    let mut answered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.len() < 3 {
        assert!(Instant::now() < deadline, "the node answered {answered:?} of three gets in 10 s");
        link.wait(100);
        link.receive(|bytes| {
            let packet = Packet::new_checked(bytes).expect("the node's answers are well formed");
            let repr = Repr::parse(&packet);
            assert_eq!(repr.opcode, Opcode::GetData, "{repr:?}");
            answered.push(repr.request_id);
        });
    }
    assert_eq!(answered, [1, 1, 2], "answered in the order asked");
    let mut slot = Vec::new();
    assert!(link.read_bulk(0, newer.len(), &mut slot));
    assert!(slot == newer, "the slot holds the older chunk's bytes after the newer get's answer");
}

#[test]
fn two_clients_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let files: Vec<_> = (0..2)
        .map(|index| {
            let path = dir.path().join(format!("file{index}"));
            std::fs::write(&path, pattern(30 << 20, 100 + index)).unwrap();
            path
        })
        .collect();
    let before = counters(&node)["shm_clients_accepted"];
    let children: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let name = format!("two{index}");
            node.cli_command(&["put", path.to_str().unwrap(), "--as", &name, "--transport", "shm"]).spawn().unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    // The node publishes its counters every 100 ms, and two 30 MiB puts can end sooner.
    wait_counters(&node, "both clients counted", |c| c["shm_clients_accepted"] >= before + 2);
    for (index, path) in files.iter().enumerate() {
        let out = dir.path().join(format!("back{index}"));
        ok(&node.cli(&["get", &format!("two{index}"), "-o", out.to_str().unwrap(), "--transport", "shm"]));
        assert!(std::fs::read(&out).unwrap() == std::fs::read(path).unwrap());
    }
}

#[test]
fn another_user_is_refused_by_the_socket_permission() {
    if !is_root() || !common::have("setpriv") {
        println!(
            "SKIP another_user_is_refused_by_the_socket_permission: needs root and setpriv to run a client as nobody"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let socket = beeline::shm::default_socket_path(node.port);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
    let output = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN, "ls", "--transport", "shm", "--node"])
        .arg(format!("127.0.0.1:{}", node.port))
        .output()
        .unwrap();
    assert!(!output.status.success(), "nobody listed files over shared memory");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let refused = counters(&node);
    assert_eq!(refused["shm_clients_accepted"], 0);
}

#[test]
fn a_put_over_shared_memory_survives_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path());
    let data = pattern(100 << 20, 21);
    // All but 24 MiB wait in the pipe until the node is back: the kill lands mid-put.
    let (stdin, mut input) = common::GatedInput::new(data.clone(), 24 << 20);
    let before = counters(&node)["shm_bulk_bytes"];
    let mut put =
        Process::spawn_with_stdin(node.cli_command(&["put", "-", "--as", "big", "--transport", "shm"]), stdin);
    wait_counters(&node, "the put started", |c| c["shm_bulk_bytes"] >= before + (8 << 20));
    assert!(put.exited().is_none(), "the put ended before the restart:\n{}", put.log());
    node.process().kill9();
    node.spawn();
    input.release();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = put.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the put did not finish:\n{}", put.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the put failed across the restart:\n{}", put.log());
    let back = node.cli(&["get", "big", "-o", "-", "--transport", "shm"]);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert!(back.stdout == data, "the file came back different");
}

/// A get over shared memory whose node is killed and restarted part way (the get's output
/// held still, so the kill lands mid-file): the client maps the new node's region, asks
/// again for the chunks it lacks and writes the whole file, byte for byte.
#[test]
fn a_get_over_shared_memory_survives_a_node_restart() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path());
    let path = dir.path().join("big");
    let data = pattern(100 << 20, 22);
    std::fs::write(&path, &data).unwrap();
    ok(&node.cli(&["put", path.to_str().unwrap(), "--transport", "shm"]));
    // The node publishes its counters every 100 ms: wait until they hold all of the put's
    // bulk bytes, or its last chunks would count as "the get started" below before the get
    // even connected (a clean-clone CI run saw that get's connect reset by the kill).
    let before = wait_counters(&node, "the put's bulk bytes", |c| c["shm_bulk_bytes"] >= 100 << 20)["shm_bulk_bytes"];
    // Nobody reads the get's stdout yet: once the pipe is full it stops, a few chunks in.
    let mut get = node
        .cli_command(&["get", "big", "-o", "-", "--transport", "shm"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_counters(&node, "the get started", |c| c["shm_bulk_bytes"] >= before + (8 << 20));
    assert!(get.try_wait().unwrap().is_none(), "the get ended before the restart");
    node.process().kill9();
    node.spawn();
    let mut back = Vec::with_capacity(data.len());
    get.stdout.take().unwrap().read_to_end(&mut back).unwrap();
    let output = get.wait_with_output().unwrap();
    assert!(output.status.success(), "the get failed across the restart: {}", String::from_utf8_lossy(&output.stderr));
    assert!(back.len() == data.len() && back == data, "the file came back different ({} bytes)", back.len());
    // The rest (at least the 76 MiB past the stalled chunks) came from the new node, over
    // shared memory, not through a fallback to UDP.
    wait_counters(&node, "the restarted node served the rest", |c| c["shm_bulk_bytes"] >= 76 << 20);
}

/// A put over shared memory whose node comes back with smaller chunks (`--chunk-bytes-max`
/// lowered across a restart): the new region's bulk slots cannot hold the put's chunk, so
/// the put fails with a one-line error naming the size, and the client does not panic.
#[test]
fn a_put_whose_node_restarts_with_smaller_chunks_fails_cleanly() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path());
    let before = counters(&node)["shm_bulk_bytes"];
    let mut put = node
        .cli_command(&["put", "-", "--as", "f", "--transport", "shm"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = put.stdin.take().unwrap();
    input.write_all(&pattern(12 << 20, 23)).unwrap();
    wait_counters(&node, "the put started", |c| c["shm_bulk_bytes"] >= before + (8 << 20));
    node.process().kill9();
    node.extra = vec!["--chunk-bytes-max".into(), (1u32 << 20).to_string()];
    node.spawn();
    // The rest of the file: the pipe takes it once the put reads again (or breaks, if the
    // put already gave up).
    let _ = input.write_all(&pattern(4 << 20, 24));
    drop(input);
    let output = put.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a 4 MiB chunk went into a node that takes 1 MiB: {stderr}");
    assert_ne!(output.status.code(), Some(101), "the client panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.to_lowercase().contains("large"), "the error does not say the chunk is too large: {stderr}");
    assert!(node.cli(&["stat", "f"]).stdout.is_empty(), "a partial file was recorded");
}

/// A large put over shared memory goes from the client's bulk slot to the disk with
/// O_DIRECT: the store counts its chunks' bytes as written direct and the node's page
/// cache holds almost none of them, while the same file put over UDP goes through the page
/// cache. A node started with `--direct-writes false` writes both through the page cache.
/// Every copy reads back byte for byte, also after the node is killed and restarted.
#[test]
fn large_puts_over_shared_memory_are_written_direct_to_the_disk() {
    let test = "large_puts_over_shared_memory_are_written_direct_to_the_disk";
    let data = pattern((8 << 20) + 12345, 31);
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let flag = format!("--direct-writes={direct}");
        // No tagger: it would read the file back into the page cache.
        let mut node = TestNode::start(dir.path(), &[&flag, "--auto-tag", "false"]);
        let source = dir.path().join("file");
        std::fs::write(&source, &data).unwrap();
        let before = counters(&node);
        ok(&node.cli(&["put", source.to_str().unwrap(), "--as", "over-shm", "--transport", "shm"]));
        let after = wait_counters(&node, "the put counted", |c| {
            c["store_direct_written_bytes"] + c["store_page_cache_written_bytes"]
                >= before["store_direct_written_bytes"] + before["store_page_cache_written_bytes"] + data.len() as u64
        });
        let direct_bytes = after["store_direct_written_bytes"] - before["store_direct_written_bytes"];
        if direct && on_tmpfs(dir.path()) {
            beeline_dataplane::testkit::skip(test, "the temporary directory is on tmpfs, which does no direct I/O");
            return;
        }
        if direct {
            // The two 4 MiB chunks, whole; the 12345-byte last chunk is too short to go direct.
            assert_eq!(direct_bytes, 8 << 20, "bytes written direct");
            if Command::new("fincore").arg("--version").output().is_ok() {
                let cached = node.segment_bytes_cached();
                assert!(cached < 1 << 20, "the node's page cache holds {cached} bytes after a direct put");
            }
        } else {
            assert_eq!(direct_bytes, 0, "--direct-writes false wrote direct");
        }
        let before = counters(&node);
        ok(&node.cli(&["put", source.to_str().unwrap(), "--as", "over-udp", "--transport", "udp"]));
        let after = wait_counters(&node, "the UDP put counted", |c| {
            c["store_page_cache_written_bytes"] >= before["store_page_cache_written_bytes"] + data.len() as u64
        });
        assert_eq!(after["store_direct_written_bytes"], before["store_direct_written_bytes"], "a UDP put went direct");

        node.process().kill9();
        node.spawn();
        for name in ["over-shm", "over-udp"] {
            let back = node.cli(&["get", name, "-o", "-", "--transport", "shm"]);
            assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
            assert!(back.stdout == data, "{name} came back different (direct writes {direct})");
        }
    }
}

/// Whether `dir` is on a tmpfs (`stat -f`).
fn on_tmpfs(dir: &std::path::Path) -> bool {
    let out = Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output().expect("run stat");
    String::from_utf8_lossy(&out.stdout).trim() == "tmpfs"
}

/// A client that cuts its region's file to nothing, which would make the node die of
/// SIGBUS at its next look at the client's ring: the node sealed the file's size, so the
/// cut fails, and the node reads the ring the client then rings, drops the client's garbage,
/// and serves on.
#[test]
fn a_client_cannot_shrink_its_region_under_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let socket = beeline::shm::default_socket_path(node.port);
    let link = ShmLink::connect(&socket, node.port).expect("connect over shared memory");
    let refused = link.try_shrink_region().expect_err("the region's file could be shrunk");
    assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "{refused}");
    let before = counters(&node)["shm_rejected_out_of_bounds"];
    link.scribble(u32::MAX - 8, 16, None);
    wait_counters(&node, "the ring read after the attempt", |c| c["shm_rejected_out_of_bounds"] > before);
    drop(link);
    round_trip(&node, dir.path(), "after-shrink", &pattern(3 << 20, 12));
}
