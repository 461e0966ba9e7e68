//! The DisGraFS file-tag graph queries, over any [`Metadata`] (the embedded store of a
//! single node reached through its control messages, or Redis): a file's tags, tag
//! autocomplete, search by expression ([`expr`]) and name, related files ranked by the
//! rarity of the tags they share, and bounded neighbourhoods of the graph as nodes and
//! edges. The CLI (`beeline tags/search/related/graph`) and the web UI call these.
//!
//! Every read is bounded: a tag is read up to [`FILES_PER_TAG_MAX`] files, the whole
//! namespace (needed by `!` and by a name-only search) up to [`NAMESPACE_FILES_MAX`], and
//! a graph up to the nodes asked for (at most [`GRAPH_NODES_MAX`]).

pub mod expr;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

pub use crate::graph::expr::{Expr, ParseError};
use crate::metadata::{FileTag, Metadata, MetadataError, TagCount};

/// Files of one tag a query reads at most.
pub const FILES_PER_TAG_MAX: usize = 100_000;
/// Files a query that needs the whole namespace reads at most.
pub const NAMESPACE_FILES_MAX: usize = 1_000_000;
/// Nodes a graph may have at most.
pub const GRAPH_NODES_MAX: usize = 5_000;
/// Depth a graph neighbourhood may have at most.
pub const GRAPH_DEPTH_MAX: u32 = 8;
/// Results `related` and `complete` return at most.
pub const RESULTS_MAX: usize = 1_000;
/// Names, tags asked of the metadata per request.
const PAGE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("tag {0} has more than {FILES_PER_TAG_MAX} files, more than a query reads: combine it with rarer tags")]
    TagTooCommon(String),
    #[error(
        "the namespace has more than {NAMESPACE_FILES_MAX} files, more than a query reads: start the search with a tag that is not negated"
    )]
    NamespaceTooLarge,
    #[error("no file or tag named {0}: check the name with `beeline ls` or `beeline tags --prefix`")]
    NotFound(String),
    #[error("give a tag expression, a --name substring, or both")]
    NothingToSearch,
}

/// Every tag of the file `name`, in tag order, with its source.
pub fn tags_of<M: Metadata + ?Sized>(meta: &mut M, name: &str) -> Result<Vec<FileTag>, GraphError> {
    let mut tags: Vec<FileTag> = Vec::new();
    // Bounded: every page moves `after` forward, and a file has at most
    // TAGS_PER_FILE_MAX tags (twice that read, in case the cap changed).
    while tags.len() <= 2 * crate::metadata::TAGS_PER_FILE_MAX {
        let page = meta.tags_of(name, tags.last().map(|tag| tag.tag.as_str()), PAGE)?;
        if page.is_empty() {
            break;
        }
        tags.extend(page);
    }
    Ok(tags)
}

/// Every file carrying `tag` (at most [`FILES_PER_TAG_MAX`]).
pub fn files_tagged<M: Metadata + ?Sized>(meta: &mut M, tag: &str) -> Result<BTreeSet<String>, GraphError> {
    read_tagged(meta, tag, FILES_PER_TAG_MAX)?.ok_or_else(|| GraphError::TagTooCommon(tag.to_owned()))
}

/// The files of `tag`, or `None` when it has more than `max`.
fn read_tagged<M: Metadata + ?Sized>(
    meta: &mut M,
    tag: &str,
    max: usize,
) -> Result<Option<BTreeSet<String>>, GraphError> {
    let mut files = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        // Ask for all that may be read: Redis answers it in one read of the set, a node in
        // pages that fit its datagrams.
        let page = meta.files_tagged(tag, after.as_deref(), max.saturating_add(1))?;
        let Some(last) = page.last().cloned() else { return Ok(Some(files)) };
        files.extend(page);
        if files.len() > max {
            return Ok(None);
        }
        after = Some(last);
    }
}

