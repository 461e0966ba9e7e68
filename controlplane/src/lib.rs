//! Beeline's control plane, folder by role: [`config`] (TOML + flags, validated into
//! settings), [`backend`] (the packet I/O a node runs on and what surrounds it: the XDP
//! classifier, the DPDK EAL), [`node`] (`beeline node run`: the data-plane thread, the
//! snapshot it publishes, metrics and cluster membership), [`client`] (the client library:
//! one node, and the replicated cluster client), [`cluster`] (the Redis metadata and
//! placement), [`metadata`] (the namespace trait and the embedded store), [`control`]
//! (control messages), [`keyfile`], [`hw`] and [`output`] (where downloaded files are
//! written, safely); [`cli`] is the `beeline` command line, a
//! thin layer over the rest. Dependencies run one way: cli -> node -> backend -> config,
//! and client -> cluster -> metadata -> control.

pub mod backend;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
pub mod hw;
pub mod keyfile;
pub mod metadata;
pub mod node;
pub mod output;
pub mod tagger;
pub mod web;
