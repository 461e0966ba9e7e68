//! A node and a client in two network namespaces joined by a veth pair with the usual
//! 1500-byte MTU: the client's default fragment size fits the path, and one that does not
//! is a clear one-line error instead of a timeout blamed on the node.

mod common;
use common::node::BIN;
use common::{End, Namespaces, Process, is_root, ns_command, pattern, unique_id, veth_pair};

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const NODE: &str = "10.78.0.1:7777";

fn cli(ns: &str, dir: &Path, args: &[&str]) -> Output {
    let mut command = ns_command(ns, BIN);
    command.args(args).args(["--node", NODE, "--key-file"]).arg(dir.join("cluster.key"));
    command.output().expect("run beeline")
}

#[test]
fn default_fragments_fit_a_1500_byte_mtu_and_larger_ones_are_a_clear_error() {
    if !is_root() {
        beeline_dataplane::testkit::skip(
            "default_fragments_fit_a_1500_byte_mtu_and_larger_ones_are_a_clear_error",
            "needs root for network namespaces",
        );
        return;
    }
    let id = unique_id();
    let (node_ns, client_ns) = (format!("beeline-mn{id}"), format!("beeline-mc{id}"));
    let namespaces = Namespaces::new(&[&node_ns, &client_ns]);
    let (node_if, client_if) = (format!("bmn{id}"), format!("bmc{id}"));
    veth_pair(
        &End { ns: &client_ns, name: &client_if, addresses: &["10.78.0.2/24"] },
        &End { ns: &node_ns, name: &node_if, addresses: &["10.78.0.1/24"] },
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut command = ns_command(&node_ns, BIN);
    command
        .args(["node", "run", "--listen", NODE, "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--key-file")
        .arg(dir.path().join("cluster.key"))
        .args(["--arena-frames", "4096", "--hugepages", "off"]);
    let mut node = Process::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(&client_ns, dir.path(), &["node", "ping"]).status.success() {
        assert!(node.exited().is_none(), "the node exited:\n{}", node.log());
        assert!(Instant::now() < deadline, "the node never answered:\n{}", node.log());
    }

    let file = dir.path().join("f");
    let data = pattern(5 << 20, 3);
    std::fs::write(&file, &data).unwrap();
    let put = cli(&client_ns, dir.path(), &["put", file.to_str().unwrap()]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let back = cli(&client_ns, dir.path(), &["get", "f", "-o", "-"]);
    assert!(back.status.success() && back.stdout == data, "{}", String::from_utf8_lossy(&back.stderr));

    let too_large =
        cli(&client_ns, dir.path(), &["put", file.to_str().unwrap(), "--as", "g", "--fragment-bytes", "1400"]);
    assert!(!too_large.status.success());
    let stderr = String::from_utf8_lossy(&too_large.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("do not fit the path") && stderr.contains("--fragment-bytes"), "{stderr}");
    drop(node);
    drop(namespaces);
}