/// Every file name (at most [`NAMESPACE_FILES_MAX`]).
fn all_files<M: Metadata + ?Sized>(meta: &mut M) -> Result<BTreeSet<String>, GraphError> {
    let mut files = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = meta.names(after.as_deref(), PAGE)?;
        let Some(last) = page.last().cloned() else { return Ok(files) };
        files.extend(page);
        if files.len() > NAMESPACE_FILES_MAX {
            return Err(GraphError::NamespaceTooLarge);
        }
        after = Some(last);
    }
}

/// Up to `limit` tags starting with `prefix`, in order, with their file counts: tag
/// autocomplete.
pub fn complete<M: Metadata + ?Sized>(meta: &mut M, prefix: &str, limit: usize) -> Result<Vec<TagCount>, GraphError> {
    let limit = limit.min(RESULTS_MAX);
    let mut out: Vec<TagCount> = Vec::new();
    while out.len() < limit {
        let page = meta.tags_by_prefix(prefix, out.last().map(|tag| tag.tag.as_str()), PAGE.min(limit - out.len()))?;
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    out.truncate(limit);
    Ok(out)
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchResult {
    /// Matching names in order, at most the limit asked for.
    pub files: Vec<String>,
    /// How many matched in all.
    pub total: usize,
}

struct Evaluator<'m, M: Metadata + ?Sized> {
    meta: &'m mut M,
    universe: Option<BTreeSet<String>>,
}

impl<M: Metadata + ?Sized> Evaluator<'_, M> {
    fn universe(&mut self) -> Result<&BTreeSet<String>, GraphError> {
        if self.universe.is_none() {
            self.universe = Some(all_files(self.meta)?);
        }
        Ok(self.universe.as_ref().expect("just set"))
    }

    fn eval(&mut self, expr: &Expr) -> Result<BTreeSet<String>, GraphError> {
        match expr {
            Expr::Tag(tag) => files_tagged(self.meta, tag),
            Expr::Not(inner) => {
                let excluded = self.eval(inner)?;
                Ok(self.universe()?.difference(&excluded).cloned().collect())
            }
            Expr::Or(terms) => {
                let mut union = BTreeSet::new();
                for term in terms {
                    union.extend(self.eval(term)?);
                }
                Ok(union)
            }
            Expr::And(terms) => {
                // Positive terms narrow first; negated ones are subtracted without
                // reading the namespace, unless nothing positive is given.
                let (negated, positive): (Vec<&Expr>, Vec<&Expr>) =
                    terms.iter().partition(|term| matches!(term, Expr::Not(_)));
                let mut result: Option<BTreeSet<String>> = None;
                for term in positive {
                    let files = self.eval(term)?;
                    result = Some(match result {
                        Some(so_far) => so_far.intersection(&files).cloned().collect(),
                        None => files,
                    });
                    if result.as_ref().is_some_and(BTreeSet::is_empty) {
                        return Ok(BTreeSet::new());
                    }
                }
                let mut result = match result {
                    Some(result) => result,
                    None => self.universe()?.clone(),
                };
                for term in negated {
                    let Expr::Not(inner) = term else { unreachable!("partitioned above") };
                    for name in self.eval(inner)? {
                        result.remove(&name);
                    }
                }
                Ok(result)
            }
        }
    }
}

/// Files matching `expr` (all files when `None`) whose name contains `name_contains`
/// (case-insensitively), in name order: the first `limit` of them and the total.
pub fn search<M: Metadata + ?Sized>(
    meta: &mut M,
    expr: Option<&Expr>,
    name_contains: Option<&str>,
    limit: usize,
) -> Result<SearchResult, GraphError> {
    if expr.is_none() && name_contains.is_none() {
        return Err(GraphError::NothingToSearch);
    }
    let mut evaluator = Evaluator { meta, universe: None };
    let matched = match expr {
        Some(expr) => evaluator.eval(expr)?,
        None => evaluator.universe()?.clone(),
    };
    let needle = name_contains.map(str::to_lowercase);
    let matched: Vec<String> = matched
        .into_iter()
        .filter(|name| needle.as_ref().is_none_or(|needle| name.to_lowercase().contains(needle.as_str())))
        .collect();
    let total = matched.len();
    Ok(SearchResult { files: matched.into_iter().take(limit).collect(), total })
}

