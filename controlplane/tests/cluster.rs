//! The replicated cluster for real: three nodes in three network namespaces joined by a
//! bridge, a real redis-server, a real Prometheus, nodes killed with SIGKILL and Redis
//! restarted under load. Needs root (namespaces); skips with a message otherwise.

mod common;
use common::loopback::{Loopback, Redis, free_tcp_port, key_file, skip_without_redis, status_line};
use common::{Bridge, End, Namespaces, Process, have, is_root, ns_command, pattern, sh, unique_id, veth_to_bridge};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_beeline");

fn skip_unless_ready(test: &str) -> bool {
    if !is_root() {
        beeline_dataplane::testkit::skip(test, "needs root to create network namespaces");
        return true;
    }
    for program in ["ip", "redis-server"] {
        if !have(program) {
            beeline_dataplane::testkit::skip(test, &format!("{program} is not installed (ci/setup.sh installs it)"));
            return true;
        }
    }
    false
}

/// A bridge in the root namespace with three node namespaces on it; always removed.
struct Topology {
    // Dropped first: deleting the namespaces deletes their veth pairs, then the bridge goes.
    namespaces: Namespaces,
    bridge: Bridge,
    subnet: u8,
}

impl Topology {
    fn new(subnet: u8) -> Self {
        let id = unique_id();
        let bridge = Bridge::new(&format!("blbr{id}"), &format!("10.77.{subnet}.1/24"));
        let names: Vec<String> = (1..=3).map(|i| format!("blns{id}n{i}")).collect();
        let namespaces = Namespaces::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let topology = Topology { namespaces, bridge, subnet };
        for index in 0..3 {
            let namespace = &topology.namespaces[index];
            let address = format!("{}/24", topology.node_ip(index));
            let inside = End { ns: namespace, name: &format!("blv{id}n{index}"), addresses: &[&address] };
            veth_to_bridge(&topology.bridge, &format!("blv{id}h{index}"), &inside);
            sh(&["ip", "-n", namespace, "route", "add", "default", "via", &topology.host_ip()]);
        }
        topology
    }

    fn host_ip(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    fn node_ip(&self, index: usize) -> String {
        format!("10.77.{}.{}", self.subnet, 11 + index)
    }
}

/// Dropped in field order: the nodes first, while Redis and the bridge are still there to
/// close their connections cleanly, then Redis, then the namespaces and the bridge. (With
/// the topology gone first, a killed node's FIN to Redis never got through, and the orphan
/// socket kept the namespace, and its veth on the host, alive for minutes.)
struct Cluster {
    nodes: Vec<Process>,
    redis: Redis,
    topology: Topology,
    dir: PathBuf,
}

impl Cluster {
    fn start(dir: &Path, subnet: u8) -> Self {
        let topology = Topology::new(subnet);
        let redis = Redis::start(&dir.join("redis"), &topology.host_ip(), 6400 + u16::from(subnet));
        let mut cluster = Cluster { topology, dir: dir.to_owned(), redis, nodes: Vec::new() };
        for index in 0..3 {
            let node = cluster.spawn_node(index);
            cluster.nodes.push(node);
        }
        cluster.wait_live(3);
        cluster
    }

