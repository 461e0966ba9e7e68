//! Issue #11's integrity on the node: a real node process serving a chunk whose bytes
//! were flipped in its segment file refuses to send them ("corrupt"), counts it, and its
//! background scrub finds such a chunk by itself; in a two-node cluster (real
//! redis-server) the client reads the other replica instead.

mod common;
use common::loopback::{Loopback, chunk_records, flip, skip_without_redis};
use common::node::{TestNode, free_tcp_address, metric, ok, one_line_error};
use common::pattern;

use std::path::Path;
use std::time::{Duration, Instant};

const CHUNK_BYTES: usize = 1 << 20;

/// Flips 4 bytes in the middle of the stored copy of chunk `index` (of any file) under a
/// node's data directory; returns how many records it changed.
fn corrupt_chunk(data_dir: &Path, index: u64) -> usize {
    chunk_records(&data_dir.join("chunks"))
        .iter()
        .filter(|record| record.id as u64 == index && record.len > 8)
        .filter(|record| flip(&record.segment, record.payload_offset + u64::from(record.len) / 2, &[0x5A; 4]))
        .count()
}

/// Polls `metric` on the node's /metrics until `done` holds for it (bounded).
fn wait_metric(address: &str, name: &str, what: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = metric(address, name).filter(|value| done(*value)) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {name} = {:?} after 60 s", metric(address, name));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Single node, scrub off: `get -o -` writes only whole verified chunks before the bad
/// one (never a byte of it), fails in one line naming scrub and repair, and the node
/// counts the corrupt answer; `get -o FILE` leaves no file. Other chunks still read.
#[test]
fn a_node_refuses_to_serve_a_corrupt_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_tcp_address();
    let node = TestNode::start(dir.path(), &["--metrics-listen", &metrics, "--scrub-bytes-per-s", "0"]);
    let content = pattern(3 * CHUNK_BYTES + 4321, 7);
    let source = dir.path().join("f");
    std::fs::write(&source, &content).unwrap();
    ok(&node.cli(&["put", source.to_str().unwrap(), "--chunk-bytes", &CHUNK_BYTES.to_string()]));
    let other = pattern(70_000, 8);
    std::fs::write(dir.path().join("g"), &other).unwrap();
    ok(&node.cli(&["put", dir.path().join("g").to_str().unwrap()]));
    assert_eq!(corrupt_chunk(&dir.path().join("data"), 1), 1);

    let output = node.cli(&["get", "f", "-o", "-"]);
    let message = one_line_error(&output);
    assert!(message.contains("damaged copy") && message.contains("beeline cluster repair"), "{message}");
    let written = output.stdout.len();
    assert_eq!(written, CHUNK_BYTES, "stdout must get chunk 0, verified, and nothing of chunk 1");
    assert!(output.stdout == content[..written], "stdout got bytes that differ from the file");
    println!("stdout received {written} verified bytes before the corrupt chunk");

    let out = dir.path().join("out");
    one_line_error(&node.cli(&["get", "f", "-o", out.to_str().unwrap()]));
    assert!(!out.exists(), "a failed get left {}", out.display());
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .all(|entry| { !entry.unwrap().file_name().to_string_lossy().contains("beeline-partial") })
    );

    // Another file on the same node is unaffected.
    let output = node.cli(&["get", "g", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == other);

    let answered = wait_metric(&metrics, "beeline_get_corrupt_total", "corrupt answers counted", |value| value >= 2.0);
    println!("beeline_get_corrupt_total {answered}");
    assert!(metric(&metrics, "beeline_corrupt_chunks") == Some(1.0), "one chunk marked corrupt");
}

