//! End to end through the `beeline` binary and the `udp` backend: real processes, real
//! sockets, real disks, and nodes that really die.

mod common;
use common::node::{BIN, TestNode, ok, one_line_error};
use common::{Tmpfs, free_port, is_root, pattern};

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
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
    write_private_key(&key);
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

/// A data directory written by a newer Beeline (another `FORMAT`) is refused in one line,
/// before anything in it is touched; the node's own directory gets format 1 and keeps
/// serving across restarts.
#[test]
fn a_data_directory_of_a_newer_format_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let format = dir.path().join("data").join("FORMAT");
    assert_eq!(std::fs::read_to_string(&format).unwrap(), "beeline-data 1\n");
    let small = dir.path().join("small");
    std::fs::write(&small, pattern(100_000, 5)).unwrap();
    ok(&node.cli(&["put", small.to_str().unwrap()]));
    node.process().terminate();
    std::fs::write(&format, "beeline-data 2\n").unwrap();
    let refused = Command::new(BIN)
        .args(["node", "run", "--listen", "127.0.0.1:0", "--hugepages", "off", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--key-file")
        .arg(dir.path().join("cluster.key"))
        .output()
        .unwrap();
    let message = one_line_error(&refused);
    assert!(message.contains("has format 2") && message.contains("FORMAT"), "{message}");
    std::fs::write(&format, "beeline-data 1\n").unwrap();
    node.spawn();
    assert!(node.cli(&["get", "small", "-o", "-"]).stdout == pattern(100_000, 5));
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
    let _unmount = Tmpfs::mount(&mount, "16m");
    let node = TestNode::start(dir.path(), &[]);
    let path = dir.path().join("too-big");
    std::fs::write(&path, pattern(40_000_000, 3)).unwrap();
    let message = one_line_error(&node.cli(&["put", path.to_str().unwrap()]));
    assert!(message.contains("disk is full"), "{message}");
    let ping = node.cli(&["node", "ping"]);
    assert!(ping.status.success(), "node died on ENOSPC");
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A node with one stored file `f` and an empty directory `out` to get it into.
fn node_with_one_file(dir: &Path, content: &[u8]) -> (TestNode, PathBuf) {
    let node = TestNode::start(dir, &[]);
    let source = dir.join("f");
    std::fs::write(&source, content).unwrap();
    ok(&node.cli(&["put", source.to_str().unwrap()]));
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    (node, out)
}

/// Issue #11's reproductions of `get -o`: a character device stays a device (on a node of
/// our own, never on `/dev/null`), a link planted at the old fixed temporary name is not
/// followed, a directory receives the file under its base name, a FIFO is written through.
#[test]
fn get_output_never_replaces_devices_or_follows_planted_links() {
    let dir = tempfile::tempdir().unwrap();
    let (node, out) = node_with_one_file(dir.path(), b"payload\n");
    let get = |target: &Path| node.cli(&["get", "f", "-o", target.to_str().unwrap()]);
    if is_root() {
        let device = out.join("n");
        common::sh(&["mknod", device.to_str().unwrap(), "c", "1", "3"]);
        ok(&get(&device));
        assert!(std::fs::symlink_metadata(&device).unwrap().file_type().is_char_device(), "the device was replaced");
    } else {
        beeline_dataplane::testkit::skip("get_output_never_replaces_devices (device part)", "needs root to mknod");
        std::fs::write(out.join("n"), b"").unwrap();
    }
    let victim = dir.path().join("target");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("y.beeline-partial")).unwrap();
    ok(&get(&out.join("y")));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read(out.join("y")).unwrap(), b"payload\n");
    let somedir = out.join("somedir");
    std::fs::create_dir(&somedir).unwrap();
    let wrote = ok(&get(&somedir));
    assert!(wrote.contains("somedir/f"), "{wrote}");
    assert_eq!(std::fs::read(somedir.join("f")).unwrap(), b"payload\n");
    let fifo = out.join("pipe");
    common::sh(&["mkfifo", fifo.to_str().unwrap()]);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    ok(&get(&fifo));
    assert_eq!(reader.join().unwrap(), b"payload\n");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(entries(&out), ["n", "pipe", "somedir", "y", "y.beeline-partial"]);
}

