//! Network namespaces, veth pairs and bridges for the tests, each removed by a Drop guard
//! whatever the test's outcome.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use super::sh;

/// Network namespaces, each with `lo` up; deleted on drop, and with them every interface
/// inside (deleting one end of a veth pair deletes the pair).
pub struct Namespaces(Vec<String>);

impl Namespaces {
    pub fn new(names: &[&str]) -> Self {
        let mut namespaces = Namespaces(Vec::new());
        for name in names {
            sh(&["ip", "netns", "add", name]);
            namespaces.0.push(name.to_string());
            sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        }
        namespaces
    }
}

impl std::ops::Index<usize> for Namespaces {
    type Output = str;

    fn index(&self, index: usize) -> &str {
        &self.0[index]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        }
    }
}

/// One end of a veth pair: the namespace it goes to, its name, and its addresses (CIDR).
pub struct End<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub addresses: &'a [&'a str],
}

/// Joins two namespaces with a veth pair: each end in its namespace, with its addresses,
/// up. `queues` sets numtxqueues and numrxqueues on both ends. The namespaces' guard
/// removes the pair.
pub fn veth_pair(a: &End, b: &End, queues: Option<u32>) {
    let queues = queues.map(|n| n.to_string());
    let queue_args: Vec<&str> = match &queues {
        Some(n) => vec!["numtxqueues", n, "numrxqueues", n],
        None => vec![],
    };
    let mut command = vec!["ip", "link", "add", a.name, "netns", a.ns];
    command.extend(&queue_args);
    command.extend(["type", "veth", "peer", "name", b.name, "netns", b.ns]);
    command.extend(&queue_args);
    sh(&command);
    for end in [a, b] {
        for address in end.addresses {
            sh(&["ip", "-n", end.ns, "addr", "add", address, "dev", end.name]);
        }
        sh(&["ip", "-n", end.ns, "link", "set", end.name, "up"]);
    }
}

/// A bridge in the root namespace with an address, up; deleted on drop.
pub struct Bridge(String);

impl Bridge {
    pub fn new(name: &str, address: &str) -> Self {
        sh(&["ip", "link", "add", name, "type", "bridge"]);
        let bridge = Bridge(name.to_owned());
        sh(&["ip", "addr", "add", address, "dev", name]);
        sh(&["ip", "link", "set", name, "up"]);
        bridge
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).stderr(Stdio::null()).status();
    }
}

/// Joins a namespace to `bridge` with a veth pair: `host` is the end enslaved to the
/// bridge in the root namespace, `end` the one in the namespace, with its addresses, up.
/// Deleting the namespace removes the pair.
pub fn veth_to_bridge(bridge: &Bridge, host: &str, end: &End) {
    sh(&["ip", "link", "add", host, "type", "veth", "peer", "name", end.name]);
    sh(&["ip", "link", "set", end.name, "netns", end.ns]);
    sh(&["ip", "link", "set", host, "master", bridge.name(), "up"]);
    for address in end.addresses {
        sh(&["ip", "-n", end.ns, "addr", "add", address, "dev", end.name]);
    }
    sh(&["ip", "-n", end.ns, "link", "set", end.name, "up"]);
}

/// A veth pair in the root namespace, both ends up; deleted on drop.
pub struct Veth {
    pub name: String,
    pub peer: String,
}

impl Veth {
    pub fn new(name: &str, peer: &str) -> Self {
        sh(&["ip", "link", "add", name, "type", "veth", "peer", "name", peer]);
        let veth = Veth { name: name.to_owned(), peer: peer.to_owned() };
        sh(&["ip", "link", "set", "dev", name, "up"]);
        sh(&["ip", "link", "set", "dev", peer, "up"]);
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end deletes the pair.
        let _ = Command::new("ip").args(["link", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// `ip netns exec NS PROGRAM` as a command to complete (it execs in place: the child's pid
/// is the program's).
pub fn ns_command(ns: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, program]);
    command
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates stay
/// in that namespace. The test's own threads never change namespace.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
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
