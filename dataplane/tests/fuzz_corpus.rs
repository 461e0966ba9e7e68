//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same entry
//! points the `cargo fuzz` targets call, so every input the fuzzer ever kept, crashes
//! included once fixed, is re-checked by a plain `cargo test` without libFuzzer.
//!
//! The seed files (`seed-*`) are produced by `beeline_dataplane::testkit::fuzzing::seed_corpus`;
//! after changing the wire format, the fuzz key or the fuzzed node's preloaded state,
//! regenerate them with
//! `cargo test -p beeline-dataplane --test fuzz_corpus -- --ignored write_seed_corpus`.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use beeline_dataplane::testkit::fuzzing::{Seed, fuzz_client, fuzz_frame, fuzz_handshake, fuzz_packet, seed_corpus};

/// A fuzz target's entry point.
type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] =
    [("packet", fuzz_packet), ("client_reply", fuzz_client), ("frame", fuzz_frame), ("handshake", fuzz_handshake)];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

/// Every regular file of a target's corpus, sorted so failures are reported stably.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|error| panic!("cannot read corpus {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> =
        entries.map(|entry| entry.expect("readable directory entry").path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

fn replay(target: &str, run: Target) {
    let files = corpus_files(target);
    // An empty or missing corpus would make this test pass without checking anything.
    assert!(!files.is_empty(), "corpus {} is empty", corpus_dir(target).display());
    let mut failures = Vec::new();
    for file in &files {
        let bytes = fs::read(file).unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()));
        // Keep going after a failure so one run names every failing input.
        if panic::catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err() {
            failures.push(file.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn packet_corpus_replays() {
    replay(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn client_reply_corpus_replays() {
    replay(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn frame_corpus_replays() {
    replay(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn handshake_corpus_replays() {
    replay(TARGETS[3].0, TARGETS[3].1);
}

/// Stale seeds silently stop reaching the paths they were made for (a changed key makes
/// every one fail the MAC), so the committed ones must be exactly what the generator makes.
#[test]
fn committed_seeds_match_the_generator() {
    let seeds = seed_corpus();
    let mut stale = Vec::new();
    for Seed { target, name, bytes } in &seeds {
        let path = corpus_dir(target).join(name);
        if fs::read(&path).ok().as_ref() != Some(bytes) {
            stale.push(path.display().to_string());
        }
    }
    for (target, _) in TARGETS {
        let expected: BTreeSet<&str> =
            seeds.iter().filter(|seed| seed.target == target).map(|seed| seed.name.as_str()).collect();
        for file in corpus_files(target) {
            let name = file.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            if name.starts_with("seed-") && !expected.contains(name) {
                stale.push(file.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "seed corpus out of date, regenerate with \
         `cargo test -p beeline-dataplane --test fuzz_corpus -- --ignored write_seed_corpus`:\n{}",
        stale.join("\n")
    );
}

/// Writes the seed corpus; not a check, so ignored by default.
#[test]
#[ignore = "generator: writes fuzz/corpus/*/seed-*"]
fn write_seed_corpus() {
    let seeds = seed_corpus();
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        for file in corpus_files(target) {
            let is_seed = file.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("seed-"));
            if is_seed {
                fs::remove_file(&file).expect("remove old seed");
            }
        }
    }
    for Seed { target, name, bytes } in &seeds {
        fs::write(corpus_dir(target).join(name), bytes).expect("write seed");
    }
    println!("wrote {} seeds", seeds.len());
}