/// Single node, small scrub rate: the background scrub finds a chunk corrupted on disk
/// with no client reading it, counts it and marks it, and completes passes.
#[test]
fn the_background_scrub_finds_a_corrupt_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_tcp_address();
    let rate = 2u64 << 20;
    let node = TestNode::start(dir.path(), &["--metrics-listen", &metrics, "--scrub-bytes-per-s", &rate.to_string()]);
    let content = pattern(3 * CHUNK_BYTES, 9);
    let source = dir.path().join("f");
    std::fs::write(&source, &content).unwrap();
    ok(&node.cli(&["put", source.to_str().unwrap(), "--chunk-bytes", &CHUNK_BYTES.to_string()]));
    // A clean pass first: nothing is reported corrupt.
    let started = Instant::now();
    wait_metric(&metrics, "beeline_scrub_passes_total", "a first scrub pass", |value| value >= 1.0);
    let first_pass_ms = started.elapsed().as_millis();
    assert_eq!(metric(&metrics, "beeline_scrub_corrupt_chunks_total"), Some(0.0));
    assert!(metric(&metrics, "beeline_scrub_last_pass_timestamp_seconds").is_some_and(|t| t > 1.0e9));

    assert_eq!(corrupt_chunk(&dir.path().join("data"), 2), 1);
    let found = Instant::now();
    wait_metric(&metrics, "beeline_scrub_corrupt_chunks_total", "the scrub finding the flipped chunk", |value| {
        value == 1.0
    });
    println!(
        "first pass over 3 MiB at {rate} B/s: {first_pass_ms} ms; corruption found {} ms after the flip",
        found.elapsed().as_millis()
    );
    let scrubbed = metric(&metrics, "beeline_scrub_bytes_total").unwrap();
    assert!(scrubbed >= (3 * CHUNK_BYTES) as f64, "{scrubbed}");
    let progress = metric(&metrics, "beeline_scrub_pass_progress_ratio").unwrap();
    assert!((0.0..=1.0).contains(&progress), "{progress}");

    // Marked: a get answers corrupt without the client ever having read it before.
    let message = one_line_error(&node.cli(&["get", "f", "-o", "-"]));
    assert!(message.contains("damaged copy"), "{message}");
}

/// Two nodes: the replica asked first holds a corrupt copy; the node answers "corrupt"
/// (counted in its status), the client reads the other replica, and `cluster scrub`
/// learns of the bad copy from the node's answer.
#[test]
fn a_cluster_get_fails_over_from_a_node_answering_corrupt() {
    if skip_without_redis("a_cluster_get_fails_over_from_a_node_answering_corrupt") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Loopback::start_with_args(dir.path(), 2, 0, &["--scrub-bytes-per-s", "0"]);
    let data = pattern(2 * CHUNK_BYTES + 99, 13);
    cluster.put("f", &data);
    let replicas = cluster.replicas("f", 0);
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    let bad = cluster.index_of(&replicas[0]);
    assert_eq!(cluster.corrupt(bad, 0), 1);
    let corrupt_answers = || {
        let address = format!("127.0.0.1:{}", cluster.nodes[bad].1);
        let status = ok(&cluster.cli(&["node", "status", "--node", &address]));
        let line = status.lines().find(|line| line.trim_start().starts_with("rejected_corrupt")).unwrap_or("");
        line.split_whitespace().last().and_then(|value| value.parse::<u64>().ok()).unwrap_or(0)
    };
    let before = corrupt_answers();

    let output = cluster.cli(&["get", "f", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data, "get returned different bytes");
    // The node publishes its counters every 100 ms: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = corrupt_answers();
    while after <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = corrupt_answers();
    }
    assert!(after > before, "the bad node's corrupt answers did not rise: {before} -> {after}");

    // `cluster scrub` learns of the bad copy from the node's answer and repair replaces it
    // (deleting the node's marked copy and writing a verified one in its place).
    let scrubbed = ok(&cluster.cli(&["cluster", "scrub"]));
    assert!(scrubbed.contains(&replicas[0]) && scrubbed.contains("replaced 1 corrupt"), "{scrubbed}");
    let good = 1 - bad;
    cluster.stop(good);
    cluster.wait_live(1);
    let output = cluster.cli(&["get", "f", "-o", "-"]);
    assert!(output.status.success(), "the replaced copy: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data, "the replaced copy differs");
}