/// A get that fails (no such file, or a byte on the node's disk flipped, so the node refuses
/// the copy) leaves the output as it was and no partial file.
#[test]
fn failed_get_leaves_the_output_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let content = pattern(300_000, 11);
    let (node, out) = node_with_one_file(dir.path(), &content);
    let existing = out.join("existing");
    std::fs::write(&existing, b"old content").unwrap();
    one_line_error(&node.cli(&["get", "absent", "-o", out.join("new").to_str().unwrap()]));
    one_line_error(&node.cli(&["get", "absent", "-o", existing.to_str().unwrap()]));
    corrupt_on_disk(&dir.path().join("data"), &content[100_000..100_064]);
    // The node checks its stored checksum and refuses to send the damaged copy.
    let message = one_line_error(&node.cli(&["get", "f", "-o", existing.to_str().unwrap()]));
    assert!(message.contains("damaged copy"), "{message}");
    let message = one_line_error(&node.cli(&["get", "f", "-o", out.to_str().unwrap()]));
    assert!(message.contains("damaged copy"), "{message}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"old content");
    assert_eq!(entries(&out), ["existing"]);
}

/// Flips four bytes of the first stored copy of `needle` in the node's segment files.
fn corrupt_on_disk(data_dir: &Path, needle: &[u8]) {
    use std::os::unix::fs::FileExt;
    let chunks = data_dir.join("chunks");
    for name in entries(&chunks).iter().filter(|name| name.starts_with("seg-")) {
        let path = chunks.join(name);
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|window| window == needle) {
            let flipped: Vec<u8> = needle[..4].iter().map(|byte| !byte).collect();
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&flipped, at as u64).unwrap();
            return;
        }
    }
    panic!("the content is in no segment file under {}", chunks.display());
}

/// Ctrl-C (SIGINT), SIGTERM or SIGHUP during a get removes the temporary file: no destructor runs
/// then. A node that never answers keeps the get waiting with its temporary file open.
#[test]
fn interrupted_get_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    write_private_key(&key);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let mut get = Command::new(BIN)
            .args(["get", "f", "-o"])
            .arg(out.join("f"))
            .args(["--node", &format!("127.0.0.1:{}", free_port()), "--key-file"])
            .arg(&key)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !entries(&out).iter().any(|name| name.ends_with(".beeline-partial")) {
            assert!(Instant::now() < deadline, "no temporary file appeared: {:?}", entries(&out));
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(get.id() as i32, signal) };
        let status = get.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(signal), "{status}");
        assert!(entries(&out).is_empty(), "left behind after signal {signal}: {:?}", entries(&out));
    }
}

fn write_private_key(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    writeln!(file, "{}", "ab".repeat(32)).unwrap();
}

/// Issue #11: a 9,000-byte name made `stat` panic (exit 101) and 4,000-byte ones blamed the
/// cluster key. Every command that carries a name refuses it in one line before sending
/// anything, so the answer is the same with no node and no Redis at all.
#[test]
fn too_long_names_are_one_line_errors_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    write_private_key(&key);
    let file = dir.path().join("small");
    std::fs::write(&file, b"x").unwrap();
    let nowhere = format!("127.0.0.1:{}", free_port());
    for len in [256, 4000, 9000] {
        let name = "a".repeat(len);
        let commands: [Vec<&str>; 6] = [
            vec!["stat", &name],
            vec!["get", &name],
            vec!["get", &name, "-o", "-"],
            vec!["rm", &name],
            vec!["put", file.to_str().unwrap(), "--as", &name],
            vec!["tag", &name, "t", "--metadata", "redis://127.0.0.1:1"],
        ];
        for args in commands {
            let output =
                Command::new(BIN).args(&args).args(["--node", &nowhere, "--key-file"]).arg(&key).output().unwrap();
            assert_eq!(output.status.code(), Some(1), "{} with a {len}-byte name: {output:?}", args[0]);
            let message = one_line_error(&output);
            assert!(message.contains(&format!("{len} bytes long")), "{} with {len} bytes: {message}", args[0]);
        }
    }
    assert!(entries(dir.path()).len() == 2, "something was written: {:?}", entries(dir.path()));
}

