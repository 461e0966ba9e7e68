//! End to end through the `beeline` binary and the `udp` backend: real processes, real
//! sockets, real disks, and nodes that really die.

mod common;
use common::node::{BIN, TestNode, ok, one_line_error};
use common::{free_port, is_root, pattern};

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn files_of_edge_sizes_round_trip_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let mib4 = 4 << 20;
    let sizes = [0usize, 1, mib4 - 1, mib4, mib4 + 1, 50 << 20];
    for (index, size) in sizes.iter().enumerate() {
        let path = dir.path().join(format!("file-{size}"));
        std::fs::write(&path, pattern(*size, index as u64)).unwrap();
        ok(&node.cli(&["put", path.to_str().unwrap()]));
    }
    let listing = ok(&node.cli(&["ls"]));
    for size in sizes {
        assert!(listing.contains(&format!("file-{size}")), "{listing}");
        let back = dir.path().join(format!("back-{size}"));
        ok(&node.cli(&["get", &format!("file-{size}"), "-o", back.to_str().unwrap()]));
        let sent = std::fs::read(dir.path().join(format!("file-{size}"))).unwrap();
        let got = std::fs::read(&back).unwrap();
        assert!(sent == got, "file of {size} bytes differs after the round trip");
    }
    // `-o -` streams to stdout; `--as` names it.
    let small = dir.path().join("small");
    std::fs::write(&small, b"hello beeline\n").unwrap();
    ok(&node.cli(&["put", small.to_str().unwrap(), "--as", "greeting.txt"]));
    assert_eq!(ok(&node.cli(&["get", "greeting.txt", "-o", "-"])), "hello beeline\n");
    let stat = ok(&node.cli(&["stat", "file-4194305"]));
    assert!(stat.contains("size_bytes:  4194305") && stat.contains("chunks:      2 x 4194304"), "{stat}");
    // Standard input with a name.
    let mut put = node
        .cli_command(&["put", "-", "--as", "from-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin.take().unwrap().write_all(&pattern(5_000_000, 9)).unwrap();
    ok(&put.wait_with_output().unwrap());
    let streamed = node.cli(&["get", "from-stdin", "-o", "-"]);
    assert!(streamed.status.success());
    assert!(streamed.stdout == pattern(5_000_000, 9));
    // Removing frees the name; getting it again is a one-line error.
    ok(&node.cli(&["rm", "file-1"]));
    let missing = one_line_error(&node.cli(&["get", "file-1"]));
    assert!(missing.contains("no file named \"file-1\""), "{missing}");
    let status = ok(&node.cli(&["node", "status"]));
    assert!(status.contains("files:         7"), "{status}");
}

#[test]
fn killed_node_keeps_every_acknowledged_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        let dir = dir.path().to_owned();
        let port = node.port;
        std::thread::spawn(move || {
            for index in 0..10_000u64 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let name = format!("stream-{index}");
                let data = pattern(300_000 + (index as usize * 77_777) % 5_000_000, index);
                let path = dir.join(&name);
                std::fs::write(&path, &data).unwrap();
                let output = Command::new(BIN)
                    .args(["put", path.to_str().unwrap(), "--node", &format!("127.0.0.1:{port}"), "--key-file"])
                    .arg(dir.join("cluster.key"))
                    .output()
                    .unwrap();
                // Exit code 0 is the acknowledgement: the file is durable on the node.
                if output.status.success() {
                    acknowledged.lock().unwrap().push((name, data));
                }
            }
        })
    };
    // Kill the node in the middle of the stream, once several puts were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().unwrap().len() < 6 {
        assert!(Instant::now() < deadline, "puts were not acknowledged");
        std::thread::sleep(Duration::from_millis(10));
    }
    node.process().kill9();
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    node.spawn();
    let acknowledged = acknowledged.lock().unwrap();
    assert!(acknowledged.len() >= 6);
    for (name, data) in acknowledged.iter() {
        let output = node.cli(&["get", name, "-o", "-"]);
        assert!(
            output.status.success(),
            "acknowledged {name} lost after kill -9: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout == *data, "acknowledged {name} came back different after kill -9");
    }
    // The restarted node keeps serving new puts.
    let path = dir.path().join("after");
    std::fs::write(&path, pattern(1_000_000, 99)).unwrap();
    ok(&node.cli(&["put", path.to_str().unwrap()]));
}

#[test]
fn sigterm_stops_the_node_cleanly_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let path = dir.path().join("kept");
    std::fs::write(&path, pattern(3_000_000, 5)).unwrap();
    ok(&node.cli(&["put", path.to_str().unwrap()]));
    let status = node.process().terminate();
    assert!(status.success(), "node exited with {status} on SIGTERM");
    assert!(node.process().logged("node stopped"));
    node.spawn();
    assert!(node.cli(&["get", "kept", "-o", "-"]).stdout == pattern(3_000_000, 5));
}

#[test]
fn unreachable_node_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let started = Instant::now();
    let output = Command::new(BIN)
        .args(["ls", "--node", &format!("127.0.0.1:{}", free_port()), "--key-file"])
        .arg(&key)
        .output()
        .unwrap();
    let message = one_line_error(&output);
    assert!(message.contains("did not answer"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "retries are not bounded");
    // No key at all: says where it looked and what to do.
    let output = Command::new(BIN).args(["ls", "--key-file"]).arg(dir.path().join("absent.key")).output().unwrap();
    let message = one_line_error(&output);
    assert!(message.contains("no cluster key") && message.contains("beeline node run"), "{message}");
}

#[test]
fn bad_config_names_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:7000\"\nwindow_fragments = 0\n").unwrap();
    let output = Command::new(BIN).args(["node", "run", "--config"]).arg(&config).output().unwrap();
    let message = one_line_error(&output);
    assert!(
        message.contains("node.toml") && message.contains("`window_fragments`") && message.contains("must be"),
        "{message}"
    );
    std::fs::write(&config, "lissen = \"127.0.0.1:7000\"\n").unwrap();
    let message = one_line_error(&Command::new(BIN).args(["node", "run", "--config"]).arg(&config).output().unwrap());
    assert!(message.contains("line 1") && message.contains("lissen"), "{message}");
}

#[test]
fn full_disk_is_an_error_the_client_sees_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--capacity-bytes", "12000000"]);
    let path = dir.path().join("big");
    std::fs::write(&path, pattern(20_000_000, 1)).unwrap();
    let message = one_line_error(&node.cli(&["put", path.to_str().unwrap()]));
    assert!(message.contains("disk is full"), "{message}");
    // The node is still up and serves what fits.
    let small = dir.path().join("small");
    std::fs::write(&small, pattern(1_000_000, 2)).unwrap();
    ok(&node.cli(&["put", small.to_str().unwrap()]));
    assert!(node.cli(&["get", "small", "-o", "-"]).stdout == pattern(1_000_000, 2));
}

#[test]
fn real_enospc_on_a_tiny_tmpfs() {
    if !is_root() {
        beeline_dataplane::testkit::skip("real_enospc_on_a_tiny_tmpfs", "needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("data");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(&mount).status().unwrap();
    assert!(mounted.success(), "mount tmpfs failed");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let node = TestNode::start(dir.path(), &[]);
    let path = dir.path().join("too-big");
    std::fs::write(&path, pattern(40_000_000, 3)).unwrap();
    let message = one_line_error(&node.cli(&["put", path.to_str().unwrap()]));
    assert!(message.contains("disk is full"), "{message}");
    let ping = node.cli(&["node", "ping"]);
    assert!(ping.status.success(), "node died on ENOSPC");
}