    fn spawn_node(&self, index: usize) -> Process {
        let ip = self.topology.node_ip(index);
        let mut command = ns_command(&self.topology.namespaces[index], BIN);
        command
            .args(["node", "run", "--listen", &format!("{ip}:7777")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{index}")))
            .arg("--key-file")
            .arg(self.dir.join("cluster.key"))
            .args([
                "--metadata",
                &self.redis.url(),
                "--metrics-listen",
                &format!("{ip}:9777"),
                "--lease-ttl-ms",
                "1500",
                "--repair-interval-ms",
                "0",
            ])
            .args(["--hugepages", "off", "--arena-frames", "4096"]);
        Process::spawn(command)
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--metadata", &self.redis.url(), "--key-file"])
            .arg(self.dir.join("cluster.key"))
            .output()
            .unwrap()
    }

    fn live_count(&self) -> Option<usize> {
        let output = self.cli(&["cluster", "status"]);
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find(|line| line.starts_with("nodes:"))
            .and_then(|line| line.split('(').nth(1)?.split(' ').next()?.parse().ok())
    }

    /// Waits (bounded) until `count` nodes hold a live lease.
    fn wait_live(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.live_count() == Some(count) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster never reached {count} live nodes: {}",
                String::from_utf8_lossy(&self.cli(&["cluster", "status"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn put(&self, name: &str, data: &[u8]) -> bool {
        let path = self.dir.join(format!("in-{name}"));
        std::fs::write(&path, data).unwrap();
        let output = self.cli(&["put", path.to_str().unwrap(), "--as", name]);
        if !output.status.success() {
            eprintln!("put {name}: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        output.status.success()
    }

    fn get(&self, name: &str) -> Output {
        self.cli(&["get", name, "-o", "-"])
    }
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "beeline failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn losing_a_node_loses_no_file_and_repair_restores_two_replicas() {
    if skip_unless_ready("losing_a_node_loses_no_file_and_repair_restores_two_replicas") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path());
    let mut cluster = Cluster::start(dir.path(), 1);
    let files: Vec<(String, Vec<u8>)> =
        (0..8).map(|i| (format!("file-{i}"), pattern(200_000 + i * 1_500_000, i as u64))).collect();
    for (name, data) in &files {
        assert!(cluster.put(name, data), "put {name} failed");
    }
    let status = ok(&cluster.cli(&["cluster", "status"]));
    assert!(status.contains("replication:        healthy"), "{status}");

    cluster.nodes[1].kill9();
    cluster.wait_live(2);
    for (name, data) in &files {
        let output = cluster.get(name);
        assert!(
            output.status.success(),
            "{name} unreadable with one node down: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout == *data, "{name} differs with one node down");
    }
    let degraded = ok(&cluster.cli(&["cluster", "status"]));
    assert!(degraded.contains("expired"), "{degraded}");

    // Repair while the node is down: every chunk gets two live replicas again.
    let repaired = ok(&cluster.cli(&["cluster", "repair"]));
    assert!(repaired.contains("added"), "{repaired}");
    let status = ok(&cluster.cli(&["cluster", "status"]));
    assert!(status.contains("under-replicated:   0") && status.contains("replication:        healthy"), "{status}");
    for (name, _) in &files {
        let stat = ok(&cluster.cli(&["stat", name]));
        for line in stat.lines().filter(|line| line.trim_start().starts_with("chunk ")) {
            assert_eq!(line.split_whitespace().count(), 4, "chunk without two replicas: {line}");
        }
    }

    // The node comes back as itself and shows as live again.
    cluster.nodes[1] = cluster.spawn_node(1);
    cluster.wait_live(3);
    let back = ok(&cluster.cli(&["cluster", "status"]));
    assert!(!back.contains("expired"), "{back}");
    for (name, data) in &files {
        assert!(cluster.get(name).stdout == *data);
    }
    // Removing a file is one line, and its name is gone.
    ok(&cluster.cli(&["rm", "file-0"]));
    assert!(!ok(&cluster.cli(&["ls"])).contains("file-0\n"));
    // Tags: the DisGraFS graph's edges.
    ok(&cluster.cli(&["tag", "file-1", "report", "2026"]));
    ok(&cluster.cli(&["tag", "file-2", "report"]));
    assert_eq!(ok(&cluster.cli(&["search", "report"])), "file-1\nfile-2\n");
    assert_eq!(ok(&cluster.cli(&["search", "report", "2026"])), "file-1\n");

    // With two of three nodes gone, chunks whose replicas were all on them are reported
    // by name, never returned as garbage.
    cluster.nodes[0].kill9();
    cluster.nodes[2].kill9();
    cluster.wait_live(1);
    let mut unavailable = 0;
    for (name, data) in files.iter().skip(1) {
        let output = cluster.get(name);
        if output.status.success() {
            assert!(output.stdout == *data, "{name} came back different");
        } else {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            assert_eq!(message.lines().count(), 1, "{message}");
            assert!(message.contains("unavailable") && message.contains(name.as_str()), "{message}");
            unavailable += 1;
        }
    }
    assert!(unavailable > 0, "with two of three nodes down some chunk must be unavailable");
    let repair = cluster.cli(&["cluster", "repair"]);
    assert!(!repair.status.success());
    assert!(
        String::from_utf8_lossy(&repair.stdout).contains("LOST: file-"),
        "{}",
        String::from_utf8_lossy(&repair.stdout)
    );
    assert!(ok(&cluster.cli(&["cluster", "status"])).contains("DEGRADED"));
}

#[test]
fn redis_acl_user_and_password() {
    if skip_unless_ready("redis_acl_user_and_password") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path());
    let port = 6480 + (std::process::id() % 100) as u16;
    let mut redis = Command::new("redis-server");
    redis
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .args(["--user", "default", "off", "--user", "beeline", "on", ">s3cret", "~*", "&*", "+@all"]);
    let _redis = Process::spawn(redis);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let node_port = 7900 + (std::process::id() % 90) as u16;
    let good = format!("redis://beeline:s3cret@127.0.0.1:{port}");
    let mut node = Command::new(BIN);
    node.args([
        "node",
        "run",
        "--listen",
        &format!("127.0.0.1:{node_port}"),
        "--metadata",
        &good,
        "--hugepages",
        "off",
        "--arena-frames",
        "2048",
    ])
    .arg("--data-dir")
    .arg(dir.path().join("node"))
    .arg("--key-file")
    .arg(dir.path().join("cluster.key"));
    let _node = Process::spawn(node);
    let cli = |url: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--metadata", url, "--key-file"])
            .arg(dir.path().join("cluster.key"))
            .output()
            .unwrap()
    };
    cli(&good, &["cluster", "configure", "--replication-factor", "1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&cli(&good, &["cluster", "status"]).stdout).contains("(1 live)") {
        assert!(Instant::now() < deadline, "node never registered through the ACL user");
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = dir.path().join("acl-file");
    std::fs::write(&path, pattern(500_000, 1)).unwrap();
    ok(&cli(&good, &["put", path.to_str().unwrap()]));
    assert!(cli(&good, &["get", "acl-file", "-o", "-"]).stdout == pattern(500_000, 1));
    let bad = cli(&format!("redis://beeline:wrong@127.0.0.1:{port}"), &["ls"]);
    assert!(!bad.status.success());
    let message = String::from_utf8_lossy(&bad.stderr).trim().to_owned();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!message.contains("wrong"), "the password leaked into the message: {message}");
    assert!(message.contains("***"), "{message}");
}

#[test]
fn redis_restart_under_load_loses_no_acknowledged_file() {
    if skip_unless_ready("redis_restart_under_load_loses_no_acknowledged_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path());
    let cluster = Arc::new(Mutex::new(Cluster::start(dir.path(), 2)));
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (url, key, work) = {
        let cluster = cluster.lock().unwrap();
        (cluster.redis.url(), cluster.dir.join("cluster.key"), cluster.dir.clone())
    };
    let writer = {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            for index in 0..10_000u64 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let name = format!("load-{index}");
                let data = pattern(100_000 + (index as usize % 7) * 300_000, index);
                let path = work.join(&name);
                std::fs::write(&path, &data).unwrap();
                let output = Command::new(BIN)
                    .args(["put", path.to_str().unwrap(), "--metadata", &url, "--key-file"])
                    .arg(&key)
                    .output()
                    .unwrap();
                if output.status.success() {
                    acknowledged.lock().unwrap().push((name, data));
                }
            }
        })
    };
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acknowledged.lock().unwrap().len() < count {
            assert!(Instant::now() < deadline, "puts stalled at {}", acknowledged.lock().unwrap().len());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(3);
    {
        let mut cluster = cluster.lock().unwrap();
        cluster.redis.process.as_mut().expect("running").kill9();
        cluster.redis.spawn();
    }
    let before_restart = acknowledged.lock().unwrap().len();
    wait_for(before_restart + 3);
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let cluster = cluster.lock().unwrap();
    // Nodes re-registered by themselves.
    cluster.wait_live(3);
    for (name, data) in acknowledged.lock().unwrap().iter() {
        let output = cluster.get(name);
        assert!(
            output.status.success(),
            "acknowledged {name} lost across the Redis restart: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout == *data, "acknowledged {name} differs after the Redis restart");
    }
}

/// A minimal HTTP GET against Prometheus's API; returns the body.
fn http_get(address: &str, path_and_query: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path_and_query} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn dashboard_expressions() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("monitoring/grafana-dashboard.json")).unwrap();
    let mut expressions = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.replace("${instance}", ".*").replace("$instance", ".*"));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    walk(&dashboard["panels"], &mut expressions);
    assert!(!expressions.is_empty(), "the dashboard has no expressions");
    expressions
}

#[test]
fn prometheus_scrapes_every_node_and_every_dashboard_query_has_data() {
    if skip_unless_ready("prometheus_scrapes_every_node_and_every_dashboard_query_has_data") {
        return;
    }
    if !have("prometheus") {
        beeline_dataplane::testkit::skip(
            "prometheus_scrapes_every_node_and_every_dashboard_query_has_data",
            "prometheus is not installed (ci/setup.sh installs it)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path());
    let cluster = Cluster::start(dir.path(), 3);
    let targets: Vec<String> = (0..3).map(|i| format!("\"{}:9777\"", cluster.topology.node_ip(i))).collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: beeline\n    static_configs:\n      - targets: [{}]\n", targets.join(", "))).unwrap();
    let web = format!("127.0.0.1:{}", 19090 + u16::from(cluster.topology.subnet));
    let mut prometheus = Command::new("prometheus");
    prometheus
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address={web}"));
    let _prometheus = Process::spawn(prometheus);
    // Traffic for the metrics to show: puts and gets on every node.
    for i in 0..6 {
        let data = pattern(3_000_000, i);
        assert!(cluster.put(&format!("m{i}"), &data));
        assert!(cluster.get(&format!("m{i}")).stdout == data);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let body = http_get(&web, "/api/v1/targets").unwrap_or_default();
        if body.matches("\"health\":\"up\"").count() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus targets not all up: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut missing: Vec<String> = dashboard_expressions();
    // Rates need a few scrapes after the traffic: retry each until it has data (bounded).
    while !missing.is_empty() {
        missing.retain(|expr| {
            let body = http_get(&web, &format!("/api/v1/query?query={}", url_encode(expr))).unwrap_or_default();
            let value: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            assert_ne!(value["status"], "error", "dashboard query {expr} is invalid: {body}");
            value["data"]["result"].as_array().is_none_or(|result| result.is_empty())
        });
        if !missing.is_empty() {
            assert!(Instant::now() < deadline, "dashboard queries without data: {missing:?}");
            // Keep traffic flowing so that rates stay non-empty.
            let _ = cluster.get("m0");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Integrity (issue #11, cases 3, 4 and 8): two nodes on loopback, a real redis-server, a
// chunk's bytes flipped in a node's segment file on disk.

#[test]
fn a_corrupt_replica_is_failed_over_counted_and_replaced() {
    if skip_without_redis("a_corrupt_replica_is_failed_over_counted_and_replaced") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Loopback::start(dir.path(), 2);
    let data = pattern((3 << 20) + 12_345, 31);
    cluster.put("f", &data);
    let replicas = cluster.replicas("f", 1);
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    // The replica `get` reads first holds the bad copy.
    let (bad, good) = (cluster.index_of(&replicas[0]), cluster.index_of(&replicas[1]));
    assert_eq!(cluster.corrupt(bad, 1), 1);

    let output = cluster.cli(&["get", "f", "-o", "-"]);
    assert!(
        output.status.success(),
        "the good copy on the other node was not used: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == data, "get returned different bytes");
    let warning = String::from_utf8_lossy(&output.stderr);
    assert!(warning.contains("corrupt") && warning.contains(&replicas[0]), "no word of the bad copy: {warning}");

    // The bad copy is known: status counts it and does not call the cluster healthy.
    let status = ok(&cluster.cli(&["cluster", "status"]));
    assert!(status_line(&status, "corrupt replicas:").ends_with(" 1"), "{status}");
    assert!(!status_line(&status, "replication:").contains("healthy"), "{status}");

    // Repair replaces it from the verified copy.
    let repaired = ok(&cluster.cli(&["cluster", "repair"]));
    assert!(repaired.contains("replaced 1 corrupt"), "{repaired}");
    let status = ok(&cluster.cli(&["cluster", "status"]));
    assert!(status_line(&status, "corrupt replicas:").ends_with(" 0"), "{status}");
    assert!(status_line(&status, "replication:").ends_with("healthy"), "{status}");
    assert_eq!(cluster.replicas("f", 1).len(), 2);

    // The replaced copy is good: with the other node gone, it alone serves the file.
    cluster.stop(good);
    cluster.wait_live(1);
    let output = cluster.cli(&["get", "f", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data, "the repaired copy differs");
}

#[test]
fn get_writes_no_byte_of_a_chunk_that_no_replica_has_good() {
    if skip_without_redis("get_writes_no_byte_of_a_chunk_that_no_replica_has_good") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Loopback::start(dir.path(), 2);
    let data = pattern((3 << 20) + 77, 32);
    cluster.put("f", &data);
    assert_eq!(cluster.corrupt(0, 1) + cluster.corrupt(1, 1), 2);
    let output = cluster.cli(&["get", "f", "-o", "-"]);
    let message = common::node::one_line_error(&output);
    assert!(message.contains("corrupt") && message.contains("chunk 1 of f"), "{message}");
    // Chunk 0 may have gone out (it checked out); nothing of chunk 1 did.
    assert!(output.stdout.len() <= 1 << 20, "{} bytes written, chunk 1 among them", output.stdout.len());
    assert!(data.starts_with(&output.stdout), "what was written differs from the file");
    let status = ok(&cluster.cli(&["cluster", "status"]));
    assert!(status_line(&status, "corrupt replicas:").ends_with(" 2"), "{status}");
    assert!(status_line(&status, "replication:").contains("DEGRADED"), "{status}");
    // Repair has nothing good to copy from: it says so and changes nothing.
    let repair = cluster.cli(&["cluster", "repair"]);
    assert!(!repair.status.success());
    assert!(
        String::from_utf8_lossy(&repair.stdout).contains("LOST: f#1"),
        "{}",
        String::from_utf8_lossy(&repair.stdout)
    );
    assert_eq!(cluster.replicas("f", 1).len(), 2);
}

#[test]
fn repair_never_drops_the_only_good_copy() {
    if skip_without_redis("repair_never_drops_the_only_good_copy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Loopback::start(dir.path(), 2);
    let data = pattern((3 << 20) + 4_321, 33);
    cluster.put("f10", &data);
    // Node 0's copy of chunk 1 goes bad; its restart finds that out and discards it.
    assert_eq!(cluster.corrupt(0, 1), 1);
    cluster.stop(0);
    cluster.spawn(0);
    cluster.wait_live(2);
    // Then the node with the good copy restarts; repair runs while it is away, as the
    // background repair of the node left alone would.
    cluster.stop(1);
    cluster.wait_live(1);
    let _ = cluster.cli(&["cluster", "repair"]);
    assert_eq!(cluster.replicas("f10", 1).len(), 2, "repair dropped a replica it had not verified");
    cluster.spawn(1);
    cluster.wait_live(2);
    ok(&cluster.cli(&["cluster", "repair"]));
    let output = cluster.cli(&["get", "f10", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data);
    // A scrub finds node 0 without the chunk, and its repair puts the good copy back.
    let scrubbed = ok(&cluster.cli(&["cluster", "scrub"]));
    let lost_on = format!("bad copy: f10#1 missing on {}", cluster.node_id(0));
    assert!(scrubbed.contains(&lost_on) && scrubbed.contains("replaced 1 corrupt"), "{scrubbed}");
    let status = ok(&cluster.cli(&["cluster", "status"]));
    assert!(status_line(&status, "replication:").ends_with("healthy"), "{status}");
    // Both nodes hold a good copy again: either alone serves the file.
    cluster.stop(1);
    cluster.wait_live(1);
    let output = cluster.cli(&["get", "f10", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data);
}

#[test]
fn the_background_repair_keeps_a_down_node_that_holds_the_only_good_copy() {
    if skip_without_redis("the_background_repair_keeps_a_down_node_that_holds_the_only_good_copy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Loopback::start_with_repair(dir.path(), 2, 200);
    let data = pattern((3 << 20) + 99, 35);
    cluster.put("f10", &data);
    assert_eq!(cluster.corrupt(0, 1), 1);
    cluster.stop(0);
    cluster.spawn(0);
    cluster.wait_live(2);
    cluster.stop(1);
    cluster.wait_live(1);
    // Node 0, alone and so the repair leader, runs several passes.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert_eq!(cluster.replicas("f10", 1).len(), 2, "a background pass dropped the down node");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.spawn(1);
    cluster.wait_live(2);
    let output = cluster.cli(&["get", "f10", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data);
    // Scrub marks node 0's missing copy; the next background pass (or the scrub's own
    // repair) replaces it, after which node 0 alone serves the file.
    ok(&cluster.cli(&["cluster", "scrub"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = ok(&cluster.cli(&["cluster", "status"]));
        if status_line(&status, "replication:").ends_with("healthy") {
            break;
        }
        assert!(Instant::now() < deadline, "never healthy again: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.stop(1);
    cluster.wait_live(1);
    let output = cluster.cli(&["get", "f10", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data);
}

#[test]
fn a_file_stored_without_chunk_hashes_is_still_read_and_checked_whole() {
    if skip_without_redis("a_file_stored_without_chunk_hashes_is_still_read_and_checked_whole") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Loopback::start(dir.path(), 2);
    let data = pattern((2 << 20) + 5, 34);
    cluster.put("old", &data);
    // Rewrite its layout as a version without chunk hashes stored it.
    let mut metadata = beeline::cluster::RedisMetadata::connect(&cluster.redis.url(), "beeline").unwrap();
    let mut layout = metadata.get_layout("old").unwrap().unwrap();
    assert_eq!(layout.chunk_blake3.len(), 3, "put records one hash per chunk");
    layout.chunk_blake3.clear();
    metadata.put_layout(&layout).unwrap();
    let output = cluster.cli(&["get", "old", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data);
    // Without chunk hashes the client cannot tell a bad copy apart, but the node can: it
    // refuses the copy that fails its stored checksum, and the client reads the other.
    assert_eq!(cluster.corrupt(cluster.index_of(&cluster.replicas("old", 1)[0]), 1), 1);
    let output = cluster.cli(&["get", "old", "-o", "-"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == data, "the corrupt copy's bytes reached stdout");
    let scrubbed = ok(&cluster.cli(&["cluster", "scrub"]));
    assert!(scrubbed.contains("1 file(s) stored before chunk hashes"), "{scrubbed}");
}

/// `used_bytes` of node `index`, from `beeline node status`.
fn node_used_bytes(cluster: &Loopback, index: usize) -> u64 {
    let output = Command::new(BIN)
        .args(["node", "status", "--node", &format!("127.0.0.1:{}", cluster.nodes[index].1), "--key-file"])
        .arg(cluster.dir.join("cluster.key"))
        .output()
        .unwrap();
    let status = ok(&output);
    status_line(&status, "used_bytes:").split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Redis comes back empty (killed, its files gone): the nodes say so (`cluster status`),
/// keep serving puts, and garbage collection keeps every chunk from before until an
/// operator runs `cluster forget-lost`; then those chunks, which no file references any
/// more, are collected.
#[test]
fn redis_restarted_empty_is_reported_and_old_chunks_are_kept_until_forgotten() {
    if skip_without_redis("redis_restarted_empty_is_reported_and_old_chunks_are_kept_until_forgotten") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Loopback::start(dir.path(), 2);
    cluster.put("before", &pattern(3 << 20, 1));
    let used: Vec<u64> = (0..2).map(|index| node_used_bytes(&cluster, index)).collect();
    assert!(used.iter().all(|bytes| *bytes >= 3 << 20), "both nodes hold the file: {used:?}");

    cluster.redis.process.as_mut().expect("running").kill9();
    std::fs::remove_dir_all(&cluster.redis.dir).unwrap();
    std::fs::create_dir_all(&cluster.redis.dir).unwrap();
    cluster.redis.spawn();
    cluster.wait_live(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = String::from_utf8_lossy(&cluster.cli(&["cluster", "status"]).stdout).into_owned();
        if status.contains("METADATA LOST") {
            break status;
        }
        assert!(Instant::now() < deadline, "the lost metadata was never reported: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains("2 node(s)"), "{status}");

    // Puts go on meanwhile; garbage collection takes none of the old chunks.
    cluster.put("after", &pattern(1 << 20, 2));
    ok(&cluster.cli(&["get", "after", "-o", dir.path().join("after").to_str().unwrap()]));
    let gc = cluster.cli(&["cluster", "gc", "--grace-ms", "0"]);
    let said = format!("{}{}", String::from_utf8_lossy(&gc.stdout), String::from_utf8_lossy(&gc.stderr));
    assert!(!gc.status.success() && said.contains("forget-lost"), "gc must refuse, saying why: {said}");
    for (index, before) in used.iter().enumerate() {
        assert!(node_used_bytes(&cluster, index) >= *before, "node {index} collected chunks from before the loss");
    }

    // Once forgotten, the old chunks are ordinary garbage: nothing references them.
    ok(&cluster.cli(&["cluster", "forget-lost"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = String::from_utf8_lossy(&cluster.cli(&["cluster", "status"]).stdout).into_owned();
        if !status.contains("METADATA LOST") {
            break;
        }
        assert!(Instant::now() < deadline, "forget-lost was never taken up: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&cluster.cli(&["cluster", "gc", "--grace-ms", "0"]));
    for (index, before) in used.iter().enumerate() {
        let now = node_used_bytes(&cluster, index);
        assert!(now < *before, "node {index} still holds the forgotten chunks ({now} of {before} bytes)");
    }
    ok(&cluster.cli(&["get", "after", "-o", dir.path().join("after-again").to_str().unwrap()]));
}

/// With Redis unreachable, a cluster command says so and what to check, in one line, and
/// does not blame a data directory (the cluster's metadata is not on this machine).
#[test]
fn an_unreachable_redis_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    key_file(dir.path());
    let closed = free_tcp_port();
    let output = Command::new(BIN)
        .args(["ls", "--metadata", &format!("redis://127.0.0.1:{closed}"), "--key-file"])
        .arg(dir.path().join("cluster.key"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Redis at redis://127.0.0.1") && stderr.contains("is redis-server running"), "{stderr}");
    assert!(!stderr.contains("data directory"), "{stderr}");
}

/// The metadata carries its format version (`{beeline}:format`): written as 1 where there
/// is none, and a newer (or foreign) one makes every command, a node's start included,
/// refuse in one line naming the key and the fix, before anything is read or written.
#[test]
fn a_newer_metadata_format_is_refused_by_every_command() {
    if skip_without_redis("a_newer_metadata_format_is_refused_by_every_command") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Loopback::start(dir.path(), 1);
    ok(&cluster.cli(&["cluster", "configure", "--replication-factor", "1"]));
    cluster.put("f", &pattern(100_000, 41));
    let mut redis = redis::Client::open(cluster.redis.url()).unwrap().get_connection().unwrap();
    let format = |redis: &mut redis::Connection| -> Option<String> {
        redis::cmd("GET").arg("{beeline}:format").query(redis).unwrap()
    };
    assert_eq!(format(&mut redis).as_deref(), Some("1"), "a new cluster records format 1");
    // A cluster from before format versions has no key: it is format 1, and gets the key.
    let _: () = redis::cmd("DEL").arg("{beeline}:format").query(&mut redis).unwrap();
    ok(&cluster.cli(&["ls"]));
    assert_eq!(format(&mut redis).as_deref(), Some("1"));

    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let input = dir.path().join("in-f").to_str().unwrap().to_owned();
    let commands: [&[&str]; 7] = [
        &["ls"],
        &["get", "f", "-o", &out],
        &["put", &input, "--as", "g"],
        &["rm", "f"],
        &["cluster", "status"],
        &["cluster", "scrub"],
        &["cluster", "gc", "--grace-ms", "0"],
    ];
    for (value, words) in
        [("2", ["format 2", "upgrade beeline"]), ("beeline-v1", ["not a Beeline metadata format", "--metadata-prefix"])]
    {
        let _: () = redis::cmd("SET").arg("{beeline}:format").arg(value).query(&mut redis).unwrap();
        for args in commands {
            let message = common::node::one_line_error(&cluster.cli(args));
            assert!(
                message.contains("{beeline}:format") && words.iter().all(|word| message.contains(word)),
                "{args:?}: {message}"
            );
        }
        assert!(!dir.path().join("out").exists(), "get wrote a file from metadata it cannot read");
        // A node does not start on it.
        let mut node = Command::new(common::node::BIN);
        node.args(["node", "run", "--listen", &format!("127.0.0.1:{}", common::free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("node-new"))
            .arg("--key-file")
            .arg(dir.path().join("cluster.key"))
            .args(["--metadata", &cluster.redis.url(), "--hugepages", "off", "--arena-frames", "1024"]);
        let mut node = Process::spawn(node);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = node.exited() {
                break status;
            }
            assert!(Instant::now() < deadline, "the node started on metadata it cannot read: {}", node.log());
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success());
        assert!(node.logged("{beeline}:format") && words.iter().all(|word| node.logged(word)), "{}", node.log());
    }
    // Back to format 1, everything works and nothing was changed meanwhile.
    let _: () = redis::cmd("SET").arg("{beeline}:format").arg("1").query(&mut redis).unwrap();
    ok(&cluster.cli(&["get", "f", "-o", &out]));
    assert!(std::fs::read(&out).unwrap() == pattern(100_000, 41));
    assert!(!ok(&cluster.cli(&["ls"])).contains(" g\n"), "the refused put stored g");
}

/// A node that holds a copy of a recorded file's chunk that the file's layout does not
/// list on it (its put's ack was lost when the node was killed, so the client stored the
/// chunk elsewhere) gets that space back from `cluster gc` once the grace period is over;
/// listed copies are never touched.
#[test]
fn gc_collects_copies_a_layout_does_not_list() {
    if skip_without_redis("gc_collects_copies_a_layout_does_not_list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Loopback::start(dir.path(), 3);
    let data = pattern((2 << 20) + 10, 42);
    cluster.put("f", &data);
    let listed: Vec<String> = cluster.replicas("f", 0);
    let stray = (0..3).find(|index| !listed.contains(&cluster.node_id(*index))).expect("a node without chunk 0");
    let chunks_on = |index: usize| -> u64 {
        let status = ok(&Command::new(common::node::BIN)
            .args(["node", "status", "--node", &format!("127.0.0.1:{}", cluster.nodes[index].1), "--key-file"])
            .arg(dir.path().join("cluster.key"))
            .output()
            .unwrap());
        status_line(&status, "chunks:").split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // A node's status is at most 100 ms old: wait (bounded) for the count.
    let wait_chunks = |index: usize, count: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while chunks_on(index) != count {
            assert!(Instant::now() < deadline, "node {index} holds {} chunks, not {count}", chunks_on(index));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The stray copy: chunk 0's bytes stored straight on the node the layout does not list.
    let mut metadata = beeline::cluster::RedisMetadata::connect(&cluster.redis.url(), "beeline").unwrap();
    let layout = metadata.get_layout("f").unwrap().unwrap();
    let stray_id = u64::from_str_radix(&cluster.node_id(stray), 16).unwrap();
    let before = layout.replicas.iter().filter(|nodes| nodes.contains(&stray_id)).count() as u64;
    wait_chunks(stray, before);
    let key = beeline::keyfile::load(&dir.path().join("cluster.key")).unwrap();
    let address = format!("127.0.0.1:{}", cluster.nodes[stray].1).parse().unwrap();
    let mut client = beeline::client::Client::new(beeline::client::ClientOptions::new(address, key)).unwrap();
    let chunk: std::sync::Arc<[u8]> = std::sync::Arc::from(&data[..1 << 20]);
    assert!(client.put_chunks(&[(layout.record.chunk_id(0), chunk)])[0].is_ok());
    wait_chunks(stray, before + 1);

    // Within the grace period it stays; after it, a dry run counts it and gc takes it.
    let young = ok(&cluster.cli(&["cluster", "gc", "--dry-run", "--grace-ms", "600000"]));
    assert!(!young.contains("does not list"), "{young}");
    let dry = ok(&cluster.cli(&["cluster", "gc", "--dry-run", "--grace-ms", "0"]));
    assert!(
        dry.contains(&format!("{}: would collect 1 chunks (1048576 bytes) of recorded files", cluster.node_id(stray))),
        "{dry}"
    );
    assert_eq!(chunks_on(stray), before + 1, "a dry run deleted something");
    let collected = ok(&cluster.cli(&["cluster", "gc", "--grace-ms", "0"]));
    assert!(collected.contains("collected 1 chunks (1048576 bytes) of recorded files"), "{collected}");
    wait_chunks(stray, before);
    // Every listed copy is still there: each node alone serves what it is listed for.
    let again = ok(&cluster.cli(&["cluster", "gc", "--dry-run", "--grace-ms", "0"]));
    assert!(!again.contains("does not list"), "{again}");
    let output = cluster.cli(&["get", "f", "-o", "-"]);
    assert!(output.status.success() && output.stdout == data);
    let status = ok(&cluster.cli(&["cluster", "scrub"]));
    assert!(status.contains(", 0 bad,"), "{status}");
}

/// A cluster that holds no file yet (a fresh one, or one whose files were all removed) is
/// collected like any other: no "empty command" from Redis, which a node's background
/// collection used to log every interval until the first put.
#[test]
fn gc_of_a_cluster_without_files_succeeds() {
    if skip_without_redis("gc_of_a_cluster_without_files_succeeds") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Loopback::start(dir.path(), 2);
    let report = ok(&cluster.cli(&["cluster", "gc", "--grace-ms", "0"]));
    assert!(!report.contains("empty command"), "{report}");
    // And after the only file is removed again.
    cluster.put("f", &pattern(100_000, 43));
    ok(&cluster.cli(&["rm", "f"]));
    let report = ok(&cluster.cli(&["cluster", "gc", "--grace-ms", "0"]));
    assert!(report.contains("collected"), "{report}");
}

/// Redis goes away in the middle of a put (issue #11, case 5: ~320 MB per node were left
/// behind for good): the put fails, and once Redis is back, `cluster gc` gives every node
/// its space back (the put's chunks were stored, never recorded), after which a put that
/// fits succeeds. The put reads from a pipe that holds back all but 16 MiB, so Redis dies
/// mid-put however fast the put runs.
#[test]
fn space_of_a_put_cut_off_by_a_redis_outage_comes_back_with_gc() {
    if skip_without_redis("space_of_a_put_cut_off_by_a_redis_outage_comes_back_with_gc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Loopback::start(dir.path(), 2);
    cluster.put("kept", &pattern(2 << 20, 1));
    let used = |cluster: &Loopback| -> Vec<u64> { (0..2).map(|index| node_used_bytes(cluster, index)).collect() };
    let before = used(&cluster);

    let (stdin, mut input) = common::GatedInput::new(pattern(64 << 20, 2), 16 << 20);
    let mut put = Command::new(BIN);
    put.args(["put", "-", "--as", "cut-off", "--metadata", &cluster.redis.url(), "--key-file"])
        .arg(dir.path().join("cluster.key"));
    let mut put = Process::spawn_with_stdin(put, stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Node status is a snapshot at most 100 ms old: wait (bounded) for the stored chunks.
    while used(&cluster).iter().sum::<u64>() < before.iter().sum::<u64>() + (8 << 20) {
        assert!(Instant::now() < deadline, "the put stored nothing:\n{}", put.log());
        assert!(put.exited().is_none(), "the put ended before Redis went away:\n{}", put.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.redis.process.as_mut().expect("running").kill9();
    input.release();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = put.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the put never gave up on Redis:\n{}", put.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a put whose metadata could not be written succeeded:\n{}", put.log());
    let leaked = used(&cluster);
    assert!(
        leaked.iter().sum::<u64>() >= before.iter().sum::<u64>() + (8 << 20),
        "the cut-off put left nothing to collect ({leaked:?} against {before:?}): the test shows nothing"
    );

    cluster.redis.spawn();
    cluster.wait_live(2);
    let listing = ok(&cluster.cli(&["ls"]));
    assert!(!listing.contains("cut-off"), "a failed put was recorded: {listing}");
    let report = ok(&cluster.cli(&["cluster", "gc", "--grace-ms", "0"]));
    assert!(report.contains("collected"), "{report}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = used(&cluster);
        if now.iter().zip(&before).all(|(now, before)| now <= before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "space not given back after gc: {now:?}, before the put {before:?}\n{report}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let data = pattern(3 << 20, 3);
    cluster.put("fits", &data);
    let back = dir.path().join("fits.back");
    ok(&cluster.cli(&["get", "fits", "-o", back.to_str().unwrap()]));
    assert!(std::fs::read(&back).unwrap() == data, "fits came back different");
    ok(&cluster.cli(&["get", "kept", "-o", dir.path().join("kept.back").to_str().unwrap()]));
}

/// A reader that has no bytes yet now and then (`WouldBlock`, as a write-behind's spool
/// says while its writer pauses): the put waits for it instead of failing, on a cluster and
/// on a single node, and stores the file whole.
#[test]
fn a_put_from_a_reader_that_pauses_waits_for_it_and_stores_the_file() {
    if skip_without_redis("a_put_from_a_reader_that_pauses_waits_for_it_and_stores_the_file") {
        return;
    }
    /// Hands out `data` at most 1 MiB per read, with a `WouldBlock` before each piece.
    struct Pausing<'a> {
        data: &'a [u8],
        at: usize,
        paused: bool,
        pauses: usize,
    }
    impl Read for Pausing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at < self.data.len() && !self.paused {
                self.paused = true;
                self.pauses += 1;
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.paused = false;
            let len = buf.len().min(self.data.len() - self.at).min(1 << 20);
            buf[..len].copy_from_slice(&self.data[self.at..self.at + len]);
            self.at += len;
            Ok(len)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Loopback::start(dir.path(), 3);
    let key = beeline::keyfile::load(&dir.path().join("cluster.key")).unwrap();
    let data = pattern(9 << 20 | 77, 44);

    let mut clustered =
        beeline::client::cluster::ClusterClient::connect(&cluster.redis.url(), "beeline", key.clone(), None).unwrap();
    let mut reader = Pausing { data: &data, at: 0, paused: false, pauses: 0 };
    clustered.put_reader("paused-cluster", &mut reader, "a pausing reader", &mut |_| {}).unwrap();
    assert!(reader.pauses >= 10, "the reader paused {} times", reader.pauses);
    let back = cluster.cli(&["get", "paused-cluster", "-o", "-"]);
    assert!(back.status.success() && back.stdout == data, "{}", String::from_utf8_lossy(&back.stderr));

    let address = format!("127.0.0.1:{}", cluster.nodes[0].1).parse().unwrap();
    let mut single = beeline::client::Client::new(beeline::client::ClientOptions::new(address, key)).unwrap();
    let mut reader = Pausing { data: &data, at: 0, paused: false, pauses: 0 };
    single.put_reader("paused-single", &mut reader, "a pausing reader", &mut |_| {}).unwrap();
    assert!(reader.pauses >= 10, "the reader paused {} times", reader.pauses);
    let mut back = Vec::new();
    single.get_writer("paused-single", &mut back, "memory", &mut |_| {}).unwrap();
    assert!(back == data, "the single node stored the paused file different");
}
