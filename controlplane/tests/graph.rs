//! The file-tag graph for real: tags with sources, untag, search expressions, related
//! files, graphs and tag completion through the `beeline` binary, on a single node (its
//! embedded metadata and its own tagger) and on a real redis-server with `beeline tagger
//! run`; and two taggers sharing one Redis Stream, one of them killed mid-file.

mod common;
use common::node::{BIN, TestNode, ok, one_line_error};
use common::{Process, have};

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `check` until it returns `Some`, for at most `seconds`; panics with `what`.
fn poll<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {seconds} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CLI pointed at one node or at the cluster.
trait Cli {
    fn cli(&self, args: &[&str]) -> Output;
}

impl Cli for TestNode {
    fn cli(&self, args: &[&str]) -> Output {
        TestNode::cli(self, args)
    }
}

fn tags(cli: &dyn Cli, name: &str) -> Vec<(String, String)> {
    ok(&cli.cli(&["tags", name]))
        .lines()
        .map(|line| {
            let (tag, source) = line.split_once('\t').expect("tag<TAB>source");
            (tag.to_owned(), source.to_owned())
        })
        .collect()
}

fn lines(output: &Output) -> Vec<String> {
    ok(output).lines().map(str::to_owned).collect()
}

fn put(cli: &dyn Cli, dir: &Path, name: &str, content: &[u8]) {
    let path = dir.join(format!("in-{}", name.replace('/', "_")));
    std::fs::write(&path, content).unwrap();
    ok(&cli.cli(&["put", path.to_str().unwrap(), "--as", name]));
}

/// Waits for the tagger to give `name` its type tag.
fn wait_tagged(cli: &dyn Cli, name: &str, type_tag: &str) {
    poll(30, &format!("the automatic tag {type_tag} on {name}"), || {
        tags(cli, name).iter().any(|(tag, source)| tag == type_tag && source != "user").then_some(())
    });
}