/// A name of the longest accepted size (1,024 bytes, parts of up to 255) goes through every
/// command against a real node.
#[test]
fn the_longest_names_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (node, out) = node_with_one_file(dir.path(), b"deep\n");
    let part = "p".repeat(255);
    let name = format!("{}/{part}/{part}/{part}/f", &part[1..]);
    assert_eq!(name.len(), 1024);
    ok(&node.cli(&["put", dir.path().join("f").to_str().unwrap(), "--as", &name]));
    assert!(ok(&node.cli(&["ls"])).contains(&name));
    assert!(ok(&node.cli(&["stat", &name])).contains("size_bytes:  5"));
    ok(&node.cli(&["get", &name, "-o", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"deep\n");
    ok(&node.cli(&["rm", &name]));
    let message = one_line_error(&node.cli(&["put", dir.path().join("f").to_str().unwrap(), "--as", &(name + "x")]));
    assert!(message.contains("1025 bytes long"), "{message}");
}

/// New names may not hide characters (bidi overrides, zero-width, controls): the client
/// refuses them, and so does the node for a client that does not check. A file stored under
/// such a name before the rule stays reachable by stat, get and rm.
#[test]
fn invisible_characters_are_refused_on_put_but_old_names_stay_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let old = "invoice\u{202E}fdp.exe";
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    {
        use beeline::metadata::Metadata;
        let mut metadata = beeline::metadata::EmbeddedMetadata::open(&dir.path().join("data/metadata.redb")).unwrap();
        let record = beeline::control::FileRecord {
            name: old.into(),
            file_id: 7,
            size_bytes: 0,
            chunk_bytes: 4096,
            blake3: *blake3::hash(b"").as_bytes(),
            created_unix_ms: 0,
        };
        metadata.put_file(&record).unwrap();
    }
    let (node, out) = node_with_one_file(dir.path(), b"x");
    for bad in ["invoice\u{202E}fdp.exe", "a\u{200B}b", "bell\u{7}", "\u{FEFF}bom", "x\u{2066}y"] {
        let message = one_line_error(&node.cli(&["put", dir.path().join("f").to_str().unwrap(), "--as", bad]));
        let code =
            format!("U+{:04X}", u32::from(bad.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '.').unwrap()));
        assert!(message.contains(&code), "{bad:?}: {message}");
    }
    let mut client = beeline::client::Client::new(beeline::client::ClientOptions::new(
        format!("127.0.0.1:{}", node.port).parse().unwrap(),
        beeline::keyfile::load(&dir.path().join("cluster.key")).unwrap(),
    ))
    .unwrap();
    let sneaky = beeline::control::FileRecord { name: "b\u{202D}c".into(), file_id: 9, ..client.lookup(old).unwrap() };
    let refused = client.control(&beeline::control::ControlRequest::CommitFile(sneaky)).unwrap_err().to_string();
    assert!(refused.contains("U+202D"), "the node accepted a hidden character: {refused}");
    assert!(ok(&node.cli(&["stat", old])).contains(old));
    ok(&node.cli(&["get", old, "-o", out.join("old").to_str().unwrap()]));
    assert_eq!(std::fs::read(out.join("old")).unwrap(), b"");
    ok(&node.cli(&["rm", old]));
}

/// A key file others may read is still used, with one warning line naming the file and
/// the fix; a private one gives no warning.
#[test]
fn a_key_file_open_to_others_is_used_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let key = dir.path().join("cluster.key");
    let quiet = node.cli(&["ls"]);
    ok(&quiet);
    assert!(quiet.stderr.is_empty(), "{}", String::from_utf8_lossy(&quiet.stderr));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = node.cli(&["ls"]);
    ok(&warned);
    let stderr = String::from_utf8_lossy(&warned.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("beeline: warning: cluster key file"), "{stderr}");
    assert!(stderr.contains("(mode 0644)") && stderr.ends_with(&format!("chmod 600 {}", key.display())), "{stderr}");
}

