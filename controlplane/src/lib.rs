//! Beeline's control plane, folder by role: [`config`] (TOML + flags, validated into
//! settings), [`backend`] (the packet I/O a node runs on and what surrounds it: the XDP
//! classifier, the DPDK EAL), [`node`] (`beeline node run`: the data-plane thread, the
//! snapshot it publishes, metrics and cluster membership), [`client`] (the client library:
//! one node, and the replicated cluster client), [`cluster`] (the Redis metadata and
//! placement), [`metadata`] (the namespace trait, tags, and the embedded store), [`graph`]
//! (file-tag graph queries: search expressions, related files, neighbourhoods),
//! [`tagger`] (automatic tagging: extractors and the runners), [`web`] (`beeline web`:
//! the HTTP server and its page, the file-tag graph in a browser), [`shm`] (the
//! shared-memory transport between a node and the clients on its host), [`control`]
//! (control messages), [`exposition`] (Prometheus metric families, shared by every exporter), [`keyfile`], [`hw`] and [`output`] (where downloaded files are
//! written, safely); [`cli`] is the `beeline` command line, a
//! thin layer over the rest. Dependencies run one way: cli -> node -> backend -> config,
//! client -> cluster -> metadata -> control, cli -> graph -> metadata,
//! node -> tagger -> client, and cli -> web -> {graph, client}.

pub mod backend;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
pub mod exposition;
pub mod graph;
pub mod hw;
pub mod keyfile;
pub mod metadata;
pub mod mount;
pub mod node;
pub mod output;
pub mod shm;
pub mod tagger;
pub mod web;
