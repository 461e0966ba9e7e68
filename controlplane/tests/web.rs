//! `beeline web` in a real browser: a node process, the web server process, and Debian's
//! headless Chromium driven over the DevTools protocol ([`common::cdp`]). Skips, saying
//! so, when Chromium is not installed (ci/setup.sh installs it).

mod common;
use common::cdp::{self, Browser};
use common::node::{BIN, TestNode};
use common::{Process, pattern};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `beeline web` on `listen` for `node`, and the URL it printed.
fn start_web(node: &TestNode, listen: &str, extra: &[&str]) -> (Process, String) {
    let mut command = Command::new(BIN);
    command
        .args(["web", "--listen", listen, "--node", &format!("127.0.0.1:{}", node.port), "--key-file"])
        .arg(node.dir.join("cluster.key"))
        .args(extra)
        .stdout(Stdio::piped());
    let mut child = command.stdin(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start beeline web");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read what beeline web printed");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("beeline web printed no URL: {line:?}"))
        .to_owned();
    // Hand the running child to a guard that kills it on drop.
    (Process::adopt(child), url)
}

/// One HTTP/1.1 request; the status, the headers (lower-cased names) and the body.
fn http(address: &str, request: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).expect("connect to beeline web");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, head, response[split + 4..].to_vec())
}

