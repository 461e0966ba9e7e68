//! `beeline bench`: placeholder being written.

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> Result<(), String> {
    Err("not yet".into())
}
