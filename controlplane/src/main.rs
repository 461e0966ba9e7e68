//! The `beeline` binary: a thin layer over the library.

fn main() -> std::process::ExitCode {
    beeline::cli::main()
}
