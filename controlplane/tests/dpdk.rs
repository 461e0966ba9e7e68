//! The `dpdk` backend end to end on DPDK's virtual devices, on hugepages this test
//! reserves: `net_af_xdp` on a veth with Beeline's classifier as its XDP program, and
//! `net_virtio_user` against `net_vhost` (the virtio driver path of a VM) through
//! `beeline-dpdk-forward`, which bridges the vhost-user socket to a tap. Clients are the
//! `beeline` CLI on the kernel stack of another network namespace.
//!
//! Built only with `--features dpdk`. Needs root; skips with a message without it. Every
//! namespace is removed by a Drop guard, whatever the outcome. Hugepages stay reserved
//! (512 x 2 MiB) after the run: other DPDK users of the machine expect them.
#![cfg(feature = "dpdk")]

mod common;
use common::{End, Namespaces, Process, have, is_root, ns_command, pattern, run, sh, unique_id, veth_pair};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_beeline");
const FORWARD_BIN: &str = env!("CARGO_BIN_EXE_beeline-dpdk-forward");
const PORT: u16 = 7777;
const HUGEPAGES_WANTED: u64 = 512;

fn missing_requirement() -> Option<String> {
    if !is_root() {
        return Some("needs root (hugepages, network namespaces, XDP)".into());
    }
    for tool in ["ip", "ethtool"] {
        if !have(tool) {
            return Some(format!("`{tool}` is not installed (ci/setup.sh installs it)"));
        }
    }
    None
}

macro_rules! require_root {
    ($name:literal) => {
        if let Some(why) = missing_requirement() {
            beeline_dataplane::testkit::skip($name, &why);
            return;
        }
    };
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0)
}

/// Mounts hugetlbfs and reserves the 2 MiB pages the nodes and forwarders need. Every
/// test calls it before it starts a DPDK process, so the start without hugepages
/// ([`refusal_without_hugepages`]) runs first, once, while no DPDK process of this binary
/// has run: the kernel frees an exited process's hugepages a little late, and freed
/// while `nr_hugepages` was 0 they showed as free for a moment, enough for the EAL.
fn reserve_hugepages() {
    refusal_without_hugepages();
    ensure_hugepages_reserved();
}

fn ensure_hugepages_reserved() {
    let mounted = std::fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.contains(" hugetlbfs "));
    if !mounted {
        std::fs::create_dir_all("/dev/hugepages").unwrap();
        sh(&["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"]);
    }
    if read_number(NR_HUGEPAGES) < HUGEPAGES_WANTED {
        std::fs::write(NR_HUGEPAGES, HUGEPAGES_WANTED.to_string()).unwrap();
    }
    let available = available_2m();
    assert!(available >= 128, "only {available} free 2 MiB hugepages after reserving {HUGEPAGES_WANTED}");
}

/// Free 2 MiB pages less those other processes' mappings have reserved (theirs).
fn available_2m() -> u64 {
    read_number(&format!("{HUGEPAGES_2M}/free_hugepages"))
        .saturating_sub(read_number(&format!("{HUGEPAGES_2M}/resv_hugepages")))
}

