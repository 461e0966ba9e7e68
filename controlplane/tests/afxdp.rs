//! The `afxdp` backend end to end, on real kernel parts: a client network namespace and a
//! node network namespace joined by a veth pair, the XDP classifier attached natively to
//! the node's veth, the `beeline` binary run inside the namespaces with `ip netns exec`.
//!
//! Needs root, AF_XDP sockets and XDP on veth; each test checks and skips with a message
//! when one is missing. Every topology gets unique names and is removed by a Drop guard,
//! whatever the test's outcome.

mod common;
use common::{End, Namespaces, Process, have, in_netns, is_root, ns_command, pattern, run, sh, unique_id, veth_pair};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use beeline_dataplane::session::handshake::{CHALLENGE_LEN, ClusterKeys, INITIATE_LEN, Kind, write_initiate};
use beeline_dataplane::wire::ClusterKey;

const BIN: &str = env!("CARGO_BIN_EXE_beeline");
const NODE_IP: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.2";
/// A second address of the client, outside the node's allowlist.
const OUTSIDER_IP: &str = "10.77.0.3";
const PORT: u16 = 7777;

fn node_addr() -> String {
    format!("{NODE_IP}:{PORT}")
}

/// Why the machine cannot run these tests, if it cannot.
fn missing_requirement() -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, XDP, AF_XDP)".into());
    }
    // SAFETY: socket(2) takes no pointers; a valid descriptor is closed at once.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Some(format!("the kernel has no AF_XDP sockets ({})", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is the descriptor just opened, closed once.
    unsafe { libc::close(fd) };
    for tool in ["ip", "ethtool", "tc"] {
        if !have(tool) {
            return Some(format!("`{tool}` is not installed (ci/setup.sh installs it)"));
        }
    }
    None
}

macro_rules! require_kernel_bypass {
    ($name:literal) => {
        if let Some(why) = missing_requirement() {
            beeline_dataplane::testkit::skip($name, &why);
            return;
        }
    };
}

/// Two namespaces joined by a veth pair, removed on drop.
struct Topology {
    _namespaces: Namespaces,
    node_ns: String,
    client_ns: String,
    node_if: String,
    client_if: String,
}

impl Topology {
    fn new() -> Topology {
        let id = unique_id();
        let (node_ns, client_ns) = (format!("beeline-n{id}"), format!("beeline-c{id}"));
        let topology = Topology {
            _namespaces: Namespaces::new(&[&node_ns, &client_ns]),
            node_if: format!("bln{id}"),
            client_if: format!("blc{id}"),
            node_ns,
            client_ns,
        };
        veth_pair(
            &End {
                ns: &topology.client_ns,
                name: &topology.client_if,
                addresses: &[&format!("{CLIENT_IP}/24"), &format!("{OUTSIDER_IP}/24")],
            },
            &End { ns: &topology.node_ns, name: &topology.node_if, addresses: &[&format!("{NODE_IP}/24")] },
            None,
        );
        // A kernel sender on veth leaves the UDP checksum to an offload that never runs
        // (CHECKSUM_PARTIAL): the node does not need it (the Beeline MAC covers every
        // byte), but real NICs deliver complete checksums, so make the test path do too.
        run(ns_command(&topology.client_ns, "ethtool").args(["-K", &topology.client_if, "tx", "off"]));
        topology
    }

    /// Sets the MTU of both ends of the pair.
    fn set_mtu(&self, mtu: u32) {
        for (ns, name) in [(&self.node_ns, &self.node_if), (&self.client_ns, &self.client_if)] {
            sh(&["ip", "-n", ns, "link", "set", name, "mtu", &mtu.to_string()]);
        }
    }

    /// What `ip link show` says about the node's veth.
    fn node_link(&self) -> String {
        String::from_utf8_lossy(&sh(&["ip", "-n", &self.node_ns, "-d", "link", "show", &self.node_if]).stdout)
            .into_owned()
    }
}

