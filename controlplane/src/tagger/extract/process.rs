//! External tools (poppler-utils, ffmpeg, pocketsphinx) run as processes with a deadline:
//! each runs in its own process group, which is killed with SIGKILL when the deadline
//! passes, and its output is read up to a bound, so a hostile file can cost neither
//! unbounded time nor unbounded memory.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A program and the Debian packages that install it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tool {
    pub program: &'static str,
    pub packages: &'static str,
}

pub(super) const PDFINFO: Tool = Tool { program: "pdfinfo", packages: "poppler-utils" };
pub(super) const PDFTOTEXT: Tool = Tool { program: "pdftotext", packages: "poppler-utils" };
pub(super) const FFPROBE: Tool = Tool { program: "ffprobe", packages: "ffmpeg" };
pub(super) const FFMPEG: Tool = Tool { program: "ffmpeg", packages: "ffmpeg" };
pub(super) const POCKETSPHINX: Tool =
    Tool { program: "pocketsphinx_continuous", packages: "pocketsphinx pocketsphinx-en-us" };

/// Bytes of standard error kept for a failure message.
const STDERR_BYTES_MAX: usize = 4096;
/// Longest pause between two checks of a running tool.
const POLL_MAX: Duration = Duration::from_millis(20);
/// How long the output of a tool that exited may take to arrive (its pipes close at exit
/// unless it left a child holding them).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub(super) enum ToolError {
    #[error("{} not installed: apt-get install {}", .0.program, .0.packages)]
    NotInstalled(Tool),
    #[error("cannot run {program}: {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    #[error("no time left to run {0}")]
    NoTime(&'static str),
}

/// What a tool printed, and how it ended.
#[derive(Debug)]
pub(super) struct Output {
    pub program: &'static str,
    /// The first `stdout_bytes_max` bytes of its standard output.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
}

impl Output {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// A one-line reason for a tool that failed or ran out of time.
    pub fn failure(&self) -> String {
        let Some(status) = self.status else {
            return format!("{} stopped at the time limit", self.program);
        };
        let stderr = String::from_utf8_lossy(&self.stderr);
        let line = stderr.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
        let line: String = line.chars().take(200).collect();
        format!("{} failed ({status}): {line}", self.program)
    }
}

/// Runs `tool` with `args` (standard input closed) until it exits or `deadline` passes,
/// whichever comes first; keeps at most `stdout_bytes_max` bytes of its output (the rest
/// is read and dropped, so the tool never blocks on a full pipe).
pub(super) fn run(
    tool: Tool,
    args: &[&OsStr],
    deadline: Instant,
    stdout_bytes_max: usize,
) -> Result<Output, ToolError> {
    if Instant::now() >= deadline {
        return Err(ToolError::NoTime(tool.program));
    }
    let mut child = Command::new(tool.program)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ToolError::NotInstalled(tool),
            _ => ToolError::Spawn { program: tool.program, source },
        })?;
    let pid = child.id();
    let readers = match (child.stdout.take(), child.stderr.take()) {
        (Some(stdout), Some(stderr)) => {
            read_bounded(stdout, stdout_bytes_max).and_then(|out| Ok((out, read_bounded(stderr, STDERR_BYTES_MAX)?)))
        }
        _ => Err(std::io::Error::other("no pipes")),
    };
    let (stdout, stderr) = match readers {
        Ok(readers) => readers,
        Err(source) => {
            kill_group(pid);
            let _ = child.kill();
            let _ = child.wait();
            return Err(ToolError::Spawn { program: tool.program, source });
        }
    };
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => {
                kill_group(pid);
                let _ = child.wait();
                break None;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            // The group leader is not reaped yet, so its group id is still ours to kill.
            kill_group(pid);
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(POLL_MAX);
    };
    let stdout = stdout.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
    let stderr = stderr.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
    Ok(Output { program: tool.program, stdout, stderr, status })
}

/// SIGKILL to the process group `pid` leads.
fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; `-pid` names the process group
    // the child leads (spawned with process_group(0)), which holds only its processes.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Reads `pipe` to its end on a thread of its own, keeping the first `bytes_max` bytes.
fn read_bounded(mut pipe: impl Read + Send + 'static, bytes_max: usize) -> std::io::Result<mpsc::Receiver<Vec<u8>>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new().name("extract-pipe".into()).spawn(move || {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => {
                    let room = bytes_max.saturating_sub(kept.len());
                    kept.extend_from_slice(&buffer[..read.min(room)]);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sender.send(kept);
    })?;
    Ok(receiver)
}

/// Whether `program` can be found on `PATH`.
pub(super) fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|directory| directory.join(program).is_file()))
}

/// `bytes` in a temporary file (removed when dropped), for tools that read files.
pub(super) fn temp_file(bytes: &[u8], suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut file = tempfile::Builder::new().prefix("beeline-extract-").suffix(suffix).tempfile()?;
    file.write_all(bytes)?;
    file.flush()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_past_its_deadline_is_killed() {
        let sleep = Tool { program: "sleep", packages: "coreutils" };
        let started = Instant::now();
        let output = run(sleep, &[OsStr::new("30")], started + Duration::from_millis(200), 1024).unwrap();
        assert!(output.status.is_none());
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(output.failure(), "sleep stopped at the time limit");
    }

    #[test]
    fn output_is_kept_up_to_its_bound_and_the_rest_drained() {
        let sh = Tool { program: "sh", packages: "dash" };
        let script = OsStr::new("head -c 1000000 /dev/zero; echo done >&2");
        let output = run(sh, &[OsStr::new("-c"), script], Instant::now() + Duration::from_secs(20), 1000).unwrap();
        assert!(output.succeeded());
        assert_eq!(output.stdout.len(), 1000);
        assert_eq!(output.stderr, b"done\n");
    }

    #[test]
    fn a_missing_tool_says_what_to_install() {
        let missing = Tool { program: "beeline-no-such-tool", packages: "beeline-tools" };
        let error = run(missing, &[], Instant::now() + Duration::from_secs(1), 10).unwrap_err();
        assert_eq!(error.to_string(), "beeline-no-such-tool not installed: apt-get install beeline-tools");
    }
}
