//! Helpers shared by the integration tests: data patterns, commands that must succeed,
//! host checks, unique names, network namespaces ([`netns`]), process guards
//! ([`process`]), one node ([`node`]) and a cluster on loopback with Redis ([`loopback`]).
//!
//! Every test binary compiles this module on its own and uses only part of it, so unused
//! helpers (and re-exports) are not warnings here.
#![allow(dead_code)]

pub mod cdp;
pub mod loopback;
pub mod netns;
pub mod node;
pub mod process;

#[allow(unused_imports)]
pub use netns::{Bridge, End, Namespaces, Veth, in_netns, ns_command, veth_pair, veth_to_bridge};
#[allow(unused_imports)]
pub use process::{GatedInput, Process};

use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Deterministic pseudo-random bytes (xorshift), different for every `salt`.
pub fn pattern(len: usize, salt: u64) -> Vec<u8> {
    let mut state = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes()[..(len - out.len()).min(8)]);
    }
    out
}

/// Runs `command` to completion and fails the test, with its output, unless it succeeds.
pub fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// [`run`] for a command given as words.
pub fn sh(args: &[&str]) -> Output {
    run(Command::new(args[0]).args(&args[1..]))
}

/// Sends SIGTERM to `child` (our own child: `ip netns exec` execs in place) and waits,
/// bounded, for it to exit.
pub fn terminate(mut child: std::process::Child) -> ExitStatus {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        assert!(Instant::now() < deadline, "did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the test runs as root (namespaces, veths, mounts, hugepages need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|out| out.status.success())
}

/// A short id, different for every call in every live process on this machine: the pid
/// in base 36 padded to five characters (pids are below 36^5), then a per-process counter
/// in base 36. Five to seven characters, so that a four-character prefix and a short suffix
/// still fit an interface name (at most 15 characters).
pub fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base36 = |mut n: u32| {
        let mut digits = Vec::new();
        loop {
            digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        digits.reverse();
        String::from_utf8(digits).unwrap()
    };
    format!("{:0>5}{}", base36(std::process::id()), base36(NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tmpfs of `size` (`50m`, ...) mounted at a path the test owns; lazily unmounted on
/// drop whatever the test's outcome. Needs root.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let options = format!("size={size}");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(path).status().unwrap();
        assert!(mounted.success(), "mount tmpfs on {} failed", path.display());
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