/// The same scenario against one node or the cluster.
fn scenario(cli: &dyn Cli, dir: &Path) {
    put(cli, dir, "report.pdf", b"%PDF-1.4 storage report");
    put(cli, dir, "draft.pdf", b"%PDF-1.4 draft");
    put(cli, dir, "paper.pdf", b"%PDF-1.4 networks");
    // Words of two letters, no heading: the text extractor finds no title, language or
    // keyword in it, so notes.md's only automatic tag is its type.
    put(cli, dir, "notes.md", b"- ok\n");
    put(cli, dir, "photo.png", b"\x89PNG\r\n\x1a\n....");
    for (name, type_tag) in [
        ("report.pdf", "type:pdf"),
        ("draft.pdf", "type:pdf"),
        ("paper.pdf", "type:pdf"),
        ("notes.md", "type:markdown"),
        ("photo.png", "type:png"),
    ] {
        wait_tagged(cli, name, type_tag);
    }
    ok(&cli.cli(&["tag", "report.pdf", "keyword:storage", "keyword:disk"]));
    ok(&cli.cli(&["tag", "draft.pdf", "keyword:storage", "draft"]));
    ok(&cli.cli(&["tag", "notes.md", "keyword:disk"]));
    // Sources: the user's and the extractor's, side by side.
    let report = tags(cli, "report.pdf");
    assert!(report.contains(&("keyword:storage".into(), "user".into())), "{report:?}");
    assert!(report.iter().any(|(tag, source)| tag == "type:pdf" && source == "magic"), "{report:?}");

    let search = |expr: &str, extra: &[&str]| {
        let mut args = vec!["search", expr];
        args.extend_from_slice(extra);
        lines(&cli.cli(&args))
    };
    assert_eq!(search("type:pdf & (keyword:storage | keyword:disk) & !draft", &[]), ["report.pdf"]);
    assert_eq!(search("keyword:disk", &[]), ["notes.md", "report.pdf"]);
    assert_eq!(search("!type:pdf", &[]), ["notes.md", "photo.png"]);
    assert_eq!(search("type:pdf", &["--name", "PAP"]), ["paper.pdf"]);
    let error = one_line_error(&cli.cli(&["search", "type:pdf & (draft"]));
    assert!(error.contains("without its ')'") && error.contains("byte"), "{error}");

    // Related: draft shares storage + pdf; notes shares the rarer disk keyword and ranks
    // above paper, which shares only the common type.
    let related: Vec<String> = lines(&cli.cli(&["related", "report.pdf"]))
        .iter()
        .map(|line| line.split('\t').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(related, ["draft.pdf", "notes.md", "paper.pdf"]);

    let completed = lines(&cli.cli(&["tags", "--prefix", "keyword:"]));
    assert_eq!(completed, ["keyword:disk\t2", "keyword:storage\t2"]);

    let graph: serde_json::Value =
        serde_json::from_str(&ok(&cli.cli(&["graph", "--around", "notes.md", "--depth", "2"]))).unwrap();
    let ids: Vec<&str> = graph["nodes"].as_array().unwrap().iter().map(|node| node["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["file:notes.md", "file:report.pdf", "tag:keyword:disk", "tag:type:markdown"]);
    assert_eq!(graph["edges"].as_array().unwrap().len(), 3);
    let dot = ok(&cli.cli(&["graph", "--format", "dot", "--max-nodes", "3"]));
    assert!(dot.starts_with("graph disgrafs {") && dot.matches("shape=").count() == 3, "{dot}");

    // Tag names are checked before anything is sent.
    let error = one_line_error(&cli.cli(&["tag", "notes.md", "two words"]));
    assert!(error.contains("whitespace"), "{error}");
    let error = one_line_error(&cli.cli(&["tag", "missing", "x"]));
    assert!(error.contains("no file named missing"), "{error}");

    // A user removes the automatic tags and keeps their own.
    ok(&cli.cli(&["untag", "report.pdf", "--automatic"]));
    assert_eq!(
        tags(cli, "report.pdf"),
        [("keyword:disk".into(), "user".into()), ("keyword:storage".into(), "user".into())]
    );
    ok(&cli.cli(&["untag", "report.pdf", "keyword:disk"]));
    assert_eq!(search("keyword:disk", &[]), ["notes.md"]);

    // A re-put file keeps the user's tags; the tagger tags its new content.
    put(cli, dir, "draft.pdf", b"plain text now");
    wait_tagged(cli, "draft.pdf", "type:text");
    let draft = tags(cli, "draft.pdf");
    assert!(!draft.iter().any(|(tag, _)| tag == "type:pdf"), "{draft:?}");
    assert!(draft.contains(&("draft".into(), "user".into())), "{draft:?}");

    // A removed file's tags go with it.
    ok(&cli.cli(&["rm", "notes.md"]));
    assert!(search("keyword:disk", &[]).is_empty());
    assert!(lines(&cli.cli(&["tags", "--prefix", "type:markdown"])).is_empty());
}

/// The value of the unlabelled metric `name` on the /metrics page at `address`.
fn metric(address: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(address).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn free_tcp_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

#[test]
fn single_node_tags_untag_search_related_and_graph() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_tcp_address();
    let node = TestNode::start(dir.path(), &["--metrics-listen", &metrics]);
    scenario(&node, dir.path());
    // Five files and one re-put tagged by the node's own tagger, none waiting.
    assert!(metric(&metrics, "beeline_tagger_files_tagged_total").unwrap() >= 6.0);
    assert_eq!(metric(&metrics, "beeline_tagger_lag_files"), Some(0.0));
}

/// A large file of a type no extractor reads (random bytes: "binary") is tagged from its
/// first chunk: the node's tagger keeps no more of it, and stops reading once the chunks
/// already asked for (at most 4) arrive.
#[test]
fn a_binary_file_is_tagged_from_its_start_alone() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_tcp_address();
    let node = TestNode::start(dir.path(), &["--metrics-listen", &metrics]);
    // 0x80 starts no UTF-8 character and no magic number: a binary, 40 MiB of it.
    put(&node, dir.path(), "blob.bin", &vec![0x80; 40 << 20]);
    wait_tagged(&node, "blob.bin", "type:binary");
    let read = poll(30, "the tagger's bytes read", || metric(&metrics, "beeline_tagger_bytes_read_total"));
    // It kept one chunk (4 MiB); before, it read up to its 64 MiB limit: all 40 MiB here.
    assert!(read <= f64::from(4 << 20), "the tagger kept {read} bytes of a binary file");
}

/// `--auto-tag false` runs no tagger (the benchmarks use it so that nothing reads their
/// files back while they are measured); the files stay untagged until a start with it on.
#[test]
fn a_node_with_auto_tag_off_runs_no_tagger_until_started_with_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_tcp_address();
    let mut node = TestNode::start(dir.path(), &["--metrics-listen", &metrics, "--auto-tag", "false"]);
    put(&node, dir.path(), "report.pdf", b"%PDF-1.4 storage report");
    let page_answers = poll(30, "the node's metrics page", || metric(&metrics, "beeline_corrupt_chunks"));
    assert_eq!(page_answers, 0.0);
    assert_eq!(metric(&metrics, "beeline_tagger_lag_files"), None, "no tagger thread, so no tagger metrics");
    assert!(tags(&node, "report.pdf").is_empty());

    // The same data directory with the tagger on: the file waiting untagged gets its tags.
    drop(node.process.take());
    node.extra.clear();
    node.spawn();
    wait_tagged(&node, "report.pdf", "type:pdf");
}

struct Redis {
    _process: Process,
    port: u16,
}

impl Redis {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--protected-mode", "no"]);
        command.arg("--dir").arg(dir);
        let process = Process::spawn(command);
        poll(20, "redis-server listening", || TcpStream::connect(("127.0.0.1", port)).ok());
        Redis { _process: process, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn command(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// One node on Redis, replication factor 1, and the CLI pointed at the cluster.
struct Cluster {
    // Dropped first: taggers and the node before Redis.
    taggers: Vec<Process>,
    node: Process,
    redis: Redis,
    dir: PathBuf,
}

impl Cli for Cluster {
    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        let redis = Redis::start(&dir.join("redis"));
        let port = common::free_port();
        let mut command = Command::new(BIN);
        command
            .args(["node", "run", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.join("node"))
            .arg("--key-file")
            .arg(dir.join("cluster.key"))
            .args(["--metadata", &redis.url(), "--hugepages", "off", "--arena-frames", "4096"]);
        let node = Process::spawn(command);
        let cluster = Cluster { taggers: Vec::new(), node, redis, dir: dir.to_owned() };
        poll(30, "the node live in the cluster", || {
            let status = String::from_utf8_lossy(&cluster.cli(&["cluster", "status"]).stdout).into_owned();
            status.contains("(1 live)").then_some(())
        });
        ok(&cluster.cli(&["cluster", "configure", "--replication-factor", "1"]));
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).args(["--metadata", &self.redis.url(), "--key-file"]).arg(self.dir.join("cluster.key"));
        command
    }

    /// Starts `beeline tagger run` as `consumer`, serving metrics at `metrics`; `hold`: a
    /// file it keeps in hand.
    fn tagger(&self, consumer: &str, hold: Option<&str>, metrics: &str) -> Process {
        let mut command = self.command(&["tagger", "run", "--consumer", consumer, "--claim-idle-ms", "1500"]);
        command.args(["--batch", "4", "--metrics-listen", metrics]);
        if let Some(hold) = hold {
            command.env("BEELINE_TAGGER_HOLD", hold);
        }
        Process::spawn(command)
    }
}

fn skip_without_redis(test: &str) -> bool {
    for program in ["redis-server", "redis-cli"] {
        if !have(program) {
            beeline_dataplane::testkit::skip(test, &format!("{program} is not installed (ci/setup.sh installs it)"));
            return true;
        }
    }
    false
}

#[test]
fn redis_tags_untag_search_related_and_graph_with_a_stream_tagger() {
    if skip_without_redis("redis_tags_untag_search_related_and_graph_with_a_stream_tagger") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let tagger = cluster.tagger("solo", None, &free_tcp_address());
    cluster.taggers.push(tagger);
    scenario(&cluster, dir.path());
}

/// The tags a tagger gives `content` stored as `name`.
fn expected_tags(name: &str, content: &[u8]) -> Vec<(String, String)> {
    let stats = beeline::tagger::runner::TaggerStats::default();
    let limits = beeline::tagger::extract::Limits::default();
    beeline::tagger::runner::tags_for(name, Ok(content.to_vec()), &limits, &stats)
        .into_iter()
        .map(|tag| (tag.tag, tag.source))
        .collect()
}

#[test]
fn two_taggers_share_one_stream_and_a_killed_one_leaves_its_files_to_the_other() {
    if skip_without_redis("two_taggers_share_one_stream_and_a_killed_one_leaves_its_files_to_the_other") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    let files: Vec<(String, Vec<u8>)> = (0..16)
        .map(|index| {
            let content = match index % 4 {
                0 => format!("%PDF-1.4 document {index}").into_bytes(),
                1 => format!("# notes {index}\nabout disks and storage\n").into_bytes(),
                2 => b"\x89PNG\r\n\x1a\n".iter().copied().chain([index as u8; 8]).collect(),
                _ => format!("plain text {index}").into_bytes(),
            };
            let extension = ["pdf", "md", "png", "txt"][index % 4];
            (format!("f{index:02}.{extension}"), content)
        })
        .collect();
    for (name, content) in &files {
        put(&cluster, dir.path(), name, content);
    }
    // The first tagger takes the first batch and holds its fourth file mid-way.
    let mut first = cluster.tagger("first", Some("f03.txt"), &free_tcp_address());
    poll(30, "the first tagger holding f03.txt", || first.logged("holding this file").then_some(()));
    let metrics = free_tcp_address();
    let second = cluster.tagger("second", None, &metrics);
    first.kill9();
    let mut waiting = Vec::new();
    poll(60, "every file with exactly its tags", || {
        waiting = files
            .iter()
            .filter(|(name, content)| tags(&cluster, name) != expected_tags(name, content))
            .map(|(name, _)| name.clone())
            .collect();
        waiting.is_empty().then_some(())
    });
    assert!(second.logged("took over entries"), "{}", second.log());
    // Every entry acknowledged: nothing pending in the group.
    poll(10, "no entry pending", || {
        let summary = cluster.redis.command(&["XPENDING", "{beeline}:tagging", "taggers"]);
        summary.starts_with('0').then_some(())
    });
    // The second tagger's own /metrics: what it took over, and nothing left waiting.
    assert!(metric(&metrics, "beeline_tagger_entries_claimed_total").unwrap() >= 1.0);
    assert!(metric(&metrics, "beeline_tagger_files_tagged_total").unwrap() >= 1.0);
    poll(10, "a lag of 0 on the second tagger's metrics", || {
        (metric(&metrics, "beeline_tagger_lag_files") == Some(0.0)).then_some(())
    });
    drop(second);
}

#[test]
fn a_file_that_cannot_be_read_gets_its_type_tag_and_a_counted_failure() {
    if skip_without_redis("a_file_that_cannot_be_read_gets_its_type_tag_and_a_counted_failure") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    put(&cluster, dir.path(), "lost.txt", b"words that no tagger will read");
    // Its only copy goes with the node, before any tagger ran.
    cluster.node.kill9();
    let metrics = free_tcp_address();
    let mut tagger = cluster.tagger("survivor", None, &metrics);
    poll(60, "lost.txt tagged from what could be read", || {
        (tags(&cluster, "lost.txt") == [("type:binary".to_owned(), "magic".to_owned())]).then_some(())
    });
    assert!(metric(&metrics, "beeline_tagger_failures_total").unwrap() >= 1.0);
    assert!(tagger.logged("tagged partly") && tagger.logged("cannot read it"), "{}", tagger.log());
    assert!(tagger.exited().is_none(), "the tagger stopped: {}", tagger.log());
}
