//! Compiles `ebpf/beeline_xdp.c` for the bpf target with clang into `OUT_DIR`, as part of
//! the normal cargo build. A missing tool fails the build with one line naming the Debian
//! package that provides it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fails the build with `message` as its one line: `cargo::error` fails the build by
/// itself, and exiting with success keeps cargo from dumping the script's whole output.
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(0);
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = manifest.join("..").join("ebpf").join("beeline_xdp.c");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("beeline_xdp.o");
    println!("cargo::rerun-if-changed={}", source.display());
    println!("cargo::rerun-if-env-changed=BEELINE_CLANG");

    let clang = env::var("BEELINE_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let mut command = Command::new(&clang);
    command.args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c"]).arg(&source).arg("-o").arg(&out);
    // Debian keeps asm/types.h (pulled in by linux/types.h) under the multiarch directory,
    // which clang does not search when targeting bpf.
    if let Some(multiarch) = multiarch_include() {
        command.arg(format!("-I{}", multiarch.display()));
    }
    let output = match command.output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => fail(&format!(
            "`{clang}` not found: building the XDP classifier needs clang; install Debian's `clang` package \
             (apt-get install clang) or set BEELINE_CLANG to a clang with the bpf target"
        )),
        Err(error) => fail(&format!("cannot run `{clang}` to build the XDP classifier: {error}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("linux/bpf.h") || stderr.contains("asm/types.h") {
            fail(
                "the kernel UAPI headers are missing: building the XDP classifier needs Debian's `linux-libc-dev` \
                 package (apt-get install linux-libc-dev)",
            );
        }
        if stderr.contains("No available targets are compatible") || stderr.contains("unknown target") {
            fail(&format!("`{clang}` cannot target bpf: install Debian's `clang` package (apt-get install clang)"));
        }
        // A real compile error in the C source: show clang's diagnostics as they are.
        eprintln!("{stderr}");
        fail(&format!("clang failed to compile {}; see its diagnostics above", source.display()));
    }
}

/// `/usr/include/<arch>-linux-gnu` for the build host, when it exists.
fn multiarch_include() -> Option<PathBuf> {
    let host = env::var("HOST").ok()?;
    let arch = host.split('-').next()?;
    let dir = Path::new("/usr/include").join(format!("{arch}-linux-gnu"));
    dir.join("asm").is_dir().then_some(dir)
}
