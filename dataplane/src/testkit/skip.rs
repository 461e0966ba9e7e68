//! Tests that cannot run on this host say so where CI shows it, instead of passing in
//! silence: `cargo test` hides a passing test's output, so every skip is also appended to
//! the file `$BEELINE_SKIP_LOG` names, and `ci/test.sh` prints the count and the reasons.

use std::io::Write;

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG_ENV: &str = "BEELINE_SKIP_LOG";

/// Records that `test` (or the part of it `test` names) did not run, and why.
pub fn skip(test: &str, reason: &str) {
    let line = format!("{test}: {reason}");
    std::eprintln!("SKIPPED {line}");
    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else { return };
    // One short write with O_APPEND: lines from parallel tests and processes never interleave.
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
    if let Err(error) = appended {
        std::eprintln!("cannot record the skip in {}: {error}", std::path::Path::new(&path).display());
    }
}