fn get(address: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    http(address, &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{extra}\r\n"))
}

fn screenshot_path() -> PathBuf {
    // target/tmp -> target/web-test
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("web-test").join("screenshot.png")
}

fn ids(value: &Value, key: &str) -> BTreeSet<String> {
    value[key].as_array().unwrap().iter().map(|node| node["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn web_page_uploads_tags_graphs_and_downloads_in_chromium() {
    let test = "web_page_uploads_tags_graphs_and_downloads_in_chromium";
    let Some(program) = cdp::chromium() else {
        beeline_dataplane::testkit::skip(test, "chromium is not installed (ci/setup.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    // Beyond localhost (127.0.0.2): the token is needed, and the browser gets it from the
    // printed URL like a user would.
    let (_web, url) = start_web(&node, "127.0.0.2:0", &[]);
    let address = url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    assert!(url.contains("?token="), "a server beyond localhost prints its token: {url}");

    let profile = dir.path().join("chromium-profile");
    let mut browser = match Browser::start(program, &profile) {
        Ok(browser) => browser,
        Err(reason) => {
            beeline_dataplane::testkit::skip(test, &format!("chromium cannot run here: {reason}"));
            return;
        }
    };
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    browser
        .browser_call(
            "Browser.setDownloadBehavior",
            serde_json::json!({ "behavior": "allow", "downloadPath": downloads.display().to_string() }),
        )
        .unwrap();
    browser.navigate(&url).unwrap();
    browser.wait_for("window.__beeline && window.__beeline.ready", "the page loads", WAIT);
    assert_eq!(browser.eval("location.search").unwrap(), "", "the token stays out of the address bar");

    // Upload: one file dropped on the drop zone, one chosen in the file dialog.
    let text = "Beeline stores the files of DisGraFS.\nThe graph links files and tags.\n";
    let notes = dir.path().join("notes <b>&.txt");
    std::fs::write(&notes, text).unwrap();
    let data = pattern(300_000, 7);
    let blob = dir.path().join("data-blob.bin");
    std::fs::write(&blob, &data).unwrap();
    browser.drop_files("#drop", &[&notes]).unwrap();
    browser.wait_for("window.__beeline.results.includes('notes <b>&.txt')", "the dropped file is in the results", WAIT);
    browser.choose_files("#file-input", &[&blob]).unwrap();
    browser.wait_for("window.__beeline.results.includes('data-blob.bin')", "the chosen file is in the results", WAIT);
    // The name went in as text, not markup.
    assert_eq!(browser.eval("document.querySelectorAll('#results b').length").unwrap(), 0);

    // The node's tagger adds automatic tags (each with its extractor as source) a moment
    // after the put: search again (Enter in the search box) until they show.
    let deadline = Instant::now() + WAIT;
    let every_file_has_automatic_tags = "(() => { const items = document.querySelectorAll('#results li[data-name]'); return items.length === 2 && Array.from(items).every((li) => li.querySelector('.tag.auto')); })()";
    while browser.eval(every_file_has_automatic_tags).unwrap() != Value::Bool(true) {
        assert!(Instant::now() < deadline, "no automatic tags within {WAIT:?}");
        browser
            .eval("document.getElementById('search').dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}))")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let automatic = browser
        .eval("Array.from(document.querySelectorAll('#results .tag.auto')).map((t) => t.textContent + ' (' + t.title + ')')")
        .unwrap();
    eprintln!("web test: automatic tags {automatic}");

    // Tags through the page: open each file, type a tag, press "add".
    for (name, tags) in
        [("notes <b>&.txt", ["project:beeline", "kind:notes"]), ("data-blob.bin", ["project:beeline", "kind:data"])]
    {
        browser.click(&format!("#results li[data-name=\"{}\"] .name", name.replace('"', "\\\""))).unwrap();
        browser.wait_for(
            &format!(
                "window.__beeline.details && window.__beeline.details.name === {}",
                serde_json::to_string(name).unwrap()
            ),
            "the file's details open",
            WAIT,
        );
        for tag in tags {
            browser.click("#tag-input").unwrap();
            browser.type_text(tag).unwrap();
            browser.click("#tag-form button").unwrap();
            browser.wait_for(
                &format!("window.__beeline.details.tags.includes({})", serde_json::to_string(tag).unwrap()),
                "the tag appears on the file",
                WAIT,
            );
        }
    }
    browser.wait_for(
        "(() => { const tags = Array.from(document.querySelectorAll('#results .tag')).map((t) => t.textContent); return ['project:beeline', 'kind:notes', 'kind:data'].every((t) => tags.includes(t)); })()",
        "the user tags appear in the results",
        WAIT,
    );

    // The graph: one node per file and tag shown, drawn by the graph library.
    let graph = browser.wait_for(
        "window.__beelineGraph && window.__beelineGraph.nodes.length >= 5 && window.__beelineGraph",
        "the graph draws the files and tags",
        WAIT,
    );
    let shown = browser
        .eval(
            "(() => { const ids = []; for (const li of document.querySelectorAll('#results li[data-name]')) { ids.push({id: 'file:' + li.dataset.name}); for (const t of li.querySelectorAll('.tag')) ids.push({id: 'tag:' + t.textContent}); } return {nodes: ids}; })()",
        )
        .unwrap();
    let expected = ids(&shown, "nodes");
    assert_eq!(ids(&graph, "nodes"), expected, "one graph node per file and tag shown");
    let drawn: BTreeSet<String> =
        graph["drawn"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
    assert_eq!(drawn, expected, "the graph library drew every node");
    let chips = browser.eval("document.querySelectorAll('#results .tag').length").unwrap();
    assert_eq!(graph["edges"].as_array().unwrap().len() as u64, chips.as_u64().unwrap(), "one edge per tag shown");

    // Click the tag kind:notes in the graph: its files become the results.
    let position = browser.eval("window.__beelineGraph.position('tag:kind:notes')").unwrap();
    browser.click_at(position["x"].as_f64().unwrap(), position["y"].as_f64().unwrap()).unwrap();
    browser.wait_for(
        "window.__beeline.results.length === 1 && window.__beeline.results[0] === 'notes <b>&.txt'",
        "clicking a tag shows its files",
        WAIT,
    );
    // Click the file in the graph: its details, its preview, its related files.
    browser.wait_for(
        "window.__beelineGraph.nodes.filter((n) => n.kind === 'file').map((n) => n.label).join() === 'notes <b>&.txt'",
        "the graph follows the results",
        WAIT,
    );
    let position = browser.eval("window.__beelineGraph.position('file:notes <b>&.txt')").unwrap();
    browser.eval("window.__beeline.details = null").unwrap();
    browser.click_at(position["x"].as_f64().unwrap(), position["y"].as_f64().unwrap()).unwrap();
    browser.wait_for(
        "window.__beeline.details && window.__beeline.details.name === 'notes <b>&.txt'",
        "clicking a file shows its details",
        WAIT,
    );
    let preview = browser.wait_for("document.querySelector('#preview pre')?.textContent", "the text preview", WAIT);
    assert_eq!(preview, text);
    assert_eq!(browser.eval("window.__beeline.details.related").unwrap(), serde_json::json!(["data-blob.bin"]));
    // Click through to the related file, then download it.
    browser.click("#related .name").unwrap();
    browser.wait_for(
        "window.__beeline.details && window.__beeline.details.name === 'data-blob.bin'",
        "clicking a related file shows it",
        WAIT,
    );
    browser.click("#details-download").unwrap();
    let downloaded = downloads.join("data-blob.bin");
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&downloaded).map(|m| m.len()).unwrap_or(0) < data.len() as u64 {
        assert!(Instant::now() < deadline, "the download did not finish within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::fs::read(&downloaded).unwrap() == data, "the download is byte-identical");

    let violations = browser.eval("window.__beeline.cspViolations").unwrap();
    assert_eq!(violations, serde_json::json!([]), "the page breaks its own Content-Security-Policy");
    // Remove a tag through the page (its × button): the automatic type tag of the blob.
    browser.click("#details-tags button.tag-remove[title='remove the tag type:binary']").unwrap();
    browser.wait_for(
        "window.__beeline.details && window.__beeline.details.name === 'data-blob.bin' && !window.__beeline.details.tags.includes('type:binary')",
        "the removed tag goes",
        WAIT,
    );

    // Back to every file for the screenshot: the whole graph, and the details still open.
    let nodes_all = graph["nodes"].as_array().unwrap().len() - 1;
    browser
        .eval("document.getElementById('search').value = ''; document.getElementById('search').dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}))")
        .unwrap();
    browser.wait_for(&format!("window.__beelineGraph.nodes.length === {nodes_all}"), "the whole graph again", WAIT);
    let png = browser.screenshot().unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    eprintln!("web test: screenshot in {}", path.display());

    // Without the token, nothing; the token is traded for an HttpOnly cookie.
    let token = url.split("token=").nth(1).unwrap().to_owned();
    for path in ["/", "/api/files", "/api/download?name=data-blob.bin", "/app.js"] {
        assert_eq!(get(&address, path, "").0, 401, "{path} without the token");
        assert_eq!(get(&address, path, "Cookie: beeline_token_1=wrong\r\n").0, 401, "{path} with a wrong token");
    }
    let (status, head, _) = get(&address, &format!("/?token={token}"), "");
    assert_eq!(status, 303);
    assert!(head.contains("httponly") && head.contains("samesite=strict"), "{head}");
    let cookie = head
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .unwrap()
        .to_owned();
    let (status, head, page) = get(&address, "/", &format!("Cookie: {cookie}\r\n"));
    assert_eq!(status, 200);
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{head}");
    let page = String::from_utf8_lossy(&page).into_owned();
    let key = std::fs::read_to_string(node.dir.join("cluster.key")).unwrap_or_default();
    assert!(!page.contains(&token) && (key.trim().is_empty() || !page.contains(key.trim())));
    assert_eq!(get(&address, "/api/files", &format!("Authorization: Bearer {token}\r\n")).0, 200);
    // A change without the page's header is refused even with the token.
    let (status, _, _) = http(
        &address,
        &format!(
            "DELETE /api/file?name=data-blob.bin HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403);
    assert!(node.cli(&["stat", "data-blob.bin"]).status.success(), "the refused delete removed nothing");
}

#[test]
fn localhost_server_needs_no_token_but_its_own_host() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let (_web, url) = start_web(&node, "127.0.0.1:0", &["--upload-bytes-max", "1000"]);
    assert!(!url.contains("token"), "{url}");
    let address = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    assert_eq!(get(&address, "/api/files", "").0, 200);
    // DNS rebinding: another Host is refused.
    let request = "GET /api/files HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n";
    assert_eq!(http(&address, request).0, 403);
    // Changes need the page's header; an upload round-trips.
    let body = b"hello from the web\n";
    let put = |name: &str, header: &str| {
        http(
            &address,
            &format!(
                "PUT /api/upload?name={name} HTTP/1.1\r\nHost: {address}\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                String::from_utf8_lossy(body)
            ),
        )
    };
    assert_eq!(put("hello.txt", "").0, 403, "a change without X-Beeline");
    assert_eq!(put("hello.txt", "X-Beeline: 1\r\n").0, 201);
    let (status, head, got) = get(&address, "/api/download?name=hello.txt", "");
    assert_eq!(status, 200);
    assert!(head.contains("content-disposition: attachment; filename=\"hello.txt\""), "{head}");
    assert_eq!(got, body);
    let (status, _, message) = get(&address, "/api/file?name=missing", "");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&message));
    // Over the upload limit: refused, and nothing recorded.
    let big = "x".repeat(1001);
    let request = format!(
        "PUT /api/upload?name=big.txt HTTP/1.1\r\nHost: {address}\r\nX-Beeline: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let (status, _, message) = http(&address, &request);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&message));
    assert!(String::from_utf8_lossy(&message).contains("--upload-bytes-max"));
    assert!(!node.cli(&["stat", "big.txt"]).status.success(), "a refused upload recorded a file");
    // Delete.
    let request = format!(
        "DELETE /api/file?name=hello.txt HTTP/1.1\r\nHost: {address}\r\nX-Beeline: 1\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(http(&address, &request).0, 200);
    assert!(!node.cli(&["stat", "hello.txt"]).status.success(), "the file is gone");
}

/// Polls `check` until it gives a value; fails naming `what` after `seconds`.
fn poll<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {seconds} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[test]
fn cluster_mode_serves_tags_graph_and_nodes_from_redis() {
    let test = "cluster_mode_serves_tags_graph_and_nodes_from_redis";
    if !common::have("redis-server") {
        beeline_dataplane::testkit::skip(test, "redis-server is not installed (ci/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = Command::new("redis-server");
    redis.args(["--bind", "127.0.0.1", "--port", &redis_port.to_string(), "--save", "", "--protected-mode", "no"]);
    redis.arg("--dir").arg(dir.path());
    let _redis = Process::spawn(redis);
    poll(20, "redis-server listening", || TcpStream::connect(("127.0.0.1", redis_port)).ok());
    let url = format!("redis://127.0.0.1:{redis_port}");
    let key = dir.path().join("cluster.key");
    let cli = |args: &[&str]| {
        Command::new(BIN).args(args).args(["--metadata", &url, "--key-file"]).arg(&key).output().unwrap()
    };
    let mut node = Command::new(BIN);
    node.args(["node", "run", "--listen", &format!("127.0.0.1:{}", common::free_port()), "--data-dir"])
        .arg(dir.path().join("node"))
        .arg("--key-file")
        .arg(&key)
        .args(["--metadata", &url, "--hugepages", "off", "--arena-frames", "4096"]);
    let _node = Process::spawn(node);
    poll(30, "the node live in the cluster", || {
        String::from_utf8_lossy(&cli(&["cluster", "status"]).stdout).contains("(1 live)").then_some(())
    });
    assert!(cli(&["cluster", "configure", "--replication-factor", "1"]).status.success());

    let mut command = Command::new(BIN);
    command.args(["web", "--listen", "127.0.0.1:0", "--metadata", &url, "--key-file"]).arg(&key);
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _web = Process::adopt(child);
    let address = line.split("http://").nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_owned();

    let data = pattern(200_000, 3);
    let mut request = format!(
        "PUT /api/upload?name=dir%2Fpaper.bin HTTP/1.1\r\nHost: {address}\r\nX-Beeline: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    )
    .into_bytes();
    request.extend_from_slice(&data);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.write_all(&request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let edit = |body: &str| {
        http(
            &address,
            &format!(
                "POST /api/tags HTTP/1.1\r\nHost: {address}\r\nX-Beeline: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let (status, _, body) = edit(r#"{"name":"dir/paper.bin","add":["topic:storage","draft"]}"#);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let tags: Vec<String> =
        json(&body).as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap().to_owned()).collect();
    assert!(tags.contains(&"topic:storage".to_owned()) && tags.contains(&"draft".to_owned()), "{tags:?}");
    let (_, _, body) = get(&address, "/api/files?q=topic%3Astorage%20%26%20draft", "");
    assert_eq!(json(&body)[0]["name"], "dir/paper.bin");
    let (_, _, body) = get(&address, "/api/tags?prefix=topic", "");
    assert_eq!(json(&body)[0]["tag"], "topic:storage");
    let (status, _, body) = edit(r#"{"name":"dir/paper.bin","remove":["draft"]}"#);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (_, _, body) = get(&address, "/api/files?q=draft", "");
    assert_eq!(json(&body), serde_json::json!([]), "the removed tag no longer finds the file");
    let (_, _, body) = get(&address, "/api/graph", "");
    let graph = json(&body);
    assert!(ids(&graph, "nodes").contains("file:dir/paper.bin") && ids(&graph, "nodes").contains("tag:topic:storage"));
    let (_, _, body) = get(&address, "/api/cluster", "");
    let view = json(&body);
    assert_eq!(view["mode"], "cluster");
    assert_eq!(view["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(view["nodes"][0]["state"], "live");
    assert!(view["nodes"][0]["used_bytes"].as_u64().is_some());
    let (status, head, got) = get(&address, "/api/download?name=dir%2Fpaper.bin", "");
    assert_eq!(status, 200);
    assert!(head.contains("filename=\"paper.bin\""), "{head}");
    assert!(got == data, "the download from the cluster is byte-identical");
}
