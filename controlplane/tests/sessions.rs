//! Protocol v2's sessions against a real node process: traffic captured by a relay and
//! replayed later changes nothing and amplifies nothing; an old (version 1) client is
//! told to upgrade; a node restart and rekeys in the middle of a 100 MiB put fail nothing.

mod common;
use common::node::{BIN, TestNode, ok};
use common::{Process, pattern};

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beeline_dataplane::wire::{Opcode, v1};

/// Status as any client asks for it.
const STATUS: &[&str] = &[];

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

fn key(node: &TestNode) -> beeline_dataplane::wire::ClusterKey {
    beeline::keyfile::load(&node.dir.join("cluster.key")).expect("the node wrote its key")
}

/// Waits until `socket` has something to read, at most `timeout`.
fn readable(socket: &UdpSocket, timeout: Duration) -> bool {
    let mut poll_fd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for a live socket, outliving the call.
    unsafe { libc::poll(&raw mut poll_fd, 1, timeout.as_millis() as libc::c_int) > 0 }
}

#[test]
fn a_version_one_client_is_told_to_upgrade_and_a_forged_one_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", node.port)).unwrap();
    let mut forged = [0u8; v1::HEADER_LEN];
    v1::write_request(Opcode::Get, 1, &beeline_dataplane::wire::ClusterKey::new([9; 32]), &mut forged);
    let mut old = [0u8; v1::HEADER_LEN];
    v1::write_request(Opcode::Get, 2, &key(&node), &mut old);
    socket.send(&forged).unwrap();
    socket.send(&old).unwrap();
    // Loopback keeps order and the node answers in order: the first reply answers the
    // request with the right key, so the forged one got none.
    assert!(readable(&socket, Duration::from_secs(10)), "the old client got silence");
    let mut reply = [0u8; 2048];
    let len = socket.recv(&mut reply).unwrap();
    let reply = &reply[..len];
    assert!(v1::authentic(reply, &key(&node)), "an old client could not parse the reply");
    assert_eq!(reply[8..16], 2u64.to_be_bytes(), "the reply answers the genuine request");
    assert_eq!((reply[3], reply[5]), (Opcode::Error as u8, 4), "Error, BadRequest: what an old client reports");
    assert!(String::from_utf8_lossy(&reply[v1::HEADER_LEN..]).contains("upgrade"));
    assert!(len <= 3 * old.len());
    let counters = wait_counters(&node, "the upgrade reply counted", |c| c["upgrade_replies"] == 1);
    assert_eq!(counters["dropped_bad_mac"], 1);
}

/// Datagrams sent toward the node, each with the relay socket it left from.
type Captured = Arc<Mutex<Vec<(Arc<UdpSocket>, Vec<u8>)>>>;