/// A node run with `ip netns exec` in the topology's node namespace.
struct AfxdpNode<'t> {
    topology: &'t Topology,
    dir: PathBuf,
    data: String,
    extra: Vec<String>,
    process: Option<Process>,
    /// `node status` requests sent so far (each one is a storage-port datagram).
    status_calls: std::cell::Cell<u64>,
}

impl<'t> AfxdpNode<'t> {
    fn new(topology: &'t Topology, dir: &Path, extra: &[&str]) -> Self {
        AfxdpNode {
            topology,
            dir: dir.to_owned(),
            data: "data".to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            process: None,
            status_calls: std::cell::Cell::new(0),
        }
    }

    fn command(&self) -> Command {
        let mut command = ns_command(&self.topology.node_ns, BIN);
        command
            .args(["node", "run", "--backend", "afxdp", "--interface", &self.topology.node_if, "--listen"])
            .arg(node_addr())
            .arg("--data-dir")
            .arg(self.dir.join(&self.data))
            .arg("--key-file")
            .arg(self.dir.join("cluster.key"))
            .args(["--arena-frames", "4096", "--hugepages", "off"])
            .args(&self.extra)
            .env("BEELINE_LOG", "info");
        command
    }

    /// Starts the node and waits (bounded) until it answers a ping through AF_XDP.
    fn start(&mut self) {
        self.process = Some(Process::spawn(self.command()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.cli(&["node", "ping"]).status.success() {
                return;
            }
            let process = self.process();
            if let Some(status) = process.exited() {
                panic!("node exited during start-up with {status}:\n{}", process.log());
            }
            assert!(Instant::now() < deadline, "node did not answer within 30 s:\n{}", process.log());
        }
    }

    /// Runs the node expecting it to fail at start-up; returns its stderr.
    fn start_fails(&self) -> String {
        let output = self.command().output().expect("run node");
        assert!(!output.status.success(), "node started but should not have");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn process(&mut self) -> &mut Process {
        self.process.as_mut().expect("started")
    }

    /// Its log so far (of the latest start).
    fn log(&self) -> String {
        self.process.as_ref().map(Process::log).unwrap_or_default()
    }

    fn logged(&self, text: &str) -> bool {
        self.process.as_ref().is_some_and(|process| process.logged(text))
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = ns_command(&self.topology.client_ns, BIN);
        command.args(args).arg("--node").arg(node_addr()).arg("--key-file").arg(self.dir.join("cluster.key"));
        command
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run beeline")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "beeline {args:?} failed: {}\nnode log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `beeline node status`: the backend line and every counter.
    fn status(&self) -> (String, std::collections::HashMap<String, u64>) {
        self.status_calls.set(self.status_calls.get() + 1);
        let text = self.ok(&["node", "status"]);
        let backend = text.lines().find_map(|l| l.strip_prefix("backend:")).unwrap_or("").trim().to_owned();
        let counters = text
            .lines()
            .filter_map(|line| {
                let line = line.strip_prefix("  ")?;
                let mut words = line.split_whitespace();
                Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
            })
            .collect();
        (backend, counters)
    }

    /// Polls status until `condition` holds (bounded); returns the counters.
    fn wait_counters(
        &self,
        what: &str,
        condition: impl Fn(&std::collections::HashMap<String, u64>) -> bool,
    ) -> std::collections::HashMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, counters) = self.status();
            if condition(&counters) {
                return counters;
            }
            assert!(Instant::now() < deadline, "{what}: counters never got there: {counters:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn key(&self) -> ClusterKey {
        beeline::keyfile::load(&self.dir.join("cluster.key")).expect("key")
    }

    fn put_and_get(&self, name: &str, data: &[u8]) {
        let path = self.dir.join(name);
        std::fs::write(&path, data).unwrap();
        self.ok(&["put", path.to_str().unwrap(), "--as", name]);
        let back = self.dir.join(format!("{name}.back"));
        self.ok(&["get", name, "-o", back.to_str().unwrap()]);
        assert!(std::fs::read(&back).unwrap() == data, "{name} ({} bytes) came back different", data.len());
    }
}

/// A protocol-v2 `Initiate`: the one request a node answers (with a `Challenge`) before
/// any session exists, so it probes the path and the allowlist without a handshake.
fn initiate_datagram(key: &ClusterKey, client_index: u32) -> Vec<u8> {
    let keys = ClusterKeys::new(*key.bytes());
    let mut buffer = [0u8; INITIATE_LEN];
    write_initiate(&mut buffer, &keys, client_index, &[client_index as u8; 32]);
    buffer.to_vec()
}

/// Sends `count` Initiates from `socket` and counts the Challenges that come back within a
/// bound.
fn ping_exchange(socket: &UdpSocket, key: &ClusterKey, count: u64) -> u64 {
    let node: SocketAddr = node_addr().parse().unwrap();
    for id in 0..count {
        socket.send_to(&initiate_datagram(key, 1000 + id as u32), node).unwrap();
    }
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut pongs = 0;
    let mut buffer = [0u8; 2048];
    while pongs < count {
        match socket.recv_from(&mut buffer) {
            Ok((len, from)) if from == node && len == CHALLENGE_LEN && buffer[3] == Kind::Challenge as u8 => pongs += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    pongs
}

fn bound_udp(ns: &str, ip: &str) -> UdpSocket {
    let ip = ip.to_owned();
    in_netns(ns, move || UdpSocket::bind((ip.as_str(), 0)).expect("bind client socket"))
}

#[test]
fn files_round_trip_through_af_xdp_and_counters_match() {
    require_kernel_bypass!("files_round_trip_through_af_xdp_and_counters_match");
    let topology = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = AfxdpNode::new(
        &topology,
        dir.path(),
        &["--allow", &format!("{CLIENT_IP}/32"), "--metrics-listen", "127.0.0.1:9777"],
    );
    node.start();
    // The classifier is attached natively (driver mode) on the node's veth.
    assert!(topology.node_link().contains("xdp "), "{}", topology.node_link());

    let (backend, counters) = node.status();
    assert!(backend.starts_with("afxdp on") && backend.contains("copy mode"), "{backend}");
    assert_eq!(counters["afxdp_zero_copy"], 0, "veth has no zero-copy support");
    assert!(node.logged("COPY mode"), "the bind mode is logged");

    for (index, size) in [0usize, 1, 1335, 1336, 4 << 20, (4 << 20) + 1, 9_000_000].into_iter().enumerate() {
        node.put_and_get(&format!("file-{size}"), &pattern(size, index as u64));
    }
    let listing = node.ok(&["ls"]);
    assert!(listing.contains("file-9000000"), "{listing}");

    // Exactly counted traffic: pings from the allowed address, pings from an address
    // outside the allowlist, and storage-port junk.
    let key = node.key();
    let before = node.wait_counters("settled", |c| c["xdp_redirect_packets"] == c["afxdp_rx_packets"]);
    let calls_before = node.status_calls.get();
    let allowed = bound_udp(&topology.client_ns, CLIENT_IP);
    assert_eq!(ping_exchange(&allowed, &key, 50), 50, "every allowed Initiate is answered");
    let outsider = bound_udp(&topology.client_ns, OUTSIDER_IP);
    assert_eq!(ping_exchange(&outsider, &key, 20), 0, "no outsider Initiate is answered");
    for _ in 0..7 {
        allowed.send_to(&[0u8; 100], node_addr()).unwrap();
    }
    // Everything the classifier redirected reached the node, and nothing else did.
    let after = node.wait_counters("counted", |c| {
        c["xdp_drop_not_allowed_packets"] == before["xdp_drop_not_allowed_packets"] + 20
            && c["xdp_drop_malformed_packets"] == before["xdp_drop_malformed_packets"] + 7
            && c["rx_packets"] >= before["rx_packets"] + 50
            && c["xdp_redirect_packets"] == c["afxdp_rx_packets"]
            && c["afxdp_rx_packets"] == c["rx_packets"]
    });
    // Every redirected datagram is one of our 50 Initiates or the status traffic sent in
    // between (each `node status` is a handshake, Initiate and Confirm, then Control
    // requests, retransmitted when a reply is slow): the classifier's count equals what
    // the node accounted for. Status is answered from a snapshot up to 100 ms old, so
    // `before` may predate the tail of the file traffic above (CI once saw 48 datagrams
    // more than the status traffic): that traffic is in the sum too.
    let grew = |name: &str| after[name] - before[name];
    let redirected = grew("xdp_redirect_packets");
    let (challenges, sessions, controls) =
        (grew("handshake_challenges"), grew("sessions_established"), grew("control_requests"));
    let file_traffic = grew("gets") + grew("fragments_stored") + grew("fragments_duplicate");
    let accounted = grew("pings") + controls + challenges + sessions + grew("dropped_replayed") + file_traffic;
    assert_eq!(
        redirected, accounted,
        "redirected datagrams the node did not account for: {after:#?}\nbefore: {before:#?}"
    );
    // The status call that read `after` was answered from a snapshot taken before it.
    assert!(
        challenges >= 50 && controls + 1 >= node.status_calls.get() - calls_before,
        "{challenges} challenges, {controls} control requests"
    );
    assert_eq!(after["dropped_not_allowed"], 0, "outsiders never reach user space");
    assert_eq!(after["dropped_malformed"], 0, "junk never reaches user space");
    assert_eq!(after["afxdp_rx_not_udp"] + after["afxdp_rx_wrong_port"], 0);
    assert!(after["afxdp_kernel_copied_bytes"] > 9_000_000, "copy mode: the kernel copies every packet");
    assert_eq!(after["xdp_drop_no_socket_packets"], 0);

    // The bind mode and the classifier's verdicts are Prometheus metrics too.
    let metrics = in_netns(&topology.node_ns, || {
        let mut stream = TcpStream::connect("127.0.0.1:9777").expect("metrics endpoint");
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    });
    assert!(metrics.lines().any(|l| l == "beeline_afxdp_zero_copy 0"), "{metrics}");
    assert!(metrics.contains("beeline_xdp_packets_total{verdict=\"redirect\"}"), "{metrics}");
    assert!(metrics.contains("beeline_xdp_packets_total{verdict=\"drop_not_allowed\"} 20"), "{metrics}");

    let status = node.process().terminate();
    assert!(status.success(), "node exited with {status}");
    assert!(node.logged("XDP classifier detached"));
    assert!(!topology.node_link().contains("xdp"), "SIGTERM leaves the interface clean: {}", topology.node_link());
}

/// A jumbo-frame link (MTU 9000, more than a 4 KiB frame holds): the node starts with a
/// warning, tells clients a fragment size that fits a frame, and serves; jumbo traffic
/// that is not storage passes the (multi-buffer) classifier to the kernel whole; a storage
/// datagram larger than a frame is dropped by the kernel at the socket and counted, and
/// the node keeps serving.
#[test]
fn a_jumbo_frame_link_keeps_storage_datagrams_within_a_frame() {
    require_kernel_bypass!("a_jumbo_frame_link_keeps_storage_datagrams_within_a_frame");
    let topology = Topology::new();
    topology.set_mtu(9000);
    let dir = tempfile::tempdir().unwrap();
    let mut node = AfxdpNode::new(&topology, dir.path(), &["--allow", &format!("{CLIENT_IP}/32")]);
    node.start();
    assert!(topology.node_link().contains("xdp "), "{}", topology.node_link());
    assert!(node.logged("larger than an arena frame holds"), "{}", node.log());
    let pong = node.ok(&["node", "ping"]);
    let fragment_bytes_max: usize = pong
        .split_whitespace()
        .find_map(|word| word.strip_prefix("fragment_bytes_max="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fragment_bytes_max in {pong:?}"));
    // A 4 KiB frame: 256 bytes of XDP headroom, Ethernet + a VLAN tag, IPv4 + UDP, the
    // Beeline header.
    assert!((3000..=4096 - 256 - 18 - 28 - 80).contains(&fragment_bytes_max), "{pong}");
    node.put_and_get("over-jumbo-link", &pattern(5_000_000, 9));

    // A jumbo ICMP echo, not fragmented (-M do), passes the classifier whole (`run` fails
    // the test unless ping succeeds).
    run(ns_command(&topology.client_ns, "ping").args(["-c", "1", "-W", "5", "-s", "8000", "-M", "do", NODE_IP]));

    // Every datagram the classifier redirected is either delivered to the node or dropped
    // by the kernel at the socket; wait until nothing is in between (a status exchange is
    // itself storage traffic), then send one datagram too large for a frame.
    let settled = |c: &std::collections::HashMap<String, u64>| {
        c["xdp_redirect_packets"] == c["afxdp_rx_packets"] + c["afxdp_kernel_rx_dropped"]
    };
    let before = node.wait_counters("settled", settled);
    let allowed = bound_udp(&topology.client_ns, CLIENT_IP);
    let mut jumbo = initiate_datagram(&node.key(), 7);
    jumbo.resize(8000, 0);
    allowed.send_to(&jumbo, node_addr()).unwrap();
    // The classifier redirected it and the kernel dropped it at the socket: it never
    // reached the node.
    node.wait_counters("the jumbo datagram redirected, then dropped by the kernel", |c| {
        c["afxdp_kernel_rx_dropped"] == before["afxdp_kernel_rx_dropped"] + 1 && settled(c)
    });
    node.put_and_get("after-the-jumbo-datagram", &pattern(100_000, 10));
    let status = node.process().terminate();
    assert!(status.success(), "node exited with {status}");
}

#[test]
fn arp_ping_and_tcp_still_work_while_the_node_runs() {
    require_kernel_bypass!("arp_ping_and_tcp_still_work_while_the_node_runs");
    let topology = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = AfxdpNode::new(&topology, dir.path(), &[]);
    node.start();
    let (_, before) = node.status();

    // ARP: forget the node's MAC, then ping needs a fresh ARP exchange.
    sh(&["ip", "-n", &topology.client_ns, "neigh", "flush", "dev", &topology.client_if]);
    run(ns_command(&topology.client_ns, "ping").args(["-c", "3", "-i", "0.2", "-W", "2", NODE_IP]));
    let neighbours = String::from_utf8_lossy(
        &sh(&["ip", "-n", &topology.client_ns, "neigh", "show", NODE_IP, "dev", &topology.client_if]).stdout,
    )
    .into_owned();
    assert!(neighbours.contains("lladdr"), "ARP resolved the node: {neighbours}");

    // TCP to a port the node's kernel serves, through the same interface.
    let listener = in_netns(&topology.node_ns, || TcpListener::bind((NODE_IP, 9000)).expect("listen"));
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 5];
        stream.read_exact(&mut request).unwrap();
        stream.write_all(&request.map(|b| b.to_ascii_uppercase())).unwrap();
    });
    let mut stream = in_netns(&topology.client_ns, || TcpStream::connect((NODE_IP, 9000)).expect("connect"));
    stream.write_all(b"hello").unwrap();
    let mut reply = [0u8; 5];
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HELLO");
    server.join().unwrap();

    // UDP to another port is the kernel's too.
    let receiver = in_netns(&topology.node_ns, || UdpSocket::bind((NODE_IP, 9001)).unwrap());
    receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bound_udp(&topology.client_ns, CLIENT_IP).send_to(b"not storage", (NODE_IP, 9001)).unwrap();
    let mut buffer = [0u8; 64];
    let (len, _) = receiver.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..len], b"not storage");

    // And the node still serves, and counted all of that as passed to the kernel.
    node.put_and_get("after-tcp", &pattern(2_000_000, 3));
    let after = node.wait_counters("passes", |c| c["xdp_pass_packets"] >= before["xdp_pass_packets"] + 8);
    assert_eq!(after["dropped_malformed"], 0);
}

#[test]
fn allowlist_is_enforced_in_the_kernel_and_changes_at_runtime() {
    require_kernel_bypass!("allowlist_is_enforced_in_the_kernel_and_changes_at_runtime");
    let topology = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let write_allow = |allow: &str| std::fs::write(&config, format!("allow = [{allow}]\n")).unwrap();
    write_allow(&format!("\"{CLIENT_IP}/32\""));
    let mut node = AfxdpNode::new(&topology, dir.path(), &["--config", config.to_str().unwrap()]);
    node.start();
    let key = node.key();
    let outsider = bound_udp(&topology.client_ns, OUTSIDER_IP);
    assert_eq!(ping_exchange(&outsider, &key, 10), 0);
    let counters = node.wait_counters("dropped", |c| c["xdp_drop_not_allowed_packets"] >= 10);
    assert_eq!(counters["dropped_not_allowed"], 0, "dropped in the kernel, never seen by the node");
    let seen_by_node = counters["rx_packets"];

    // Widen the allowlist at runtime: rewrite the config and send SIGHUP.
    write_allow("\"10.77.0.0/24\"");
    node.process().signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping_exchange(&outsider, &key, 1) == 0 {
        assert!(Instant::now() < deadline, "the widened allowlist never took effect:\n{}", node.log());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.logged("allowlist updated") {
        assert!(Instant::now() < deadline, "the reload was not logged");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The status snapshot is published every 100 ms: wait for it to show the new packets.
    node.wait_counters("the widened allowlist lets packets reach the node", |c| c["rx_packets"] > seen_by_node);

    // And narrow it again.
    write_allow(&format!("\"{CLIENT_IP}/32\""));
    node.process().signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping_exchange(&outsider, &key, 1) != 0 {
        assert!(Instant::now() < deadline, "the narrowed allowlist never took effect");
    }
    let before = node.status().1["xdp_drop_not_allowed_packets"];
    assert_eq!(ping_exchange(&outsider, &key, 5), 0);
    node.wait_counters("dropped again", |c| c["xdp_drop_not_allowed_packets"] >= before + 5);
    // The allowed client was never affected.
    node.put_and_get("still-allowed", &pattern(1_000_000, 8));
}

#[test]
fn sigkill_leaves_a_clean_interface_and_the_node_serves_again() {
    require_kernel_bypass!("sigkill_leaves_a_clean_interface_and_the_node_serves_again");
    let topology = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = AfxdpNode::new(&topology, dir.path(), &[]);
    node.start();
    node.put_and_get("before-kill", &pattern(3_000_000, 1));
    node.process().kill9();
    // Nothing is pinned: the kernel detaches the classifier when the process's link
    // closes. Poll (bounded) rather than assume when that happens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while topology.node_link().contains("xdp") {
        assert!(Instant::now() < deadline, "the classifier outlived the killed node: {}", topology.node_link());
        std::thread::sleep(Duration::from_millis(20));
    }
    node.start();
    let back = node.cli(&["get", "before-kill", "-o", "-"]);
    assert!(back.status.success() && back.stdout == pattern(3_000_000, 1), "acknowledged data survives kill -9");
    node.put_and_get("after-restart", &pattern(2_000_000, 2));
}

/// Compiles a one-line XDP program that is not Beeline's, for the foreign-program test.
fn foreign_program(dir: &Path) -> Option<PathBuf> {
    let source = dir.join("other.c");
    std::fs::write(
        &source,
        "#include <linux/bpf.h>\n__attribute__((section(\"xdp\"), used)) int other_xdp(struct xdp_md *ctx) \
         { return XDP_PASS; }\nchar LICENSE[] __attribute__((section(\"license\"), used)) = \"GPL\";\n",
    )
    .unwrap();
    let object = dir.join("other.o");
    let status = Command::new("clang")
        .args(["-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .ok()?;
    status.success().then_some(object)
}

#[test]
fn stale_classifier_is_replaced_and_foreign_programs_are_not() {
    require_kernel_bypass!("stale_classifier_is_replaced_and_foreign_programs_are_not");
    let topology = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let (n, interface) = (&topology.node_ns, &topology.node_if);

    // A stale Beeline classifier, attached through netlink as an older run (or a kernel
    // without bpf links) would have left it.
    let object = dir.path().join("beeline_xdp.o");
    std::fs::write(&object, beeline_xdp::object()).unwrap();
    sh(&[
        "ip",
        "-n",
        n,
        "link",
        "set",
        "dev",
        interface,
        "xdpdrv",
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp.frags",
    ]);
    assert!(topology.node_link().contains("xdp"), "stale program attached");
    let mut node = AfxdpNode::new(&topology, dir.path(), &[]);
    node.start();
    assert!(node.logged("replaced a stale Beeline XDP classifier"));
    node.put_and_get("over-stale", &pattern(1_500_000, 4));

    // A second node on the same interface finds the first one's live classifier.
    let mut second = AfxdpNode::new(&topology, dir.path(), &[]);
    second.data = "data2".to_owned();
    let message = second.start_fails();
    assert!(message.contains("another `beeline node run` serves this interface"), "{message}");
    node.put_and_get("still-serving", &pattern(100_000, 5));
    assert!(node.process().terminate().success());
    assert!(!topology.node_link().contains("xdp"));

    // A program that is not Beeline's is never replaced.
    let Some(other) = foreign_program(dir.path()) else {
        beeline_dataplane::testkit::skip(
            "stale_classifier_is_replaced_and_foreign_programs_are_not (the foreign-program half)",
            "clang cannot build a bpf object here",
        );
        return;
    };
    sh(&["ip", "-n", n, "link", "set", "dev", interface, "xdpdrv", "obj", other.to_str().unwrap(), "sec", "xdp"]);
    let message = node.start_fails();
    let line = message.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("beeline: ") && line.contains("other_xdp") && line.contains("xdp off"),
        "one line naming the program and the fix: {message}"
    );
    assert!(topology.node_link().contains("xdp"), "the foreign program is still there");
    sh(&["ip", "-n", n, "link", "set", "dev", interface, "xdpdrv", "off"]);
}

#[test]
fn require_zero_copy_refuses_veth_and_generic_mode_serves() {
    require_kernel_bypass!("require_zero_copy_refuses_veth_and_generic_mode_serves");
    let topology = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let node = AfxdpNode::new(&topology, dir.path(), &["--require-zero-copy"]);
    let message = node.start_fails();
    let line = message.lines().last().unwrap_or_default();
    assert!(line.contains("zero-copy") && line.contains("require_zero_copy"), "{message}");
    assert!(!topology.node_link().contains("xdp"), "a failed start leaves the interface clean");

    let mut generic = AfxdpNode::new(&topology, dir.path(), &["--xdp-mode", "generic"]);
    generic.start();
    assert!(topology.node_link().contains("xdpgeneric"), "{}", topology.node_link());
    let (backend, _) = generic.status();
    assert!(backend.contains("XDP classifier generic"), "{backend}");
    generic.put_and_get("generic", &pattern(3_000_000, 6));
}

/// Loss (5%), delay and reordering with the kernel's own packet schedulers, both ways on
/// the client's veth end (AF_XDP transmits bypass the node side's qdiscs in copy mode).
/// Uses `tc netem` where the kernel has it. Kernels built without sch_netem (like this
/// project's CI machine) get the same impairments from what they do have: a cls_bpf
/// filter that drops 5% of IPv4 packets at random, and a second one that sends 30% of
/// them through an ifb device with a token-bucket queue, which delays them (up to 20 ms
/// under load) and so reorders them behind the rest. Returns what was set up.
fn impair(topology: &Topology, dir: &Path) -> Option<String> {
    let (c, vc) = (&topology.client_ns, &topology.client_if);
    let ifb_out = format!("{}e", topology.client_if);
    let ifb_in = format!("{}i", topology.client_if);
    for ifb in [&ifb_out, &ifb_in] {
        sh(&["ip", "-n", c, "link", "add", ifb, "type", "ifb"]);
        sh(&["ip", "-n", c, "link", "set", ifb, "up"]);
    }
    let tc = |args: &[&str]| ns_command(c, "tc").args(args).output().map(|o| o.status.success()).unwrap_or(false);
    let netem = ["loss", "5%", "delay", "4ms", "2ms", "reorder", "25%", "50%"];
    if tc(&[&["qdisc", "add", "dev", vc, "root", "netem"][..], &netem].concat()) {
        sh(&["ip", "netns", "exec", c, "tc", "qdisc", "add", "dev", vc, "clsact"]);
        let u32_all =
            ["protocol", "all", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev"];
        run(ns_command(c, "tc").args(["filter", "add", "dev", vc, "ingress", "prio", "1"]).args(u32_all).arg(&ifb_in));
        run(ns_command(c, "tc").args(["qdisc", "add", "dev", &ifb_in, "root", "netem"]).args(netem));
        return Some("tc netem: loss 5%, delay 4±2 ms, reorder 25% (both directions)".into());
    }
    eprintln!("this kernel has no sch_netem: impairing with cls_bpf random drop + ifb/tbf delay instead");
    let source = dir.join("impair.c");
    std::fs::write(
        &source,
        r#"#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#define SEC(n) __attribute__((section(n), used))
static __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;
SEC("tc/drop") int impair_drop(struct __sk_buff *skb) {
	if (skb->protocol != __builtin_bswap16(0x0800)) return TC_ACT_UNSPEC;
	return bpf_get_prandom_u32() % 1000 < 50 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
SEC("tc/slow") int impair_slow(struct __sk_buff *skb) {
	if (skb->protocol != __builtin_bswap16(0x0800)) return 0;
	return bpf_get_prandom_u32() % 100 < 30 ? -1 : 0;
}
char LICENSE[] SEC("license") = "GPL";
"#,
    )
    .unwrap();
    let object = dir.join("impair.o");
    let built = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        return None;
    }
    let object = object.to_str().unwrap();
    sh(&["ip", "netns", "exec", c, "tc", "qdisc", "add", "dev", vc, "clsact"]);
    for (hook, ifb) in [("egress", &ifb_out), ("ingress", &ifb_in)] {
        sh(&[
            "ip", "netns", "exec", c, "tc", "filter", "add", "dev", vc, hook, "prio", "1", "bpf", "da", "obj", object,
            "sec", "tc/drop",
        ]);
        sh(&[
            "ip", "netns", "exec", c, "tc", "filter", "add", "dev", vc, hook, "prio", "2", "bpf", "obj", object, "sec",
            "tc/slow", "action", "mirred", "egress", "redirect", "dev", ifb,
        ]);
        sh(&[
            "ip", "netns", "exec", c, "tc", "qdisc", "add", "dev", ifb, "root", "tbf", "rate", "50mbit", "burst",
            "16kb", "latency", "20ms",
        ]);
    }
    Some("cls_bpf: drop 5%, 30% through ifb+tbf (delay <= 20 ms, reordering), both directions".into())
}

#[test]
fn files_round_trip_under_loss_delay_and_reordering() {
    require_kernel_bypass!("files_round_trip_under_loss_delay_and_reordering");
    let topology = Topology::new();
    let dir = tempfile::tempdir().unwrap();
    let mut node = AfxdpNode::new(&topology, dir.path(), &[]);
    node.start();
    let Some(how) = impair(&topology, dir.path()) else {
        beeline_dataplane::testkit::skip(
            "files_round_trip_under_loss_delay_and_reordering",
            "neither sch_netem nor clang for cls_bpf",
        );
        return;
    };
    eprintln!("impairment: {how}");
    // The path really loses packets: ~5% each way, so ~10% of pings go unanswered.
    let ping = run(ns_command(&topology.client_ns, "ping").args(["-c", "200", "-i", "0.005", "-q", NODE_IP]));
    let summary = String::from_utf8_lossy(&ping.stdout).into_owned();
    let received: u32 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read ping's summary: {summary}"));
    assert!(received <= 196, "at least 2% loss expected: {summary}");

    for (index, size) in [1usize, 3_000_000, (4 << 20) + 7, 6_500_000].into_iter().enumerate() {
        node.put_and_get(&format!("lossy-{size}"), &pattern(size, 40 + index as u64));
    }
    let (_, counters) = node.status();
    assert_eq!(counters["dropped_malformed"] + counters["dropped_bad_mac"], 0);
}
