//! Pieces of the data plane that need an operating system.

#[cfg(target_os = "linux")]
pub mod afxdp;
pub mod arena_memory;
pub mod disk_store;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod mem_store;
pub mod peers;
pub mod sim_harness;
pub mod udp;
