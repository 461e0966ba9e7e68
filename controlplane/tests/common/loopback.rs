//! A Beeline cluster on 127.0.0.1 for the tests: a real redis-server (append-only file
//! synced on every write), nodes run by the `beeline` binary on loopback ports (no
//! namespaces, no root), the CLI pointed at them, and the segment files of a node's chunk
//! store read and damaged the way a failing disk would.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::node::{BIN, ok};
use super::{Process, have};

pub struct Redis {
    pub process: Option<Process>,
    pub dir: PathBuf,
    pub bind: String,
    pub port: u16,
}

impl Redis {
    pub fn start(dir: &Path, bind: &str, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut redis = Redis { process: None, dir: dir.to_owned(), bind: bind.to_owned(), port };
        redis.spawn();
        redis
    }

    pub fn spawn(&mut self) {
        // appendfsync always: an acknowledged write survives a restart.
        let mut command = Command::new("redis-server");
        command
            .args([
                "--bind",
                &self.bind,
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir);
        self.process = Some(Process::spawn(command));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.bind.as_str(), self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.bind, self.port)
    }
}

/// A private cluster key file (mode 0600, as a node creates one) in `dir`.
pub fn key_file(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // Private, as a node would create it: a key open to others makes every command warn.
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join("cluster.key")).unwrap();
    std::io::Write::write_all(&mut file, format!("{}\n", "5a".repeat(32)).as_bytes()).unwrap();
}

pub fn skip_without_redis(test: &str) -> bool {
    if !have("redis-server") {
        beeline_dataplane::testkit::skip(test, "redis-server is not installed (ci/setup.sh installs it)");
        return true;
    }
    false
}

/// A free TCP port on 127.0.0.1 (for Redis).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Nodes on 127.0.0.1 (no namespaces, no root needed) sharing one Redis; background
/// repair off, so that the test decides when repair runs.
pub struct Loopback {
    pub nodes: Vec<(Option<Process>, u16)>,
    pub redis: Redis,
    pub dir: PathBuf,
    pub repair_interval_ms: u64,
    pub node_args: Vec<String>,
}

impl Loopback {
    pub fn start(dir: &Path, nodes: usize) -> Self {
        Self::start_with_repair(dir, nodes, 0)
    }

    /// With the nodes' background repair every `repair_interval_ms` (0: off).
    pub fn start_with_repair(dir: &Path, nodes: usize, repair_interval_ms: u64) -> Self {
        Self::start_with_args(dir, nodes, repair_interval_ms, &[])
    }

    /// With more `beeline node run` arguments for every node.
    pub fn start_with_args(dir: &Path, nodes: usize, repair_interval_ms: u64, node_args: &[&str]) -> Self {
        key_file(dir);
        let redis = Redis::start(&dir.join("redis"), "127.0.0.1", free_tcp_port());
        let node_args = node_args.iter().map(|arg| arg.to_string()).collect();
        let mut cluster = Loopback { nodes: Vec::new(), redis, dir: dir.to_owned(), repair_interval_ms, node_args };
        for index in 0..nodes {
            cluster.nodes.push((None, super::free_port()));
            cluster.spawn(index);
        }
        cluster.wait_live(nodes);
        cluster
    }