/// A file related to another, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Related {
    pub name: String,
    /// Sum of the shared tags' weights, `ln(1 + N / df)` each.
    pub score: f64,
    /// The tags both files carry, rarest first.
    pub shared: Vec<String>,
}

/// Files sharing tags with `name`, best first: each shared tag weighs `ln(1 + N / df)`
/// (N files in all, df of them carry the tag: inverse document frequency), so a rare
/// keyword shared counts for more than a common type tag. Ties go by name. A tag with
/// more than [`FILES_PER_TAG_MAX`] files (weighing next to nothing) is skipped.
pub fn related<M: Metadata + ?Sized>(meta: &mut M, name: &str, limit: usize) -> Result<Vec<Related>, GraphError> {
    if meta.get_file(name)?.is_none() {
        return Err(GraphError::NotFound(name.to_owned()));
    }
    let total = meta.file_count()?.max(1) as f64;
    let mut scores: BTreeMap<String, (f64, Vec<(f64, String)>)> = BTreeMap::new();
    for tag in tags_of(meta, name)? {
        let Some(files) = read_tagged(meta, &tag.tag, FILES_PER_TAG_MAX)? else { continue };
        let weight = (1.0 + total / files.len().max(1) as f64).ln();
        for other in files.into_iter().filter(|other| other != name) {
            let entry = scores.entry(other).or_default();
            entry.0 += weight;
            entry.1.push((weight, tag.tag.clone()));
        }
    }
    let mut related: Vec<Related> = scores
        .into_iter()
        .map(|(name, (score, mut shared))| {
            shared.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            Related { name, score, shared: shared.into_iter().map(|(_, tag)| tag).collect() }
        })
        .collect();
    related.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.name.cmp(&b.name)));
    related.truncate(limit.min(RESULTS_MAX));
    Ok(related)
}

/// What a graph node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Tag,
}

/// A node of the file-tag graph. `id` is `file:<name>` or `tag:<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphNode {
    pub id: String,
    pub kind: NodeKind,
    pub label: String,
}

/// An edge: the file `file` (a node id) carries the tag `tag` (a node id), from `source`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GraphEdge {
    pub file: String,
    pub tag: String,
    pub source: String,
}

/// A bounded part of the file-tag graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Some nodes were left out to stay within the limit.
    pub truncated: bool,
}

fn node_id(kind: NodeKind, label: &str) -> String {
    match kind {
        NodeKind::File => format!("file:{label}"),
        NodeKind::Tag => format!("tag:{label}"),
    }
}

struct Builder {
    nodes: BTreeMap<(NodeKind, String), ()>,
    nodes_max: usize,
    truncated: bool,
}

impl Builder {
    /// Adds a node; `false` when it is new but there is no room.
    fn add(&mut self, kind: NodeKind, label: &str) -> bool {
        let key = (kind, label.to_owned());
        if self.nodes.contains_key(&key) {
            return true;
        }
        if self.nodes.len() >= self.nodes_max {
            self.truncated = true;
            return false;
        }
        self.nodes.insert(key, ());
        true
    }
}

