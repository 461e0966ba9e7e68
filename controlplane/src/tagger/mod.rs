//! Automatic content tagging (DisGraFS): [`extract`] turns a file's bytes into tags, each
//! naming the extractor that made it; [`runner`] reads a file back and tags it;
//! [`node`] is a single node's own tagger thread, [`stream`] the `beeline tagger run`
//! workers that share a Redis Stream through a consumer group.

pub mod extract;
pub mod node;
pub mod runner;
pub mod stream;
