//! Automatic content tagging (DisGraFS): [`extract`] turns a file's bytes into tags, each
//! naming the extractor that made it.

pub mod extract;
