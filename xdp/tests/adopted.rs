//! `AdoptedClassifier` against a classifier that another loader attached, the way DPDK's
//! `net_af_xdp` PMD does with `xdp_prog=<beeline_xdp.o>`: it loads the object file itself
//! and attaches it, and Beeline only configures it. libbpf is not available from Rust, so
//! the test plays the PMD with an independent aya loader reading the object from a file,
//! kept alive for as long as the "port" is open.
//!
//! Runs on a veth pair between two network namespaces (unique names, removed by a Drop
//! guard whatever the outcome); needs root and `ip`, and skips with a message otherwise.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{Array, Map};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use beeline_xdp::{AdoptedClassifier, PROGRAM_NAME, Verdict, XSKS_MAP, XdpAttachMode, XdpError};

const NODE_IP: &str = "10.78.0.1";
const CLIENT_IP: &str = "10.78.0.2";
const PORT: u16 = 7777;

/// Why the machine cannot run this test, if it cannot.
fn missing_requirement() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, loading and attaching XDP programs)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

fn sh(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A unique suffix for this process's names.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{}{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Two namespaces joined by a veth pair, and a scratch directory; all removed on drop.
struct Topology {
    node_ns: String,
    client_ns: String,
    node_if: String,
    client_if: String,
    dir: PathBuf,
}

impl Topology {
    fn new() -> Topology {
        let id = unique();
        let dir = std::env::temp_dir().join(format!("beeline-xdp-adopt-{id}"));
        let topology = Topology {
            node_ns: format!("beeline-an{id}"),
            client_ns: format!("beeline-ac{id}"),
            node_if: format!("bxn{id}"),
            client_if: format!("bxc{id}"),
            dir,
        };
        // Built up step by step inside the guard, so a failing step still cleans up.
        std::fs::create_dir_all(&topology.dir).unwrap();
        let (n, c) = (&topology.node_ns, &topology.client_ns);
        sh(&["ip", "netns", "add", n]);
        sh(&["ip", "netns", "add", c]);
        sh(&[
            "ip",
            "link",
            "add",
            &topology.client_if,
            "netns",
            c,
            "type",
            "veth",
            "peer",
            "name",
            &topology.node_if,
            "netns",
            n,
        ]);
        sh(&["ip", "-n", n, "addr", "add", &format!("{NODE_IP}/24"), "dev", &topology.node_if]);
        sh(&["ip", "-n", c, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", &topology.client_if]);
        for (ns, interface) in [(n, &topology.node_if), (c, &topology.client_if)] {
            sh(&["ip", "-n", ns, "link", "set", interface, "up"]);
        }
        topology
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.node_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`: interface names,
/// netlink queries, attachments and sockets of `f` are that namespace's. The test's own
/// thread never changes namespace.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let handle = File::open(format!("/var/run/netns/{ns}")).expect("open the namespace");
                // SAFETY: `handle` is an open namespace file; setns only changes this
                // thread's network namespace, and the thread ends after `f`.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread")
    })
}

/// What DPDK's PMD does with `xdp_prog=PATH` (there with libbpf): loads the object file,
/// attaches its program, letting the kernel choose the mode, and holds it until the port
/// closes (here: until the returned `Ebpf` is dropped).
fn load_like_the_pmd(object: &Path, interface: &str, program: &str) -> (Ebpf, u32) {
    let mut ebpf = EbpfLoader::new().load_file(object).expect("load the object");
    let xdp: &mut Xdp = ebpf.program_mut(program).expect("the program").try_into().expect("an XDP program");
    xdp.load().expect("load the program into the kernel");
    let id = xdp.info().expect("program info").id();
    xdp.attach(interface, XdpMode::Default).expect("attach");
    (ebpf, id)
}

/// The storage port in the classifier's `config` map, read through the loader's handle.
fn configured_port(ebpf: &Ebpf) -> u16 {
    // `struct beeline_config` is {port_be: u16, reserved: u16, flags: u32}.
    let config: Array<_, [u8; 8]> = Array::try_from(ebpf.map("config").expect("config map")).unwrap();
    let value = config.get(&0, 0).unwrap();
    u16::from_be_bytes([value[0], value[1]])
}

/// The `(prefix length, network)` keys of an allowlist trie, read through the loader.
fn trie<const N: usize>(ebpf: &Ebpf, name: &str) -> BTreeSet<(u32, [u8; N])> {
    let map: &Map = ebpf.map(name).expect("trie map");
    let trie: LpmTrie<_, [u8; N], u8> = LpmTrie::try_from(map).unwrap();
    trie.keys().map(|key| key.map(|key| (key.prefix_len(), key.data())).unwrap()).collect()
}

/// A datagram the classifier takes for storage traffic: UDP to the storage port, at least
/// a Beeline header long (80 bytes), starting with the magic 0xBEE1 and version 2.
fn storage_datagram() -> Vec<u8> {
    let mut datagram = vec![0u8; 80];
    datagram[..3].copy_from_slice(&[0xBE, 0xE1, 2]);
    datagram
}

/// Compiles a one-line XDP program that is not Beeline's, when clang can.
fn foreign_program(dir: &Path) -> Option<PathBuf> {
    let source = dir.join("other.c");
    std::fs::write(
        &source,
        "#include <linux/bpf.h>\n__attribute__((section(\"xdp\"), used)) int other_xdp(struct xdp_md *ctx) \
         { return XDP_PASS; }\nchar LICENSE[] __attribute__((section(\"license\"), used)) = \"GPL\";\n",
    )
    .unwrap();
    let object = dir.join("other.o");
    let clang = std::env::var("BEELINE_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let mut command = Command::new(clang);
    command.args(["-O2", "-target", "bpf", "-c"]).arg(&source).arg("-o").arg(&object);
    // Debian keeps asm/types.h under the multiarch directory (see xdp/build.rs).
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    if Path::new(&multiarch).join("asm").is_dir() {
        command.arg(format!("-I{multiarch}"));
    }
    let status = command.output().ok()?.status;
    status.success().then_some(object)
}

#[test]
fn adopts_a_classifier_another_loader_attached() {
    if let Some(why) = missing_requirement() {
        beeline_dataplane::testkit::skip("adopts_a_classifier_another_loader_attached", &why);
        return;
    }
    let topology = Topology::new();
    // The PMD is handed a path, not bytes.
    let object = topology.dir.join("beeline_xdp.o");
    std::fs::write(&object, beeline_xdp::object()).unwrap();
    let node_if = topology.node_if.as_str();

    in_netns(&topology.node_ns, || {
        // Nothing attached yet: a clear error rather than a half-configured node.
        match AdoptedClassifier::adopt(node_if) {
            Err(error @ XdpError::NotAttached { .. }) => {
                let message = error.to_string();
                assert!(message.contains(node_if) && message.contains("xdp_prog="), "{message}");
            }
            other => panic!("adopting with nothing attached: {other:?}"),
        }
        assert!(matches!(AdoptedClassifier::adopt("bxnosuchif0"), Err(XdpError::UnknownInterface { .. })));
    });

    let (ebpf, program_id) = in_netns(&topology.node_ns, || load_like_the_pmd(&object, node_if, PROGRAM_NAME));
    assert!(ebpf.map(XSKS_MAP).is_some(), "the object has the map the PMD looks up");
    assert_eq!(configured_port(&ebpf), 0, "a fresh load passes everything");

    in_netns(&topology.node_ns, || {
        let mut adopted = AdoptedClassifier::adopt(node_if).expect("adopt");
        assert_eq!(adopted.program_id(), program_id);
        assert_eq!(adopted.interface(), node_if);
        // The PMD leaves the mode to the kernel, which runs XDP natively on veth.
        assert_eq!(adopted.mode(), XdpAttachMode::Driver);
        adopted.set_allowlist(&[(IpAddr::V4(Ipv4Addr::new(10, 78, 0, 0)), 24)]).unwrap();
        adopted.set_port(PORT).unwrap();
    });
    assert_eq!(configured_port(&ebpf), PORT);
    assert_eq!(trie::<4>(&ebpf, "allow_v4"), BTreeSet::from([(24, [10, 78, 0, 0])]));
    assert!(
        in_netns(&topology.node_ns, || beeline_xdp::attached(node_if).unwrap())
            .iter()
            .any(|(program, _)| program.program_id == program_id),
        "dropping the adopted classifier leaves the program attached"
    );

    // A second adoption (a restarted node, say) reads the tries back, so replacing the
    // allowlist removes the first one's prefixes, as Classifier::set_allowlist does.
    let mut adopted = in_netns(&topology.node_ns, || AdoptedClassifier::adopt(node_if).expect("adopt again"));
    adopted.set_allowlist(&[]).unwrap();
    let mapped_any = u128::from(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()).to_be_bytes();
    assert_eq!(trie::<4>(&ebpf, "allow_v4"), BTreeSet::from([(0, [0; 4])]), "empty allowlist = every source");
    assert_eq!(trie::<16>(&ebpf, "allow_v6"), BTreeSet::from([(0, [0; 16]), (96, mapped_any)]));
    assert_eq!(configured_port(&ebpf), PORT, "adopting changes nothing");

    // Storage traffic from the client, with no AF_XDP socket in xsks_map: the classifier
    // drops it in the kernel and counts it as drop_no_socket.
    let before = adopted.counters().unwrap().get(Verdict::DropNoSocket);
    let datagram = storage_datagram();
    let socket = in_netns(&topology.client_ns, || UdpSocket::bind((CLIENT_IP, 0)).expect("bind in the client"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Resent until counted: the first ones may wait on (or be dropped with) ARP.
        socket.send_to(&datagram, (NODE_IP, PORT)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let after = adopted.counters().unwrap().get(Verdict::DropNoSocket);
        if after.packets > before.packets {
            // Ethernet + IPv4 + UDP headers + payload, as the program saw the frame.
            assert!(after.bytes - before.bytes >= (14 + 20 + 8 + datagram.len()) as u64);
            break;
        }
        assert!(Instant::now() < deadline, "no drop_no_socket counted: {:?}", adopted.counters());
    }
    assert_eq!(adopted.counters().unwrap().get(Verdict::Redirect).packets, 0);

    // The PMD closes the port: the program goes, and adoption says so.
    drop(adopted);
    drop(ebpf);
    in_netns(&topology.node_ns, || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !beeline_xdp::attached(node_if).unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the program outlived its loader");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(matches!(AdoptedClassifier::adopt(node_if), Err(XdpError::NotAttached { .. })));
    });

    // A program that is not Beeline's is never configured.
    let Some(other) = foreign_program(&topology.dir) else {
        beeline_dataplane::testkit::skip(
            "adopts_a_classifier_another_loader_attached (the foreign-program half)",
            "clang cannot build a bpf object here",
        );
        return;
    };
    in_netns(&topology.node_ns, || {
        let (_foreign, id) = load_like_the_pmd(&other, node_if, "other_xdp");
        match AdoptedClassifier::adopt(node_if) {
            Err(XdpError::ForeignProgram { name, id: found, .. }) => {
                assert_eq!((name.as_str(), found), ("other_xdp", id));
            }
            other => panic!("adopting a foreign program: {other:?}"),
        }
    });
}
