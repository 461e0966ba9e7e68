//! Helpers shared by the integration tests.

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
#[allow(dead_code)] // each test binary uses its own subset of these helpers
pub fn run(command: &mut std::process::Command) -> std::process::Output {
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
#[allow(dead_code)]
pub fn sh(args: &[&str]) -> std::process::Output {
    run(std::process::Command::new(args[0]).args(&args[1..]))
}

/// Sends SIGTERM to `child` (our own child: `ip netns exec` execs in place) and waits,
/// bounded, for it to exit.
#[allow(dead_code)]
pub fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "did not stop within 20 s of SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