/// A part of the file-tag graph of at most `nodes_max` nodes ([`GRAPH_NODES_MAX`] at
/// most). With `around`, the neighbourhood of that file (or, when no file has the name,
/// that tag) up to `depth` edges away (a file's tags are 1 away, the files sharing them
/// 2); without it, files in name order with their tags until the nodes run out. Every
/// edge between two nodes shown is shown.
pub fn graph<M: Metadata + ?Sized>(
    meta: &mut M,
    around: Option<&str>,
    depth: u32,
    nodes_max: usize,
) -> Result<Graph, GraphError> {
    let mut builder =
        Builder { nodes: BTreeMap::new(), nodes_max: nodes_max.clamp(1, GRAPH_NODES_MAX), truncated: false };
    match around {
        None => {
            let mut after: Option<String> = None;
            'files: loop {
                let page = meta.names(after.as_deref(), PAGE)?;
                let Some(last) = page.last().cloned() else { break };
                for name in page {
                    if !builder.add(NodeKind::File, &name) {
                        break 'files;
                    }
                    for tag in tags_of(meta, &name)? {
                        if !builder.add(NodeKind::Tag, &tag.tag) {
                            break 'files;
                        }
                    }
                }
                after = Some(last);
            }
        }
        Some(center) => {
            let start = if meta.get_file(center)?.is_some() {
                NodeKind::File
            } else if !meta.files_tagged(center, None, 1)?.is_empty() {
                NodeKind::Tag
            } else {
                return Err(GraphError::NotFound(center.to_owned()));
            };
            builder.add(start, center);
            let mut queue = VecDeque::from([(start, center.to_owned(), 0u32)]);
            let depth = depth.min(GRAPH_DEPTH_MAX);
            'bfs: while let Some((kind, label, distance)) = queue.pop_front() {
                if distance >= depth {
                    continue;
                }
                let neighbours: Vec<(NodeKind, String)> = match kind {
                    NodeKind::File => tags_of(meta, &label)?.into_iter().map(|tag| (NodeKind::Tag, tag.tag)).collect(),
                    NodeKind::Tag => {
                        let room = builder.nodes_max.saturating_sub(builder.nodes.len()) + 1;
                        let mut files = Vec::new();
                        let mut after: Option<String> = None;
                        while files.len() < room {
                            let page = meta.files_tagged(&label, after.as_deref(), room)?;
                            let Some(last) = page.last().cloned() else { break };
                            files.extend(page.into_iter().map(|name| (NodeKind::File, name)));
                            after = Some(last);
                        }
                        files
                    }
                };
                for (next_kind, next) in neighbours {
                    let known = builder.nodes.contains_key(&(next_kind, next.clone()));
                    if !builder.add(next_kind, &next) {
                        break 'bfs;
                    }
                    if !known {
                        queue.push_back((next_kind, next, distance + 1));
                    }
                }
            }
        }
    }
    // Edges between the nodes shown, read from their files.
    let mut edges = Vec::new();
    let files: Vec<String> =
        builder.nodes.keys().filter(|(kind, _)| *kind == NodeKind::File).map(|(_, label)| label.clone()).collect();
    for file in files {
        for tag in tags_of(meta, &file)? {
            if builder.nodes.contains_key(&(NodeKind::Tag, tag.tag.clone())) {
                edges.push(GraphEdge {
                    file: node_id(NodeKind::File, &file),
                    tag: node_id(NodeKind::Tag, &tag.tag),
                    source: tag.source,
                });
            }
        }
    }
    edges.sort();
    let nodes =
        builder.nodes.into_keys().map(|(kind, label)| GraphNode { id: node_id(kind, &label), kind, label }).collect();
    Ok(Graph { nodes, edges, truncated: builder.truncated })
}

