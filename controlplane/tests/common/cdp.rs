//! A headless Chromium driven over the DevTools protocol through `--remote-debugging-pipe`
//! (NUL-separated JSON on file descriptors 3 and 4): no WebSocket, no extra crate, only
//! Debian's `chromium`. Every wait has a deadline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Events kept at most (the oldest go first).
const EVENTS_MAX: usize = 4096;

#[derive(Default)]
struct Inbox {
    replies: HashMap<u64, Value>,
    events: Vec<Value>,
    closed: bool,
}

pub struct Browser {
    child: Child,
    to_browser: std::fs::File,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    next_id: u64,
    session: Option<String>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded: both are open descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A copy of `fd` numbered 10 or above, so that placing the child's ends at 3 and 4
/// cannot overwrite the other one.
fn high(fd: OwnedFd) -> OwnedFd {
    use std::os::fd::AsRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one (or -1).
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    assert!(copy >= 10, "fcntl: {}", std::io::Error::last_os_error());
    // SAFETY: `copy` is a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(copy) }
}

/// The Chromium binary, if one is installed.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|program| super::have(program))
}

impl Browser {
    /// Starts a headless browser with its profile in `profile`, and opens a page.
    pub fn start(program: &str, profile: &Path) -> Result<Browser, String> {
        use std::os::fd::AsRawFd;
        let (child_reads, we_write) = pipe();
        let (we_read, child_writes) = pipe();
        let (child_reads, child_writes) = (high(child_reads), high(child_writes));
        let (read_fd, write_fd) = (child_reads.as_raw_fd(), child_writes.as_raw_fd());
        let mut command = Command::new(program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-pipe",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(read_fd, 3) < 0 || libc::dup2(write_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|error| format!("cannot start {program}: {error}"))?;
        drop((child_reads, child_writes));
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        let sink = inbox.clone();
        let from_browser = std::fs::File::from(we_read);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(value) = serde_json::from_slice::<Value>(&message) else { continue };
                let (lock, ready) = &*sink;
                let mut inbox = lock.lock().unwrap();
                match value.get("id").and_then(Value::as_u64) {
                    Some(id) => {
                        inbox.replies.insert(id, value);
                    }
                    None => {
                        if inbox.events.len() >= EVENTS_MAX {
                            inbox.events.remove(0);
                        }
                        inbox.events.push(value);
                    }
                }
                ready.notify_all();
            }
            let (lock, ready) = &*sink;
            lock.lock().unwrap().closed = true;
            ready.notify_all();
        });
        let mut browser =
            Browser { child, to_browser: std::fs::File::from(we_write), inbox, next_id: 1, session: None };
        let version = browser.browser_call("Browser.getVersion", json!({}))?;
        eprintln!("web test: {}", version["product"].as_str().unwrap_or("a browser"));
        let target = browser.browser_call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached =
            browser.browser_call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))?;
        browser.session = Some(attached["sessionId"].as_str().ok_or("no sessionId")?.to_owned());
        browser.call("Page.enable", json!({}))?;
        browser.call("Runtime.enable", json!({}))?;
        Ok(browser)
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).map_err(|error| format!("{method}: the browser is gone ({error})"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (lock, ready) = &*self.inbox;
        let mut inbox = lock.lock().unwrap();
        loop {
            if let Some(reply) = inbox.replies.remove(&id) {
                if let Some(error) = reply.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok(reply["result"].clone());
            }
            if inbox.closed {
                return Err(format!("{method}: the browser closed its pipe"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{method}: no answer within 30 s"));
            }
            inbox = ready.wait_timeout(inbox, left).unwrap().0;
        }
    }

    /// A command to the browser itself.
    pub fn browser_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.send(method, params, None)
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.send(method, params, session)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {details}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls `expression` until it is truthy; fails with `what` after `timeout`.
    pub fn wait_for(&mut self, expression: &str, what: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(expression).unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            let errors = self.eval("JSON.stringify(window.__beeline && window.__beeline.errors)").unwrap_or_default();
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; the page's errors: {errors}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        self.call("Page.navigate", json!({ "url": url })).map(|_| ())
    }

    /// A left click at page coordinates.
    pub fn click_at(&mut self, x: f64, y: f64) -> Result<(), String> {
        self.call("Input.dispatchMouseEvent", json!({ "type": "mouseMoved", "x": x, "y": y }))?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )?;
        }
        Ok(())
    }

    /// The centre of the first element `selector` matches, scrolled into view.
    pub fn centre_of(&mut self, selector: &str) -> Result<(f64, f64), String> {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()",
            serde_json::to_string(selector).unwrap()
        );
        let value = self.eval(&expression)?;
        match (value[0].as_f64(), value[1].as_f64()) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(format!("nothing on the page matches {selector}")),
        }
    }

    pub fn click(&mut self, selector: &str) -> Result<(), String> {
        let (x, y) = self.centre_of(selector)?;
        self.click_at(x, y)
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub fn type_text(&mut self, text: &str) -> Result<(), String> {
        self.call("Input.insertText", json!({ "text": text })).map(|_| ())
    }

    /// Drags files from outside the browser and drops them on the element `selector`.
    pub fn drop_files(&mut self, selector: &str, files: &[&Path]) -> Result<(), String> {
        let (x, y) = self.centre_of(selector)?;
        let files: Vec<String> = files.iter().map(|path| path.display().to_string()).collect();
        let data = json!({ "items": [], "files": files, "dragOperationsMask": 1 });
        for kind in ["dragEnter", "dragOver", "drop"] {
            self.call("Input.dispatchDragEvent", json!({ "type": kind, "x": x, "y": y, "data": data }))?;
        }
        Ok(())
    }

    /// Picks files in the file input `selector`, as its dialog would.
    pub fn choose_files(&mut self, selector: &str, files: &[&Path]) -> Result<(), String> {
        let document = self.call("DOM.getDocument", json!({}))?;
        let root = document["root"]["nodeId"].clone();
        let node = self.call("DOM.querySelector", json!({ "nodeId": root, "selector": selector }))?;
        let files: Vec<String> = files.iter().map(|path| path.display().to_string()).collect();
        self.call("DOM.setFileInputFiles", json!({ "files": files, "nodeId": node["nodeId"] })).map(|_| ())
    }

    /// A PNG of the page as it is.
    pub fn screenshot(&mut self) -> Result<Vec<u8>, String> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        decode_base64(shot["data"].as_str().ok_or("no screenshot data")?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return Err(format!("not base64: byte {byte}")),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Ok(out)
}