/// The last line of a node started with `--hugepages require` on a host with no hugepage
/// free, or why that cannot be shown here. Runs once (see [`reserve_hugepages`]).
fn refusal_without_hugepages() -> &'static Result<String, String> {
    static REFUSAL: OnceLock<Result<String, String>> = OnceLock::new();
    REFUSAL.get_or_init(|| {
        ensure_hugepages_reserved();
        struct Restore(u64);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = std::fs::write(NR_HUGEPAGES, self.0.to_string());
            }
        }
        let _restore = Restore(read_number(NR_HUGEPAGES).max(HUGEPAGES_WANTED));
        // Another process's reservation outlives `nr_hugepages = 0` and shows as free
        // pages: the node must not count them (it did, and failed later building its pool).
        let _reserved = ReservedHugepages::new(4);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::fs::write(NR_HUGEPAGES, "0").unwrap();
            if available_2m() == 0 {
                break;
            }
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
            let hugepages: Vec<&str> = meminfo.lines().filter(|line| line.starts_with("HugePages_")).collect();
            assert!(Instant::now() < deadline, "2 MiB pages still free 10 s after nr_hugepages = 0: {hugepages:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(read_number(&format!("{HUGEPAGES_2M}/free_hugepages")) >= 4, "the reserved pages are not counted free");
        let other_sizes: u64 = std::fs::read_dir("/sys/kernel/mm/hugepages")
            .unwrap()
            .map(|size| size.unwrap().path())
            .filter(|size| !size.ends_with("hugepages-2048kB"))
            .map(|size| {
                let read = |file: &str| read_number(size.join(file).to_str().unwrap());
                read("free_hugepages").saturating_sub(read("resv_hugepages"))
            })
            .sum();
        if other_sizes > 0 {
            return Err(format!(
                "{other_sizes} hugepages of another size are free on this host, so DPDK has hugepages"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        Ok(start_fails(&["--dpdk-devices", "net_tap0,iface=bdfail0", "--hugepages", "require"], dir.path()))
    })
}

const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// A 2 MiB hugetlb mapping that reserves `pages` pages and touches none, as another
/// process's DPDK or shared-memory region does: the kernel keeps such pages through
/// `nr_hugepages = 0` and still counts them in `free_hugepages`.
struct ReservedHugepages {
    address: *mut libc::c_void,
    length: usize,
    _memfd: std::os::fd::OwnedFd,
}

impl ReservedHugepages {
    fn new(pages: usize) -> ReservedHugepages {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let flags = libc::MFD_CLOEXEC | libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
        // SAFETY: the name is a NUL-terminated literal; the call only creates a descriptor.
        let fd = unsafe { libc::memfd_create(c"beeline-test-reserved".as_ptr(), flags) };
        assert!(fd >= 0, "memfd_create(MFD_HUGETLB): {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just created and is owned by nothing else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let length = pages * 2 * 1024 * 1024;
        std::fs::File::from(memfd.try_clone().unwrap()).set_len(length as u64).unwrap();
        // SAFETY: a fresh shared mapping of a memfd this guard owns, never read or written
        // here; `Drop` unmaps exactly this address and length.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(address, libc::MAP_FAILED, "mmap of {pages} hugepages: {}", std::io::Error::last_os_error());
        ReservedHugepages { address, length, _memfd: memfd }
    }
}

impl Drop for ReservedHugepages {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once.
        unsafe { libc::munmap(self.address, self.length) };
    }
}

/// A DPDK node and the namespace its clients run in.
struct DpdkNode {
    node_ns: String,
    client_ns: String,
    dir: PathBuf,
    addr: String,
    device: String,
    file_prefix: String,
    extra: Vec<String>,
    process: Option<Process>,
}

impl DpdkNode {
    fn command(&self) -> Command {
        let mut command = ns_command(&self.node_ns, BIN);
        command.args(["node", "run", "--backend", "dpdk", "--listen", &self.addr, "--dpdk-devices", &self.device]);
        if !self.extra.iter().any(|arg| arg == "--arena-frames") {
            command.args(["--arena-frames", "4096"]);
        }
        if !self.extra.iter().any(|arg| arg == "--hugepages") {
            command.args(["--hugepages", "require"]);
        }
        command
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--key-file")
            .arg(self.dir.join("cluster.key"))
            .args(["--dpdk-file-prefix", &self.file_prefix])
            .args(&self.extra)
            .env("BEELINE_LOG", "info");
        command
    }

    /// Starts the node and waits (bounded) until it answers a ping over the DPDK port.
    fn start(&mut self) {
        let mut process = Process::spawn(self.command());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.cli(&["node", "ping"]).status.success() {
            if let Some(status) = process.exited() {
                panic!("node exited during start-up with {status}:\n{}", process.log());
            }
            assert!(Instant::now() < deadline, "node did not answer within 30 s:\n{}", process.log());
        }
        self.process = Some(process);
    }

    fn cli(&self, args: &[&str]) -> Output {
        ns_command(&self.client_ns, BIN)
            .args(args)
            .args(["--node", &self.addr, "--key-file"])
            .arg(self.dir.join("cluster.key"))
            .output()
            .expect("run beeline")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        let log = self.process.as_ref().map(Process::log).unwrap_or_default();
        assert!(
            output.status.success(),
            "beeline {args:?} failed: {}\nnode log:\n{log}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn status(&self) -> (String, HashMap<String, u64>) {
        let text = self.ok(&["node", "status"]);
        let backend = text.lines().find_map(|l| l.strip_prefix("backend:")).unwrap_or("").trim().to_owned();
        let counters = text
            .lines()
            .filter_map(|line| {
                let mut words = line.strip_prefix("  ")?.split_whitespace();
                Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
            })
            .collect();
        (backend, counters)
    }

    fn put(&self, name: &str, data: &[u8]) {
        let path = self.dir.join(name);
        std::fs::write(&path, data).unwrap();
        self.ok(&["put", path.to_str().unwrap(), "--as", name]);
    }

    fn get_matches(&self, name: &str, data: &[u8]) {
        let back = self.dir.join(format!("{name}.back"));
        self.ok(&["get", name, "-o", back.to_str().unwrap()]);
        assert!(std::fs::read(&back).unwrap() == data, "{name} ({} bytes) came back different", data.len());
    }
}

fn files(salt: u64) -> Vec<(String, Vec<u8>)> {
    [0usize, 1, 1_000_001, 5 << 20]
        .iter()
        .map(|len| (format!("file-{len}"), pattern(*len, salt + *len as u64)))
        .collect()
}

#[test]
fn net_af_xdp_node_round_trips_files_behind_the_classifier() {
    require_root!("net_af_xdp_node_round_trips_files_behind_the_classifier");
    reserve_hugepages();
    let id = unique_id();
    let (node_ns, client_ns) = (format!("bdn{id}"), format!("bdc{id}"));
    let (node_if, client_if) = (format!("bdn{id}"), format!("bdc{id}"));
    let _namespaces = Namespaces::new(&[&node_ns, &client_ns]);
    // Room for two queues each way (used below); one to start with, as a node serving
    // queue 0 only needs (storage packets on other queues would find no socket).
    veth_pair(
        &End { ns: &client_ns, name: &client_if, addresses: &["10.81.0.2/24"] },
        &End { ns: &node_ns, name: &node_if, addresses: &["10.81.0.1/24"] },
        Some(2),
    );
    run(ns_command(&node_ns, "ethtool").args(["-L", &node_if, "rx", "1", "tx", "1"]));
    run(ns_command(&client_ns, "ethtool").args(["-L", &client_if, "rx", "1", "tx", "1"]));
    // The kernel sender's veth leaves UDP checksums to an offload that never runs; real
    // NICs deliver complete ones, so make the test path do too.
    run(ns_command(&client_ns, "ethtool").args(["-K", &client_if, "tx", "off"]));

    let dir = tempfile::tempdir().unwrap();
    let mut node = DpdkNode {
        node_ns: node_ns.clone(),
        client_ns: client_ns.clone(),
        dir: dir.path().to_owned(),
        addr: format!("10.81.0.1:{PORT}"),
        device: format!("net_af_xdp0,iface={node_if}"),
        file_prefix: format!("bd-afxdp-{id}"),
        // First on normal pages (the EAL's --no-huge), restarted on hugepages below.
        extra: vec!["--hugepages".into(), "off".into()],
        process: None,
    };
    node.start();
    let log = node.process.as_ref().unwrap().log();
    assert!(log.contains("--no-huge --no-shconf -m 272"), "hugepages = off did not reach the EAL as --no-huge:\n{log}");
    let link =
        String::from_utf8_lossy(&sh(&["ip", "-n", &node_ns, "-d", "link", "show", &node_if]).stdout).into_owned();
    assert!(link.contains("prog/xdp"), "no XDP program on the node's veth: {link}");

    let files = files(1);
    for (name, data) in &files {
        node.put(name, data);
    }
    for (name, data) in &files {
        node.get_matches(name, data);
    }
    // ARP and ping are the kernel's on this path: the classifier passes them.
    run(ns_command(&client_ns, "ping").args(["-c", "2", "-W", "2", "10.81.0.1"]));
    let (backend, counters) = node.status();
    assert!(backend.contains("net_af_xdp") && backend.contains("XDP classifier"), "{backend}");
    assert!(counters["xdp_redirect_packets"] > 0, "{counters:#?}");
    assert!(counters["xdp_pass_packets"] > 0, "ARP/ICMP never reached the kernel: {counters:#?}");
    assert_eq!(counters["dpdk_arp_replies"], 0, "the node answered ARP the kernel owns");
    assert!(counters["dpdk_rx_packets"] >= counters["fragments_stored"], "{counters:#?}");
    // 0 B stores no chunk, 1 B and 1 MB one each, 5 MiB two (4 MiB chunks).
    assert_eq!(counters["chunks_stored"], 4, "{counters:#?}");

    // A graceful stop closes the port, and the PMD takes its program off the interface.
    let status = node.process.as_mut().unwrap().terminate();
    assert!(status.success(), "node exited with {status}");
    let link =
        String::from_utf8_lossy(&sh(&["ip", "-n", &node_ns, "-d", "link", "show", &node_if]).stdout).into_owned();
    assert!(!link.contains("prog/xdp"), "XDP program left attached after the node stopped: {link}");

    // Restarted on the same data and on hugepages: every file is still there, and
    // Prometheus sees the port.
    node.extra = vec!["--metrics-listen".into(), "127.0.0.1:9777".into()];
    node.start();
    let log = node.process.as_ref().unwrap().log();
    assert!(log.contains("--single-file-segments") && !log.contains("--no-huge"), "{log}");
    for (name, data) in &files {
        node.get_matches(name, data);
    }
    // Prometheus sees the backend: per-queue counts, frame levels, classifier verdicts.
    let scrape = run(ns_command(&node_ns, "bash")
        .args(["-c", "exec 3<>/dev/tcp/127.0.0.1/9777; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"]));
    let metrics = String::from_utf8_lossy(&scrape.stdout);
    for expected in [
        "beeline_up{backend=\"dpdk\"} 1",
        "beeline_dpdk_rx_queue_packets_total{queue=\"0\"}",
        "# TYPE beeline_dpdk_frames_pooled gauge",
        "beeline_xdp_packets_total{verdict=\"redirect\"}",
    ] {
        assert!(metrics.contains(expected), "missing {expected:?} in /metrics:\n{metrics}");
    }
    let status = node.process.as_mut().unwrap().terminate();
    assert!(status.success(), "node exited with {status}");
}

#[test]
fn virtio_user_node_round_trips_files_through_vhost_user() {
    require_root!("virtio_user_node_round_trips_files_through_vhost_user");
    reserve_hugepages();
    let id = unique_id();
    let (node_ns, client_ns) = (format!("bdvn{id}"), format!("bdvc{id}"));
    let _namespaces = Namespaces::new(&[&node_ns, &client_ns]);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vhost.sock");
    let tap = format!("bdt{id}");

    // The hypervisor's side: vhost-user server on the socket, bridged to a tap in the
    // client's namespace.
    let mut forward = ns_command(&client_ns, FORWARD_BIN);
    forward
        .args(["-l", "1", "--in-memory", "--single-file-segments", "--no-pci", "--iova-mode=va"])
        .args(["--file-prefix", &format!("bd-fwd-{id}")])
        .arg("--vdev")
        .arg(format!("net_vhost0,iface={},queues=2", socket.display()))
        .arg("--vdev")
        .arg(format!("net_tap0,iface={tap}"));
    let mut forwarder = Process::spawn(forward);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(socket.exists()
        && Path::new(&format!("/var/run/netns/{client_ns}")).exists()
        && tap_exists(&client_ns, &tap))
    {
        if let Some(status) = forwarder.exited() {
            panic!("forwarder exited with {status}:\n{}", forwarder.log());
        }
        assert!(Instant::now() < deadline, "forwarder never created its socket and tap:\n{}", forwarder.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    sh(&["ip", "-n", &client_ns, "addr", "add", "10.82.0.1/24", "dev", &tap]);
    // IPv6 on the tap, without duplicate address detection: its link-local is usable at
    // once, not tentative for a second, when the ping6 below needs it.
    for setting in ["disable_ipv6=0", "accept_dad=0"] {
        run(ns_command(&client_ns, "sysctl").args(["-qw", &format!("net.ipv6.conf.{tap}.{setting}")]));
    }
    sh(&["ip", "-n", &client_ns, "link", "set", &tap, "down"]);
    sh(&["ip", "-n", &client_ns, "link", "set", &tap, "up"]);

    let mut node = DpdkNode {
        node_ns,
        client_ns: client_ns.clone(),
        dir: dir.path().to_owned(),
        addr: format!("10.82.0.2:{PORT}"),
        device: format!("net_virtio_user0,path={},queues=2", socket.display()),
        file_prefix: format!("bd-virtio-{id}"),
        // Two RX queues: the forwarder spreads flows over them as a NIC's RSS would.
        extra: vec!["--queues".into(), "2".into(), "--arena-frames".into(), "8192".into()],
        process: None,
    };
    node.start();
    // The kernel no longer sees this port: the node itself answers ARP and ping.
    run(ns_command(&client_ns, "ping").args(["-c", "2", "-W", "2", "10.82.0.2"]));
    ping6_link_local(&node, &tap);
    let files = files(2);
    for (name, data) in &files {
        node.put(name, data);
    }
    for (name, data) in &files {
        node.get_matches(name, data);
    }
    let (backend, counters) = node.status();
    assert!(backend.contains("net_virtio_user"), "{backend}");
    assert!(counters["dpdk_arp_replies"] >= 1, "{counters:#?}");
    assert!(counters["dpdk_echo_replies"] >= 2, "{counters:#?}");
    assert!(counters["dpdk_nd_replies"] >= 1, "{counters:#?}");
    assert!(counters["dpdk_echo6_replies"] >= 3, "{counters:#?}");
    assert_eq!(counters["dpdk_port_rx_nombuf"], 0, "the pool ran dry: {counters:#?}");
    assert!(backend.contains("on 2 queue(s)"), "{backend}");
    // Every received packet is counted on one of the two queues, and flows (the CLI's
    // sockets, one per command) landed on both.
    let (queue0, queue1) = (counters["dpdk_rxq0_packets"], counters["dpdk_rxq1_packets"]);
    assert_eq!(queue0 + queue1, counters["dpdk_port_ipackets"], "{counters:#?}");
    assert!(queue0 > 0 && queue1 > 0, "one queue got nothing: {queue0} / {queue1}");

    // Garbage from the network is dropped and counted, never fatal: datagrams to the
    // storage port that are not Beeline's, and UDP to a port the node does not serve.
    let garbage = "for i in $(seq 20); do printf 'not a beeline datagram %s' $i > /dev/udp/10.82.0.2/7777; done; \
                   for i in $(seq 5); do printf x > /dev/udp/10.82.0.2/9999; done";
    run(ns_command(&client_ns, "bash").args(["-c", garbage]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, after) = node.status();
        let malformed = after["dropped_malformed"] - counters["dropped_malformed"];
        let not_ours = after["dpdk_rx_not_ours"] - counters["dpdk_rx_not_ours"];
        if malformed >= 20 && not_ours >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "garbage not counted: malformed +{malformed}, not ours +{not_ours}");
        std::thread::sleep(Duration::from_millis(50));
    }
    run(ns_command(&client_ns, "ping").args(["-c", "1", "-W", "2", "10.82.0.2"]));

    // SIGKILL, restart on the same data: every acknowledged file is still there.
    node.process.as_mut().unwrap().kill9();
    node.start();
    for (name, data) in &files {
        node.get_matches(name, data);
    }
    let status = node.process.as_mut().unwrap().terminate();
    assert!(status.success(), "node exited with {status}");
    let status = forwarder.terminate();
    assert!(status.success(), "forwarder exited with {status}:\n{}", forwarder.log());
}

/// The node answers neighbour discovery and ping6 for the link-local address of its port
/// MAC: the peer resolves it (its neighbour table then holds the port MAC) and pings it.
fn ping6_link_local(node: &DpdkNode, tap: &str) {
    let (backend, _) = node.status();
    let word_after = |label: &str| {
        let at = backend.find(label).unwrap_or_else(|| panic!("no {label:?} in {backend}")) + label.len();
        backend[at..].split([',', ' ']).next().unwrap().to_owned()
    };
    let (mac, link_local) = (word_after("mac "), word_after("link-local "));
    assert!(link_local.starts_with("fe80::"), "{backend}");
    let target = format!("{link_local}%{tap}");
    run(ns_command(&node.client_ns, "ping").args(["-6", "-c", "3", "-W", "2", &target]));
    let neighbours = run(ns_command(&node.client_ns, "ip").args(["-6", "neigh", "show", &link_local, "dev", tap]));
    let neighbours = String::from_utf8_lossy(&neighbours.stdout);
    assert!(neighbours.contains(&format!("lladdr {mac}")), "no neighbour entry {link_local} -> {mac}: {neighbours}");
}

fn tap_exists(ns: &str, tap: &str) -> bool {
    Command::new("ip").args(["-n", ns, "link", "show", tap]).output().is_ok_and(|o| o.status.success())
}

/// Runs a node expected to fail at start-up; returns its last stderr line.
fn start_fails(extra: &[&str], dir: &Path) -> String {
    let id = unique_id();
    let output = Command::new(BIN)
        .args(["node", "run", "--backend", "dpdk", "--listen", "10.83.0.1:7777", "--arena-frames", "4096"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--key-file")
        .arg(dir.join("cluster.key"))
        .args(["--dpdk-file-prefix", &format!("bd-fail-{id}")])
        .args(extra)
        .output()
        .expect("run node");
    assert!(!output.status.success(), "the node started but should not have");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("beeline: "), "the last line is not beeline's error:\n{stderr}");
    last
}

#[test]
fn eal_refusals_are_one_clear_line() {
    require_root!("eal_refusals_are_one_clear_line");
    let dir = tempfile::tempdir().unwrap();
    {
        reserve_hugepages();
        let line = start_fails(&["--dpdk-devices", "net_nosuchdriver0,iface=x", "--hugepages", "require"], dir.path());
        assert!(line.contains("dpdk_devices") && line.contains("net_nosuchdriver0"), "{line}");
    }
    // No hugepages at all (started once, before any other DPDK process of this binary).
    match refusal_without_hugepages() {
        Ok(line) => assert!(line.contains("no free hugepages") && line.contains("nr_hugepages"), "{line}"),
        Err(why) => beeline_dataplane::testkit::skip("eal_refusals_are_one_clear_line (no hugepages)", why),
    }
}