impl Graph {
    /// Graphviz DOT: files as boxes, tags as ellipses, edges labelled by source.
    pub fn to_dot(&self) -> String {
        let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::from("graph disgrafs {\n");
        for node in &self.nodes {
            let shape = match node.kind {
                NodeKind::File => "box",
                NodeKind::Tag => "ellipse",
            };
            out.push_str(&format!("  {} [label={}, shape={shape}];\n", quote(&node.id), quote(&node.label)));
        }
        for edge in &self.edges {
            out.push_str(&format!(
                "  {} -- {} [label={}];\n",
                quote(&edge.file),
                quote(&edge.tag),
                quote(&edge.source)
            ));
        }
        if self.truncated {
            out.push_str("  // truncated: more nodes than asked for\n");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::FileRecord;
    use crate::metadata::EmbeddedMetadata;

    fn store(files: &[(&str, &[&str])]) -> (tempfile::TempDir, EmbeddedMetadata) {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = EmbeddedMetadata::open(&dir.path().join("m.redb")).unwrap();
        for (index, (name, tags)) in files.iter().enumerate() {
            let record = FileRecord {
                name: (*name).into(),
                file_id: index as u64 + 1,
                size_bytes: 1,
                chunk_bytes: 1,
                blake3: [0; 32],
                created_unix_ms: 0,
            };
            meta.put_file(&record).unwrap();
            let tags: Vec<FileTag> = tags.iter().map(|tag| FileTag::new(*tag, "magic")).collect();
            meta.add_tags(name, &tags).unwrap();
        }
        (dir, meta)
    }

    fn corpus() -> (tempfile::TempDir, EmbeddedMetadata) {
        store(&[
            ("report.pdf", &["type:pdf", "keyword:storage", "keyword:disk"]),
            ("draft-report.pdf", &["type:pdf", "keyword:storage", "draft"]),
            ("paper.pdf", &["type:pdf", "keyword:network"]),
            ("notes.md", &["type:markdown", "keyword:disk"]),
            ("photo.jpg", &["type:jpeg"]),
        ])
    }

    fn run(meta: &mut EmbeddedMetadata, text: &str, name: Option<&str>) -> Vec<String> {
        let expr = (!text.is_empty()).then(|| Expr::parse(text).unwrap());
        search(meta, expr.as_ref(), name, 100).unwrap().files
    }

    #[test]
    fn search_combines_and_or_not_and_a_name() {
        let (_dir, mut meta) = corpus();
        let m = &mut meta;
        assert_eq!(run(m, "type:pdf & (keyword:storage | keyword:disk) & !draft", None), ["report.pdf"]);
        assert_eq!(run(m, "keyword:disk", None), ["notes.md", "report.pdf"]);
        assert_eq!(run(m, "!type:pdf", None), ["notes.md", "photo.jpg"]);
        assert_eq!(run(m, "type:pdf | type:jpeg", Some("PHO")), ["photo.jpg"]);
        assert_eq!(run(m, "", Some("report")), ["draft-report.pdf", "report.pdf"]);
        assert_eq!(run(m, "nothing-has-it", None), Vec::<String>::new());
        assert!(matches!(search(m, None, None, 10), Err(GraphError::NothingToSearch)));
    }

    #[test]
    fn related_weighs_rare_tags_over_common_ones() {
        let (_dir, mut meta) = corpus();
        let related = related(&mut meta, "report.pdf", 10).unwrap();
        let names: Vec<&str> = related.iter().map(|r| r.name.as_str()).collect();
        // draft shares type:pdf + keyword:storage; notes shares only keyword:disk (df 2),
        // paper only type:pdf (df 3): the rarer shared tag ranks notes above paper.
        assert_eq!(names, ["draft-report.pdf", "notes.md", "paper.pdf"]);
        assert!(related[1].score > related[2].score);
        assert_eq!(related[0].shared, ["keyword:storage", "type:pdf"]);
        assert!(matches!(super::related(&mut meta, "nope", 10), Err(GraphError::NotFound(_))));
    }

    #[test]
    fn graphs_are_bounded_neighbourhoods_with_every_edge_between_their_nodes() {
        let (_dir, mut meta) = corpus();
        let around = graph(&mut meta, Some("notes.md"), 2, 100).unwrap();
        let ids: Vec<&str> = around.nodes.iter().map(|node| node.id.as_str()).collect();
        assert_eq!(ids, ["file:notes.md", "file:report.pdf", "tag:keyword:disk", "tag:type:markdown"], "{around:?}");
        // report.pdf's other tags are 3 away: not shown, nor their edges.
        assert_eq!(around.edges.len(), 3);
        assert!(!around.truncated);
        let tag = graph(&mut meta, Some("type:pdf"), 1, 100).unwrap();
        assert_eq!(tag.nodes.len(), 4);
        let small = graph(&mut meta, None, 0, 3).unwrap();
        assert!(small.truncated && small.nodes.len() == 3);
        let whole = graph(&mut meta, None, 0, 1000).unwrap();
        assert_eq!(whole.edges.len(), 11);
        assert!(whole.to_dot().contains("\"file:photo.jpg\" -- \"tag:type:jpeg\" [label=\"magic\"];"));
        assert_eq!(complete(&mut meta, "keyword:", 10).unwrap().len(), 3);
        assert_eq!(complete(&mut meta, "keyword:", 2).unwrap()[1].tag, "keyword:network");
    }
}