/// Bytes of the node's segment files: what its chunks take on disk.
fn segment_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("chunks"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("seg-"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

/// The node's `used_bytes` as `node status` prints it.
fn used_bytes(node: &TestNode) -> u64 {
    let status = ok(&node.cli(&["node", "status"]));
    let line = status.lines().find(|line| line.starts_with("used_bytes:")).unwrap().to_owned();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts a put from a pipe, feeds it `size` bytes and kills the client (SIGKILL) once the
/// node holds at least `stored` bytes more than `before`. The pipe stays open until then, so
/// the put cannot finish first however fast it runs: it waits for more input.
fn kill_client_mid_put(node: &TestNode, size: usize, before: u64, stored: u64) {
    use std::io::Write;
    assert!(size as u64 > stored, "feed more than the node must hold before the kill");
    let mut client = node
        .cli_command(&["put", "-", "--as", "big"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = client.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Blocks while the client's chunk buffers are full; the kill ends it (a broken pipe,
        // the expected outcome), and otherwise the pipe stays open after the last byte.
        let _ = input.write_all(&pattern(size, 77));
        input
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while used_bytes(node) < before + stored {
        assert!(client.try_wait().unwrap().is_none(), "the put ended before it could be killed");
        assert!(Instant::now() < deadline, "the put never stored {stored} bytes");
        std::thread::sleep(Duration::from_millis(20));
    }
    client.kill().unwrap();
    client.wait().unwrap();
    drop(feeder.join().unwrap());
}

/// Waits (bounded) until the node's segment files take at most `bytes`.
fn wait_segments_at_most(data_dir: &Path, bytes: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while segment_bytes(data_dir) > bytes {
        assert!(Instant::now() < deadline, "segments still take {} bytes, not {bytes}", segment_bytes(data_dir));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue #11, item 5: a client killed in the middle of a put left its chunks on the node
/// for ever. With a 1 s grace period the node's background collection gives the space
/// back by itself, and the file stored before is untouched.
#[test]
fn chunks_of_a_killed_clients_put_are_collected_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--gc-grace-ms", "1000", "--put-idle-timeout-ms", "500"]);
    let keep = dir.path().join("keep");
    std::fs::write(&keep, pattern(3_000_000, 5)).unwrap();
    ok(&node.cli(&["put", keep.to_str().unwrap()]));
    let data = dir.path().join("data");
    let baseline = segment_bytes(&data);
    kill_client_mid_put(&node, 32 << 20, used_bytes(&node), 16 << 20);
    assert!(segment_bytes(&data) > baseline + (16 << 20), "nothing leaked to collect");
    wait_segments_at_most(&data, baseline + (64 << 10), Duration::from_secs(60));
    assert!(node.cli(&["get", "keep", "-o", "-"]).stdout == pattern(3_000_000, 5));
    let dry = ok(&node.cli(&["gc", "--dry-run", "--grace-ms", "0"]));
    assert!(dry.contains("would collect 0 chunks"), "{dry}");
}

/// A node killed in the middle of a put keeps the put's chunks and pending reservations
/// after its restart; `beeline gc` gives them back at once and keeps the stored file.
/// The put reads from a pipe that holds back all but 60 MiB, and the node is killed once
/// 11 of its chunks are committed: records only written when the node died are cut off by
/// the restart's scan, so waiting for written bytes alone left nothing to collect once in
/// CI.
#[test]
fn beeline_gc_reclaims_what_a_killed_node_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let keep = dir.path().join("keep");
    std::fs::write(&keep, pattern(1_000_000, 6)).unwrap();
    ok(&node.cli(&["put", keep.to_str().unwrap()]));
    let data = dir.path().join("data");
    let baseline = segment_bytes(&data);
    let committed_before =
        node.wait_counters(&[], "the kept file counted", |c| c["chunks_stored"] >= 1)["chunks_stored"];
    let (stdin, _gate) = common::GatedInput::new(pattern(200 << 20, 78), 60 << 20);
    let client = common::Process::spawn_with_stdin(node.cli_command(&["put", "-", "--as", "big"]), stdin);
    // Node status is a snapshot at most 100 ms old: wait (bounded) for the commits.
    node.wait_counters(&[], "11 chunks of the put committed", |c| c["chunks_stored"] >= committed_before + 11);
    node.process().kill9();
    drop(client);
    node.spawn();
    assert!(segment_bytes(&data) > baseline + (40 << 20), "nothing leaked to collect");
    // Committed chunks of the put and reservations the kill left pending: the node's own
    // grace period (10 minutes) keeps the chunks, the operator's pass does not wait.
    let dry = ok(&node.cli(&["gc", "--dry-run"]));
    assert!(dry.contains("would collect 0 chunks"), "{dry}");
    let done = ok(&node.cli(&["gc", "--grace-ms", "0"]));
    assert!(segment_bytes(&data) <= baseline + (64 << 10), "{} > {baseline}: {done}", segment_bytes(&data));
    assert!(node.cli(&["get", "keep", "-o", "-"]).stdout == pattern(1_000_000, 6));
}

/// Issue #11's disk-full leak: a put too big for a 50 MB tmpfs filled it, and every later
/// put failed "disk is full", also after a restart. After `beeline gc` a put that fits
/// succeeds.
#[test]
fn after_a_disk_full_put_gc_makes_room_for_one_that_fits() {
    if !is_root() {
        beeline_dataplane::testkit::skip(
            "after_a_disk_full_put_gc_makes_room_for_one_that_fits",
            "needs root to mount a tmpfs",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("data");
    let _unmount = Tmpfs::mount(&mount, "50m");
    let mut node = TestNode::start(dir.path(), &[]);
    let big = dir.path().join("too-big");
    std::fs::write(&big, pattern(80 << 20, 3)).unwrap();
    let message = one_line_error(&node.cli(&["put", big.to_str().unwrap()]));
    assert!(message.contains("disk is full"), "{message}");
    let fits = dir.path().join("fits");
    std::fs::write(&fits, pattern(30 << 20, 4)).unwrap();
    let message = one_line_error(&node.cli(&["put", fits.to_str().unwrap()]));
    assert!(message.contains("disk is full"), "a 30 MiB put fit next to the leak: {message}");
    node.process().terminate();
    node.spawn();
    // Space must be back within a bounded number of gc passes. One CI run (2026-11-30,
    // a loaded machine) needed more than one: a put right after the first pass still found
    // the disk full. Each pass is reported, so a regression to "never" fails here and a
    // slow release shows in the output. The likely cause, fixed since: the client's
    // retries of a pass that stopped early could all find the node's change queue full
    // and give up (control::GcRetry now waits for it to drain).
    let mut passes = 0;
    let stored = loop {
        passes += 1;
        ok(&node.cli(&["gc", "--grace-ms", "0"]));
        let put = node.cli(&["put", fits.to_str().unwrap()]);
        if put.status.success() {
            break true;
        }
        let message = one_line_error(&put);
        assert!(message.contains("disk is full"), "{message}");
        if passes == 5 {
            break false;
        }
    };
    println!("the put that fits succeeded after {passes} gc pass(es)");
    assert!(stored, "a 30 MiB put still found the disk full after {passes} gc passes");
    assert!(node.cli(&["get", "fits", "-o", "-"]).stdout == pattern(30 << 20, 4));
}

/// `--drop-written-pages`: once `beeline put` has returned (every chunk durable), the
/// node's segment files soon hold none of the file in the page cache; without the flag
/// they hold all of it. The file reads back whole either way.
#[test]
fn a_node_told_to_drop_written_pages_keeps_none_of_a_put_cached() {
    if !common::have("fincore") {
        beeline_dataplane::testkit::skip(
            "a_node_told_to_drop_written_pages_keeps_none_of_a_put_cached",
            "`fincore` (util-linux) is not installed",
        );
        return;
    }
    let data = pattern(16 << 20, 3);
    for drop in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let tmpfs = Command::new("stat").args(["-f", "-c", "%T"]).arg(tmp.path()).output().unwrap();
        if String::from_utf8_lossy(&tmpfs.stdout).trim() == "tmpfs" {
            beeline_dataplane::testkit::skip(
                "a_node_told_to_drop_written_pages_keeps_none_of_a_put_cached",
                "the temporary directory is on tmpfs, whose pages cannot be dropped",
            );
            return;
        }
        // Neither the tagger nor the background scrub may read the file back meanwhile.
        let quiet = ["--auto-tag", "false", "--scrub-bytes-per-s", "0"];
        let flags: Vec<&str> = quiet.into_iter().chain(drop.then_some("--drop-written-pages")).collect();
        let node = TestNode::start(tmp.path(), &flags);
        let file = tmp.path().join("file");
        std::fs::write(&file, &data).unwrap();
        // Over UDP: a put over shared memory is written around the page cache anyway.
        ok(&node.cli(&["put", file.to_str().unwrap(), "--as", "file", "--transport", "udp"]));
        if drop {
            // The sync thread drops them just after it reports the chunks durable (a page
            // a record shares with the next may stay): wait, bounded.
            let deadline = Instant::now() + Duration::from_secs(10);
            while node.segment_bytes_cached() > 64 << 10 {
                assert!(
                    Instant::now() < deadline,
                    "{} bytes of the put still cached with --drop-written-pages",
                    node.segment_bytes_cached()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            // The control: without the flag the put stays cached. Not every page of it:
            // the kernel may evict a few under the other tests' memory use (CI once saw
            // 3 of 4096 pages gone), so half is the bar, far above the 64 KiB left with it.
            let cached = node.segment_bytes_cached();
            assert!(cached >= data.len() as u64 / 2, "only {cached} bytes of a {}-byte put cached", data.len());
        }
        let back = node.cli(&["get", "file", "-o", "-"]);
        assert!(back.status.success() && back.stdout == data, "the file did not read back whole (drop = {drop})");
    }
}