/// A UDP relay between CLI processes and the node that records every datagram going to
/// the node with the relay socket it left from.
struct Relay {
    port: u16,
    captured: Captured,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(node: SocketAddr) -> Relay {
        let downstream = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = downstream.local_addr().unwrap().port();
        let captured: Captured = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (captured, stop) = (captured.clone(), stop.clone());
            std::thread::spawn(move || relay_loop(&downstream, node, &captured, &stop))
        };
        Relay { port, captured, stop, thread: Some(thread) }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay_loop(
    downstream: &UdpSocket,
    node: SocketAddr,
    captured: &Mutex<Vec<(Arc<UdpSocket>, Vec<u8>)>>,
    stop: &AtomicBool,
) {
    let mut upstreams: Vec<(SocketAddr, Arc<UdpSocket>)> = Vec::new();
    let mut buffer = vec![0u8; 65_536];
    while !stop.load(Ordering::Acquire) {
        let mut fds: Vec<libc::pollfd> = std::iter::once(downstream)
            .chain(upstreams.iter().map(|(_, socket)| &**socket))
            .map(|socket| libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` holds valid pollfds for live sockets and outlives the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if fds[0].revents != 0 {
            if let Ok((len, client)) = downstream.recv_from(&mut buffer) {
                let upstream = match upstreams.iter().find(|(address, _)| *address == client) {
                    Some((_, socket)) => socket.clone(),
                    None => {
                        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                        socket.connect(node).unwrap();
                        upstreams.push((client, socket.clone()));
                        socket
                    }
                };
                let _ = upstream.send(&buffer[..len]);
                captured.lock().unwrap().push((upstream, buffer[..len].to_vec()));
            }
        }
        for (index, fd) in fds.iter().enumerate().skip(1) {
            if fd.revents != 0 {
                let (client, socket) = &upstreams[index - 1];
                if let Ok(len) = socket.recv(&mut buffer) {
                    let _ = downstream.send_to(&buffer[..len], client);
                }
            }
        }
    }
}

/// The attack on a real node: the traffic of a put and of a remove, captured, is
/// replayed after a newer version of the file was stored, from the relay sockets it came
/// from and from another socket. The newer version survives, the old one does not come
/// back, and nobody receives more than 3x the bytes it sent.
#[test]
fn replayed_put_and_remove_change_nothing_and_amplify_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No tagger: its read of the newer file would move the node's counters checked below.
    let node = TestNode::start(dir.path(), &["--auto-tag", "false"]);
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], node.port)));
    let via_relay = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command.args(args).arg("--node").arg(format!("127.0.0.1:{}", relay.port)).arg("--key-file");
        ok(&command.arg(dir.path().join("cluster.key")).output().unwrap())
    };
    let old = dir.path().join("f");
    std::fs::write(&old, pattern(3 << 19, 1)).unwrap();
    via_relay(&["put", old.to_str().unwrap()]);
    via_relay(&["rm", "f"]);
    let captured: Vec<(Arc<UdpSocket>, Vec<u8>)> = relay.captured.lock().unwrap().clone();
    assert!(captured.len() > 50, "the relay captured the put and the remove");
    let newer = dir.path().join("newer");
    std::fs::write(&newer, pattern(1 << 19, 2)).unwrap();
    ok(&node.cli(&["put", newer.to_str().unwrap(), "--as", "f"]));
    let before = wait_counters(&node, "both puts counted", |c| c["chunks_stored"] == 2);
    // Stopped first, so that every answer to a replay stays in the socket it went to.
    drop(relay);

    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other.connect(("127.0.0.1", node.port)).unwrap();
    let mut sent_bytes = 0u64;
    for (socket, datagram) in &captured {
        socket.send(datagram).unwrap();
        other.send(datagram).unwrap();
        sent_bytes += datagram.len() as u64;
    }
    // Every replayed datagram reached the node (loopback, well within its socket buffer).
    let replayed = 2 * captured.len() as u64;
    let after = wait_counters(&node, "every replay received", |c| c["rx_packets"] >= before["rx_packets"] + replayed);
    let mut received = HashMap::<SocketAddr, u64>::new();
    let mut buffer = vec![0u8; 65_536];
    let sockets: Vec<&UdpSocket> =
        std::iter::once(&other).chain(captured.iter().map(|(socket, _)| &**socket)).collect();
    for socket in sockets {
        socket.set_nonblocking(true).unwrap();
        while let Ok(len) = socket.recv(&mut buffer) {
            *received.entry(socket.local_addr().unwrap()).or_default() += len as u64;
        }
    }
    let to_other = received.get(&other.local_addr().unwrap()).copied().unwrap_or(0);
    assert!(3 * to_other <= sent_bytes, "{to_other} bytes back for {sent_bytes} replayed");
    let to_relay: u64 = received.values().sum::<u64>() - to_other;
    assert!(3 * to_relay <= sent_bytes, "{to_relay} bytes back to the relay sockets for {sent_bytes}");

    let back = node.cli(&["get", "f", "-o", "-"]);
    assert!(back.status.success() && back.stdout == std::fs::read(&newer).unwrap(), "the newer version changed");
    let stat = ok(&node.cli(&["stat", "f"]));
    assert!(stat.contains("size_bytes:  524288"), "{stat}");
    for name in ["fragments_stored", "chunks_stored", "chunks_deleted", "gets"] {
        assert_eq!(after[name], before[name], "{name} changed under replay");
    }
    // Sessions: only those of the status requests themselves (one per call).
    let sessions = after["sessions_established"] - before["sessions_established"];
    assert!(sessions <= after["control_requests"] - before["control_requests"], "a replayed Confirm made a session");
    assert!(after["dropped_replayed"] > before["dropped_replayed"], "{after:?}");
    assert!(after["dropped_wrong_address"] > before["dropped_wrong_address"], "{after:?}");
}

/// A 100 MiB put whose client rekeys every 50 ms and whose node is killed (SIGKILL) and
/// restarted in the middle: the put succeeds without a failed operation and the file comes
/// back byte for byte. The put reads from a pipe that holds back all but 24 MiB until the
/// node is back, so the kill lands mid-put however fast the put runs.
#[test]
fn a_node_restart_and_rekeys_in_the_middle_of_a_100_mib_put_fail_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let data = pattern(100 << 20, 7);
    let (stdin, mut input) = common::GatedInput::new(data.clone(), 24 << 20);
    // UDP: the sessions are what this test is about (shared memory has none).
    let mut put = node.cli_command(&["put", "-", "--as", "big", "--rekey-after-ms", "50", "--transport", "udp"]);
    let mut put = Process::spawn_with_stdin(
        {
            put.env("BEELINE_LOG", "beeline::client=debug");
            put
        },
        stdin,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while counters(&node).get("chunks_stored").copied().unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "the put made no progress:\n{}", put.log());
        assert!(put.exited().is_none(), "the put ended before the restart:\n{}", put.log());
    }
    node.process().kill9();
    node.spawn();
    input.release();
    let status = loop {
        if let Some(status) = put.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the put did not finish:\n{}", put.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the put failed across the restart:\n{}", put.log());
    // The put's own sessions: its first, a rekey every 50 ms, and one after the restart.
    let put_sessions = put.log().matches("session with the node established").count();
    assert!(put_sessions >= 3, "{put_sessions} sessions:\n{}", put.log());
    let back = node.cli(&["get", "big", "-o", "-"]);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert!(back.stdout == data, "the file came back different");
}
