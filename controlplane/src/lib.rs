//! Beeline's control plane: the node daemon ([`daemon`]), its configuration, the
//! namespace ([`metadata`]), control messages and the client library ([`client`]) that
//! the `beeline` CLI is a thin layer over.

pub mod afxdp_backend;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod cluster_cli;
pub mod cluster_client;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(feature = "dpdk")]
pub mod dpdk_backend;
pub mod dpdk_settings;
pub mod hw;
pub mod keyfile;
pub mod membership;
pub mod metadata;
pub mod metrics;
pub mod placement;
