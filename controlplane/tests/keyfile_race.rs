//! Several `beeline node run` processes released at one instant on one fresh key path:
//! every one of them must come up with the same cluster key (the first session's
//! `./ci/demo.sh` lost a node to `cannot write cluster key file …: File exists`).

mod common;
use common::free_port;
use common::process::Process;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_beeline");
const NODES: usize = 4;
const ROUNDS: usize = 12;

/// Spawns a node that first blocks reading its standard input, a pipe shared by every node
/// of the round: closing the pipe's one write end releases them all at once (a barrier).
fn spawn_held(dir: &Path, index: usize, port: u16, key: &Path, gate: &std::io::PipeReader) -> Process {
    let mut command = Command::new("sh");
    command
        .args(["-c", "read _ignored; exec \"$@\"", "held-node", BIN, "node", "run", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join(format!("data-{index}")))
        .arg("--key-file")
        .arg(key)
        .args(["--arena-frames", "1024", "--hugepages", "off"]);
    // Killed on drop, so a failed round leaves no node behind.
    Process::spawn_with_stdin(command, Stdio::from(gate.try_clone().unwrap()))
}

#[test]
fn nodes_released_together_share_one_new_key() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..ROUNDS {
        let round_dir = dir.path().join(format!("round-{round}"));
        let key = round_dir.join("keys/cluster.key");
        let (gate, release) = std::io::pipe().unwrap();
        let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        let mut children: Vec<Process> =
            ports.iter().enumerate().map(|(index, port)| spawn_held(&round_dir, index, *port, &key, &gate)).collect();
        drop(gate);
        drop(release); // every node reads end-of-file now, together

        // Every node must answer a ping made with the one key on disk: a node that lost the
        // race and failed would exit, and one holding another key would never answer.
        for (index, port) in ports.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = children[index].exited() {
                    let log = children[index].log();
                    panic!("round {round}: node {index} exited with {status}: {log}");
                }
                let ping = Command::new(BIN)
                    .args(["node", "ping", "--node", &format!("127.0.0.1:{port}"), "--key-file"])
                    .arg(&key)
                    .output()
                    .unwrap();
                if ping.status.success() {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: node {index} did not answer within 30 s");
            }
        }
        let leftovers: Vec<_> =
            std::fs::read_dir(key.parent().unwrap()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("cluster.key")], "round {round}: temporary files left");
        drop(children);
    }
}
