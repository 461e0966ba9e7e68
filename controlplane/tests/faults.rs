//! Fault injection (issue #11): three real nodes and a real redis-server (`appendfsync
//! always`) on loopback under a stream of puts, gets and removes, while nodes are killed
//! (SIGKILL) and restarted, Redis is killed and restarted, clients are killed mid-put, and
//! bytes of the segment files are flipped, in chunk payloads and in record headers (never
//! every copy of one chunk between two scrubs). At the end, after `beeline cluster scrub`
//! as an operator would run it, every acknowledged file reads back byte-identical, and
//! after `beeline cluster gc` each node holds exactly the chunks the metadata lists on it.
//!
//! Driven by a seeded RNG: the seed is printed, and `BEELINE_FAULT_SEED=N` replays a run's
//! choices (the processes' timing is the machine's). `BEELINE_FAULT_STEPS` changes the
//! number of operations (default 240). Every wait polls for its condition, bounded.

mod common;
use common::loopback::{ChunkRecord, Loopback, chunk_records, flip, skip_without_redis, status_line};
use common::node::{BIN, ok};
use common::pattern;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// SplitMix64: small, and its sequence for a seed never changes with a crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a name may hold: one content once a put or rm was acknowledged; several after
/// one failed (it may or may not have been recorded before the failure). `None`: absent.
#[derive(Default)]
struct Expected(Vec<Option<(usize, u64)>>);

#[derive(Default)]
struct Figures {
    puts: u64,
    puts_failed: u64,
    gets: u64,
    gets_failed: u64,
    removes: u64,
    removes_failed: u64,
    node_kills: u64,
    node_restarts: u64,
    redis_restarts: u64,
    client_kills: u64,
    corruptions: u64,
    header_corruptions: u64,
    scrubs: u64,
    bad_copies_found: u64,
    files_checked: u64,
    bytes_checked: u64,
    chunks_reclaimed: u64,
    bytes_reclaimed: u64,
    disk_bytes_freed: u64,
}

const CHUNK_BYTES: usize = 1 << 20;
const NAMES: u64 = 24;

struct Run {
    cluster: Loopback,
    rng: Rng,
    /// name -> what it may hold
    files: BTreeMap<String, Expected>,
    /// chunk id -> nodes whose copy was damaged since the last scrub
    damaged: HashMap<u128, HashSet<usize>>,
    /// nodes with a record header damaged since the last scrub
    header_damaged: HashSet<usize>,
    /// node -> steps until it is restarted (present while it is down)
    down: HashMap<usize, u64>,
    figures: Figures,
    next_salt: u64,
}

