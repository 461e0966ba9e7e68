//! A storage node run by the `beeline` binary on a free loopback port (`udp` backend), and
//! the CLI pointed at it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{Process, free_port};

pub const BIN: &str = env!("CARGO_BIN_EXE_beeline");

pub struct TestNode {
    pub process: Option<Process>,
    pub dir: PathBuf,
    pub port: u16,
    pub extra: Vec<String>,
}

impl TestNode {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut node = TestNode {
            process: None,
            dir: dir.to_owned(),
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn();
        node
    }

    pub fn spawn(&mut self) {
        let mut command = Command::new(BIN);
        command
            .args(["node", "run", "--listen", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(self.dir.join("data"))
            .arg("--key-file")
            .arg(self.dir.join("cluster.key"))
            .args(["--arena-frames", "4096", "--hugepages", "off"])
            .args(&self.extra)
            .env("BEELINE_LOG", "info");
        self.process = Some(Process::spawn(command));
        // Ready when it answers a ping (bounded).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cli(&["node", "ping"]);
            if out.status.success() {
                return;
            }
            let process = self.process();
            if let Some(status) = process.exited() {
                panic!("node exited during start-up with {status}:\n{}", process.log());
            }
            assert!(Instant::now() < deadline, "node did not answer within 30 s:\n{}", process.log());
        }
    }

    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--node")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--key-file")
            .arg(self.dir.join("cluster.key"));
        command
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run beeline")
    }

    /// The node's data-path counters from `beeline node status` (with `status_args`).
    pub fn counters(&self, status_args: &[&str]) -> HashMap<String, u64> {
        let mut args = vec!["node", "status"];
        args.extend_from_slice(status_args);
        ok(&self.cli(&args))
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let (name, value) = (words.next()?, words.next()?);
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// The counters once `condition` holds (they are published every 100 ms); bounded.
    pub fn wait_counters(
        &self,
        status_args: &[&str],
        what: &str,
        condition: impl Fn(&HashMap<String, u64>) -> bool,
    ) -> HashMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.counters(status_args);
            if condition(&now) {
                return now;
            }
            assert!(Instant::now() < deadline, "{what}: the counters never got there: {now:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn process(&mut self) -> &mut Process {
        self.process.as_mut().expect("running")
    }

    /// Bytes of the node's segment files that the page cache holds (`fincore`, which
    /// the caller checks for first).
    pub fn segment_bytes_cached(&self) -> u64 {
        let mut fincore = Command::new("fincore");
        fincore.args(["--bytes", "--noheadings", "--output", "RES"]);
        for entry in std::fs::read_dir(self.dir.join("data").join("chunks")).unwrap() {
            fincore.arg(entry.unwrap().path());
        }
        let out = fincore.output().expect("run fincore");
        assert!(out.status.success(), "fincore: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|line| line.trim().parse::<u64>().unwrap()).sum()
    }
}

pub fn ok(output: &Output) -> String {
    assert!(output.status.success(), "beeline failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success(), "expected failure, got: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "error is not one line: {stderr}");
    assert!(stderr.starts_with("beeline: "), "{stderr}");
    stderr
}

/// The value of the unlabelled metric `name` on the /metrics page at `address` (`None`
/// while the node is not serving it yet).
pub fn metric(address: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A loopback address with a free TCP port, e.g. for `--metrics-listen`.
pub fn free_tcp_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}
