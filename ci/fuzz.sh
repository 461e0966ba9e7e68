#!/usr/bin/env bash
# Bounded fuzz run for CI: each cargo-fuzz target for FUZZ_SECONDS seconds (default 60),
# starting from the committed corpus in fuzz/corpus/. Exits non-zero on a crash, leak or
# timeout. When cargo-fuzz cannot be installed, or the toolchain refuses its sanitizer
# flags, it says why in one line and exits 0: the corpus replay test
# (dataplane/tests/fuzz_corpus.rs) still runs with the normal test suite.
#
# Stable Rust only: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags cargo-fuzz
# passes (sanitizer, coverage instrumentation).
#
#   FUZZ_SECONDS=300 ci/fuzz.sh             # longer run
#   FUZZ_TARGETS="packet" ci/fuzz.sh        # one target
#   FUZZ_TARGET_DIR=/tmp/fuzz ci/fuzz.sh    # build elsewhere (default fuzz/target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
read -r -a targets <<<"${FUZZ_TARGETS:-packet client_reply frame handshake}"
target_dir="${FUZZ_TARGET_DIR:-fuzz/target}"
cargo_fuzz_version="${CARGO_FUZZ_VERSION:-0.13.2}"
export RUSTC_BOOTSTRAP=1

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

skip() {
    echo "ci/fuzz.sh: SKIPPED, no fuzz run: $*"
    exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "ci/fuzz.sh: installing cargo-fuzz $cargo_fuzz_version (once per machine)"
    if ! cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked >"$work/install.log" 2>&1; then
        tail -n 20 "$work/install.log" >&2
        skip "cargo install cargo-fuzz $cargo_fuzz_version failed ($(grep -m1 -E '^error' "$work/install.log" || echo 'see above'))"
    fi
fi
echo "ci/fuzz.sh: $(cargo fuzz --version), targets: ${targets[*]}, ${seconds}s each"

if ! cargo fuzz build --fuzz-dir fuzz --target-dir "$target_dir" >"$work/build.log" 2>&1; then
    # A build failure is a real failure when the targets do not even compile plainly;
    # otherwise it is the toolchain refusing the sanitizer build.
    if ! cargo check --manifest-path fuzz/Cargo.toml --bins >"$work/check.log" 2>&1; then
        cat "$work/check.log" >&2
        echo "ci/fuzz.sh: the fuzz targets do not compile" >&2
        exit 1
    fi
    tail -n 20 "$work/build.log" >&2
    skip "this toolchain cannot build the instrumented targets ($(grep -m1 -E '^error' "$work/build.log" || echo 'see above'))"
fi

failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    if [[ ! -d "$corpus" ]]; then
        echo "ci/fuzz.sh: no corpus directory $corpus" >&2
        exit 1
    fi
    # New inputs go to a scratch directory so the committed corpus stays as it is; the
    # committed one is only read.
    mkdir -p "$work/$target"
    log="$work/$target.log"
    echo "ci/fuzz.sh: fuzzing $target for ${seconds}s"
    if cargo fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$target" "$work/$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs)' "$log" || tail -n 3 "$log"
        echo "ci/fuzz.sh: $target: no crash; $(find "$work/$target" -type f | wc -l) new corpus inputs (not kept)"
    else
        tail -n 80 "$log" >&2
        echo "ci/fuzz.sh: $target FAILED: the crashing input is in fuzz/artifacts/$target/;" \
            "reproduce with 'RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $target <file>'," \
            "then, once fixed, add it to $corpus/ so the replay test keeps it fixed" >&2
        failed+=("$target")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "ci/fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "ci/fuzz.sh: all targets ran ${seconds}s without a crash"