impl Run {
    fn cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).args(["--metadata", &self.cluster.redis.url(), "--key-file"]);
        command.arg(self.cluster.dir.join("cluster.key"));
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    fn content(&self, (len, salt): (usize, u64)) -> Vec<u8> {
        pattern(len, salt)
    }

    /// One put, get or remove, with a fault injected while it runs (sometimes).
    fn step(&mut self, step: u64) {
        let kind = self.rng.below(10);
        // Gets and removes mostly of names that hold something.
        let stored: Vec<&String> = self
            .files
            .iter()
            .filter(|(_, expected)| expected.0.iter().any(Option::is_some))
            .map(|(name, _)| name)
            .collect();
        let name = if kind >= 5 && !stored.is_empty() && self.rng.below(10) < 8 {
            stored[self.rng.below(stored.len() as u64) as usize].clone()
        } else {
            format!("f{}", self.rng.below(NAMES))
        };
        let mut put_content = None;
        let (mut child, what) = if kind < 5 {
            // Sizes from empty to a few chunks, some not a whole number of chunks.
            let len = match self.rng.below(4) {
                0 => self.rng.below(4096) as usize,
                1 => CHUNK_BYTES,
                _ => self.rng.below(3 * CHUNK_BYTES as u64 + 1) as usize,
            };
            let salt = self.next_salt;
            self.next_salt += 1;
            let path = self.cluster.dir.join(format!("in-{step}"));
            std::fs::write(&path, self.content((len, salt))).unwrap();
            put_content = Some((len, salt));
            let chunk_bytes = CHUNK_BYTES.to_string();
            let child = self
                .cli(&["put", path.to_str().unwrap(), "--as", &name, "--chunk-bytes", &chunk_bytes])
                .spawn()
                .unwrap();
            (child, "put")
        } else if kind < 8 {
            (self.cli(&["get", &name, "-o", "-"]).spawn().unwrap(), "get")
        } else {
            (self.cli(&["rm", &name]).spawn().unwrap(), "rm")
        };
        let killed_client = self.fault_during(&mut child, what);
        let output = child.wait_with_output().unwrap();
        if what == "put" {
            std::fs::remove_file(self.cluster.dir.join(format!("in-{step}"))).unwrap();
        }
        let expected = self.files.entry(name.clone()).or_insert_with(|| Expected(vec![None]));
        match what {
            "put" => {
                self.figures.puts += 1;
                if output.status.success() {
                    expected.0 = vec![put_content];
                } else {
                    self.figures.puts_failed += 1;
                    expected.0.push(put_content);
                    if !killed_client {
                        eprintln!("step {step}: put {name} failed: {}", stderr(&output));
                    }
                }
            }
            "get" => {
                self.figures.gets += 1;
                if output.status.success() {
                    let candidates: Vec<Vec<u8>> = expected.0.iter().flatten().map(|c| pattern(c.0, c.1)).collect();
                    assert!(
                        candidates.contains(&output.stdout),
                        "step {step}: get {name} succeeded with bytes it was never given ({} bytes)",
                        output.stdout.len()
                    );
                } else {
                    self.figures.gets_failed += 1;
                    let message = stderr(&output);
                    // Not found is an answer only for a name that may be absent.
                    if message.contains("no file named") {
                        assert!(expected.0.contains(&None), "step {step}: {name} lost: {message}");
                    }
                    eprintln!("step {step}: get {name} failed: {message}");
                }
            }
            _ => {
                self.figures.removes += 1;
                if output.status.success() {
                    expected.0 = vec![None];
                } else {
                    self.figures.removes_failed += 1;
                    expected.0.push(None);
                }
            }
        }
    }

    /// Maybe injects one fault while `child` runs: returns whether it killed the client.
    fn fault_during(&mut self, child: &mut Child, what: &str) -> bool {
        let roll = self.rng.below(100);
        if what == "put" && roll < 30 {
            // Mid-put for sure: once the put registered in Redis (or ended).
            self.wait_put_registered(child);
        }
        match roll {
            0..10 => self.kill_node(),
            10..16 => self.restart_redis(),
            16..22 if what == "put" => {
                let _ = child.kill();
                self.figures.client_kills += 1;
                return true;
            }
            30..55 => self.corrupt_some_chunk(),
            _ => {}
        }
        false
    }

    fn wait_put_registered(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut metadata = None;
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            if metadata.is_none() {
                metadata = beeline::cluster::RedisMetadata::connect(&self.cluster.redis.url(), "beeline").ok();
            }
            if let Some(metadata) = metadata.as_mut() {
                if metadata.pending_puts().is_ok_and(|(_, pending)| !pending.is_empty()) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL one running node, to be restarted a few steps later; never more than one
    /// down at a time, so that every chunk keeps a live copy (the replication factor is 2).
    fn kill_node(&mut self) {
        if !self.down.is_empty() {
            return;
        }
        let node = self.rng.below(3) as usize;
        self.cluster.nodes[node].0.as_mut().expect("running").kill9();
        self.cluster.nodes[node].0 = None;
        self.down.insert(node, 1 + self.rng.below(3));
        self.figures.node_kills += 1;
    }

    fn restart_redis(&mut self) {
        self.cluster.redis.process.as_mut().expect("running").kill9();
        self.cluster.redis.spawn();
        self.figures.redis_restarts += 1;
    }

    /// Flips bytes of one node's segment file, unless that could leave a chunk without a
    /// good copy by the next scrub: 1 to 8 bytes of a chunk's payload (three times in four)
    /// or 1 to 4 bytes of a record's header, where everything after it in its segment is
    /// lost when the node restarts. Headers only in segments the node no longer appends to
    /// (not its two newest), so that the copies lost are the ones seen now.
    fn corrupt_some_chunk(&mut self) {
        let node = self.rng.below(3) as usize;
        let header = self.rng.below(4) == 0;
        let records = chunk_records(&self.cluster.node_dir(node).join("chunks"));
        // Chunk ids whose copy on another node is damaged.
        let risky: HashSet<u128> =
            self.damaged.iter().filter(|(_, nodes)| nodes.iter().any(|n| *n != node)).map(|(id, _)| *id).collect();
        let mut segments: Vec<&PathBuf> = records.iter().map(|record| &record.segment).collect();
        segments.sort();
        segments.dedup();
        let sealed = &segments[..segments.len().saturating_sub(2)];
        // What a damaged header before `record` would take with it.
        let region = |record: &ChunkRecord| -> Vec<u128> {
            records
                .iter()
                .filter(|later| later.segment == record.segment && later.payload_offset >= record.payload_offset)
                .map(|later| later.id)
                .collect()
        };
        let candidates: Vec<&ChunkRecord> = records
            .iter()
            .filter(|record| record.len > 0 && !risky.contains(&record.id))
            .filter(|record| {
                !header || (sealed.contains(&&record.segment) && region(record).iter().all(|id| !risky.contains(id)))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let record = candidates[self.rng.below(candidates.len() as u64) as usize].clone();
        if header {
            let count = 1 + self.rng.below(4) as usize;
            let at = self.rng.below(64 - count as u64);
            let mask: Vec<u8> = (0..count).map(|_| 1 + self.rng.below(255) as u8).collect();
            let lost = region(&record);
            if flip(&record.segment, record.payload_offset - 64 + at, &mask) {
                for id in lost {
                    self.damaged.entry(id).or_default().insert(node);
                }
                self.header_damaged.insert(node);
                self.figures.header_corruptions += 1;
            }
            return;
        }
        let count = 1 + self.rng.below(8) as usize;
        let at = self.rng.below(u64::from(record.len).saturating_sub(count as u64).max(1));
        let mask: Vec<u8> = (0..count).map(|_| 1 + self.rng.below(255) as u8).collect();
        let count = mask.len().min(record.len as usize - at as usize);
        if flip(&record.segment, record.payload_offset + at, &mask[..count]) {
            self.damaged.entry(record.id).or_default().insert(node);
            self.figures.corruptions += 1;
        }
    }

    /// Restarts the nodes whose time is up (all of them with `all`).
    fn restart_due(&mut self, all: bool) {
        let due: Vec<usize> = self
            .down
            .iter_mut()
            .filter_map(|(node, steps)| {
                *steps = steps.saturating_sub(1);
                (all || *steps == 0).then_some(*node)
            })
            .collect();
        for node in due {
            self.down.remove(&node);
            self.cluster.spawn(node);
            self.figures.node_restarts += 1;
        }
    }

    /// Every node serving and live, then `beeline cluster scrub`, which must find every
    /// damaged copy a node still serves and replace it; afterwards nothing is damaged.
    fn scrub(&mut self) {
        // A damaged header shows when its node restarts: restart those nodes first, so
        // that the scrub finds what they lost.
        for node in std::mem::take(&mut self.header_damaged) {
            if let Some(mut process) = self.cluster.nodes[node].0.take() {
                process.kill9();
                self.down.insert(node, 0);
            }
        }
        self.restart_due(true);
        // Up to three tries: a node whose lease lapsed on a loaded machine is "down" to the
        // scrub's repair, which then leaves its chunks for the next pass and says so.
        for attempt in 1..=3 {
            self.wait_all_serving();
            let output = self.cli(&["cluster", "scrub"]).output().unwrap();
            let said = String::from_utf8_lossy(&output.stdout).into_owned();
            self.figures.bad_copies_found += said.lines().filter(|line| line.starts_with("bad copy:")).count() as u64;
            if output.status.success() {
                self.figures.scrubs += 1;
                self.damaged.clear();
                return;
            }
            assert!(attempt < 3, "scrub failed three times: {said}{}", stderr(&output));
            eprintln!("scrub failed, trying again: {said}{}", stderr(&output));
        }
    }

    fn wait_all_serving(&self) {
        for (index, (_, port)) in self.cluster.nodes.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let ping = Command::new(BIN)
                    .args(["node", "ping", "--node", &format!("127.0.0.1:{port}"), "--key-file"])
                    .arg(self.cluster.dir.join("cluster.key"))
                    .output()
                    .unwrap();
                if ping.status.success() {
                    break;
                }
                assert!(Instant::now() < deadline, "node {index} does not answer: {}", stderr(&ping));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.cluster.wait_live(3);
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

/// `N` in "... collected N chunks (B bytes) ...; G bytes of disk given back" lines.
fn gc_figures(text: &str) -> (u64, u64, u64) {
    let number_before = |line: &str, word: &str| -> u64 {
        line.split(word)
            .next()
            .and_then(|head| head.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut sums = (0, 0, 0);
    for line in text.lines().filter(|line| line.contains("collect")) {
        sums.0 += number_before(line, " chunks (");
        sums.1 += line.split(" chunks (").nth(1).and_then(|rest| rest.split(' ').next()?.parse().ok()).unwrap_or(0);
        sums.2 += number_before(line, " bytes of disk given back");
    }
    sums
}

#[test]
fn acknowledged_files_survive_killed_nodes_redis_restarts_and_corruption() {
    let test = "acknowledged_files_survive_killed_nodes_redis_restarts_and_corruption";
    if skip_without_redis(test) {
        return;
    }
    let seed = std::env::var("BEELINE_FAULT_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let steps: u64 = std::env::var("BEELINE_FAULT_STEPS").ok().and_then(|n| n.parse().ok()).unwrap_or(240);
    eprintln!("fault run: seed {seed} (BEELINE_FAULT_SEED={seed} replays its choices), {steps} operations");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // Small segments: many of them, sealed ones to damage, and compaction at work.
    let cluster = Loopback::start_with_args(dir.path(), 3, 0, &["--segment-bytes", "8388608"]);
    let mut run = Run {
        cluster,
        rng: Rng(seed),
        files: BTreeMap::new(),
        damaged: HashMap::new(),
        header_damaged: HashSet::new(),
        down: HashMap::new(),
        figures: Figures::default(),
        next_salt: seed,
    };
    for step in 0..steps {
        run.restart_due(false);
        run.step(step);
        if step % 30 == 29 {
            run.scrub();
        }
    }

    // The end, as an operator would do it: every node back, scrub (and its repair).
    run.scrub();
    let listed: HashSet<String> = ok(&run.cli(&["ls"]).output().unwrap())
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    let names: Vec<String> = run.files.keys().cloned().collect();
    for name in &names {
        let output = run.cli(&["get", name, "-o", "-"]).output().unwrap();
        let expected = &run.files[name].0;
        if output.status.success() {
            let candidates: Vec<Vec<u8>> = expected.iter().flatten().map(|c| run.content(*c)).collect();
            assert!(candidates.contains(&output.stdout), "{name} reads back different bytes (seed {seed})");
            assert!(listed.contains(name), "{name} reads back but ls does not list it");
            run.figures.files_checked += 1;
            run.figures.bytes_checked += output.stdout.len() as u64;
        } else {
            assert!(
                expected.contains(&None),
                "acknowledged {name} is unreadable after scrub (seed {seed}): {}",
                stderr(&output)
            );
            assert!(!listed.contains(name), "ls lists {name}, which does not read: {}", stderr(&output));
        }
    }
    // Healthy once every lease is current again (a loaded machine can let one lapse).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = ok(&run.cli(&["cluster", "status"]).output().unwrap());
        if status_line(&status, "replication:").ends_with("healthy") {
            break;
        }
        assert!(Instant::now() < deadline, "not healthy after scrub (seed {seed}): {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Garbage collection with a short grace, repeated until no node holds a chunk of a
    // file the metadata does not know (the stalled puts of killed clients age into it).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let gc = run.cli(&["cluster", "gc", "--grace-ms", "1000"]).output().unwrap();
        let (chunks, bytes, freed) = gc_figures(&ok(&gc));
        run.figures.chunks_reclaimed += chunks;
        run.figures.bytes_reclaimed += bytes;
        run.figures.disk_bytes_freed += freed;
        let left = ok(&run.cli(&["cluster", "gc", "--dry-run", "--grace-ms", "0"]).output().unwrap());
        if gc_figures(&left).0 == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "garbage left after gc: {left}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // What each node holds is exactly what the layouts list on it.
    let mut metadata = beeline::cluster::RedisMetadata::connect(&run.cluster.redis.url(), "beeline").unwrap();
    let node_ids: Vec<u64> =
        (0..3).map(|index| u64::from_str_radix(&run.cluster.node_id(index), 16).unwrap()).collect();
    let mut listed_chunks = [0u64; 3];
    let mut listed_bytes = [0u64; 3];
    for name in metadata.list_names(None, 100_000).unwrap() {
        let layout = metadata.get_layout(&name).unwrap().unwrap();
        for (index, nodes) in layout.replicas.iter().enumerate().take(layout.record.chunk_count() as usize) {
            for node in nodes {
                let at = node_ids.iter().position(|id| id == node).expect("a known node");
                listed_chunks[at] += 1;
                listed_bytes[at] += u64::from(layout.record.chunk_len(index as u64));
            }
        }
    }
    for index in 0..3 {
        // A node's status is at most 100 ms old: poll (bounded) until it shows the end.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = ok(&Command::new(BIN)
                .args(["node", "status", "--node", &format!("127.0.0.1:{}", run.cluster.nodes[index].1), "--key-file"])
                .arg(run.cluster.dir.join("cluster.key"))
                .output()
                .unwrap());
            let field =
                |name: &str| -> u64 { status_line(&status, name).split_whitespace().nth(1).unwrap().parse().unwrap() };
            let held = (field("chunks:"), field("used_bytes:"));
            let listed = (listed_chunks[index], listed_bytes[index]);
            if held == listed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {index} holds (chunks, bytes) {held:?}; the metadata lists {listed:?} on it (seed {seed})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let f = &run.figures;
    eprintln!(
        "fault run (seed {seed}) in {:.1} s: {} operations ({} puts, {} failed; {} gets, {} failed; {} removes, {} failed); \
         faults: {} node kills ({} restarts), {} Redis restarts, {} clients killed mid-put, {} chunk payloads and {} record headers corrupted; \
         {} scrubs found {} bad copies; {} files checked ({} bytes) byte-identical; gc reclaimed {} chunks ({} bytes), {} bytes of disk given back",
        started.elapsed().as_secs_f64(),
        f.puts + f.gets + f.removes,
        f.puts,
        f.puts_failed,
        f.gets,
        f.gets_failed,
        f.removes,
        f.removes_failed,
        f.node_kills,
        f.node_restarts,
        f.redis_restarts,
        f.client_kills,
        f.corruptions,
        f.header_corruptions,
        f.scrubs,
        f.bad_copies_found,
        f.files_checked,
        f.bytes_checked,
        f.chunks_reclaimed,
        f.bytes_reclaimed,
        f.disk_bytes_freed
    );
}