    pub fn spawn(&mut self, index: usize) {
        let port = self.nodes[index].1;
        let mut command = Command::new(BIN);
        command
            .args(["node", "run", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(self.node_dir(index))
            .arg("--key-file")
            .arg(self.dir.join("cluster.key"))
            .args(["--metadata", &self.redis.url(), "--lease-ttl-ms", "1500"])
            .args(["--repair-interval-ms", &self.repair_interval_ms.to_string()])
            .args(["--hugepages", "off", "--arena-frames", "4096"])
            .args(&self.node_args);
        self.nodes[index].0 = Some(Process::spawn(command));
    }

    pub fn node_dir(&self, index: usize) -> PathBuf {
        self.dir.join(format!("node{index}"))
    }

    /// The node's id as `stat` prints it.
    pub fn node_id(&self, index: usize) -> String {
        std::fs::read_to_string(self.node_dir(index).join("node-id")).unwrap().trim().to_owned()
    }

    pub fn index_of(&self, id: &str) -> usize {
        (0..self.nodes.len()).find(|index| self.node_id(*index) == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// SIGTERM: the node leaves cleanly and is no longer live at once.
    pub fn stop(&mut self, index: usize) {
        self.nodes[index].0.as_mut().expect("running").terminate();
        self.nodes[index].0 = None;
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--metadata", &self.redis.url(), "--key-file"])
            .arg(self.dir.join("cluster.key"))
            .output()
            .unwrap()
    }

    pub fn wait_live(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = String::from_utf8_lossy(&self.cli(&["cluster", "status"]).stdout).into_owned();
            if status.contains(&format!("({count} live)")) {
                return;
            }
            assert!(Instant::now() < deadline, "never {count} live nodes: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stores `data` as `name` in 1 MiB chunks.
    pub fn put(&self, name: &str, data: &[u8]) {
        let path = self.dir.join(format!("in-{name}"));
        std::fs::write(&path, data).unwrap();
        ok(&self.cli(&["put", path.to_str().unwrap(), "--as", name, "--chunk-bytes", "1048576"]));
    }

    /// The node ids holding chunk `index` of `name`, in recorded order (`get` asks the
    /// first live one first).
    pub fn replicas(&self, name: &str, index: usize) -> Vec<String> {
        let stat = ok(&self.cli(&["stat", name]));
        let prefix = format!("chunk {index}:");
        let line =
            stat.lines().map(str::trim).find(|line| line.starts_with(&prefix)).unwrap_or_else(|| panic!("{stat}"));
        line[prefix.len()..].split_whitespace().map(str::to_owned).collect()
    }

    /// Flips 4 bytes in the middle of every stored copy of chunk `index` (of any file) in
    /// node `node`'s segment files; returns how many records it changed.
    pub fn corrupt(&self, node: usize, index: u64) -> usize {
        let mut changed = 0;
        for record in chunk_records(&self.node_dir(node).join("chunks")) {
            if record.id as u64 == index
                && record.len > 8
                && flip(&record.segment, record.payload_offset + u64::from(record.len) / 2, &[0xA5; 4])
            {
                changed += 1;
            }
        }
        changed
    }
}

/// The line of `status` that starts with `field`.
pub fn status_line(status: &str, field: &str) -> String {
    status.lines().find(|line| line.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {status}")).to_owned()
}

/// A chunk's record in a segment file: where its payload is, and how long.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    pub segment: PathBuf,
    pub id: u128,
    pub payload_offset: u64,
    pub len: u32,
}

/// The put records of every segment file in `chunks` (a node's `chunks/` directory), as
/// far as their headers read: a 64-byte header ("BLR1", version, kind at 5 (1: put), the
/// id at 8..24, the length at 24..28, "CMT1" at 32 once committed), the payload, padding
/// to 64 bytes. Only committed puts are listed: not abandoned reservations, nor the padding
/// records (never committed, chunk id 0) in front of large chunks. Reads the headers
/// only. The node may be appending meanwhile: a file is read up to its first header that
/// does not parse.
pub fn chunk_records(chunks: &Path) -> Vec<ChunkRecord> {
    use std::os::unix::fs::FileExt;
    let mut records = Vec::new();
    let Ok(entries) = std::fs::read_dir(chunks) else { return records };
    let mut segments: Vec<PathBuf> = entries
        .map_while(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("seg-")))
        .collect();
    segments.sort();
    for segment in segments {
        // A segment compacted away meanwhile is simply gone.
        let Ok(file) = std::fs::File::open(&segment) else { continue };
        let Ok(size) = file.metadata().map(|metadata| metadata.len()) else { continue };
        let mut offset = 0u64;
        let mut header = [0u8; 64];
        while offset + 64 <= size && file.read_exact_at(&mut header, offset).is_ok() {
            if &header[0..4] != b"BLR1" {
                break;
            }
            let id = u128::from_le_bytes(header[8..24].try_into().unwrap());
            let len = u32::from_le_bytes(header[24..28].try_into().unwrap());
            if header[5] == 1 && &header[32..36] == b"CMT1" && offset + 64 + u64::from(len) <= size {
                records.push(ChunkRecord { segment: segment.clone(), id, payload_offset: offset + 64, len });
            }
            offset += (64 + u64::from(len)).next_multiple_of(64);
        }
    }
    records
}

/// XORs `mask` into the bytes of `segment` at `offset`, in place, through the page cache
/// the node reads from; writes only those bytes (the node may be appending to the file).
/// `false` when the segment is gone (compacted away since it was read).
pub fn flip(segment: &Path, offset: u64, mask: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(segment) else { return false };
    let mut bytes = vec![0u8; mask.len()];
    if file.read_exact_at(&mut bytes, offset).is_err() {
        return false;
    }
    for (byte, mask) in bytes.iter_mut().zip(mask) {
        *byte ^= mask;
    }
    file.write_all_at(&bytes, offset).unwrap();
    true
}
