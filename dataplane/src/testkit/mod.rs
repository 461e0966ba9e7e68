//! What tests, benchmarks and fuzz targets drive the data plane with: the fuzzing entry
//! points over untrusted bytes (shared by `fuzz/` and the corpus replay) and a
//! node plus clients on the seeded `sim` network under virtual time, and [`skip`], how a
//! test that cannot run here says so.

pub mod fuzzing;
#[cfg(feature = "std")]
pub mod harness;
#[cfg(feature = "std")]
mod skip;

#[cfg(feature = "std")]
pub use skip::{SKIP_LOG_ENV, skip};
