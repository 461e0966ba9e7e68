//! What the web server asks of the storage: one node through [`Client`], or the
//! replicated cluster through [`ClusterClient`]. Every call is blocking (the client
//! library is), so the server runs them on tokio's blocking threads; every answer is
//! bounded by the limits in [`Limits`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use beeline_dataplane::wire::ClusterKey;
use serde::Serialize;

use crate::client::cluster::{ClusterClient, ClusterError};
use crate::client::{Client, ClientError, ClientOptions};
use crate::control::FileRecord;

/// How to open a connection to the storage; the server opens one per concurrent request.
#[derive(Clone)]
pub enum Opener {
    Node(ClientOptions),
    Cluster { url: String, prefix: String, key: ClusterKey, fragment_bytes: Option<u16> },
}

impl Opener {
    pub fn open(&self) -> Result<Backend, WebError> {
        match self {
            Opener::Node(options) => Ok(Backend::Node(Box::new(Client::new(options.clone()).map_err(client_error)?))),
            Opener::Cluster { url, prefix, key, fragment_bytes } => Ok(Backend::Cluster(Box::new(
                ClusterClient::connect(url, prefix, key.clone(), *fragment_bytes).map_err(cluster_error)?,
            ))),
        }
    }
}

/// An error with the HTTP status it maps to; the message is one line naming the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebError {
    pub status: u16,
    pub message: String,
}

impl WebError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        WebError { status, message: message.into() }
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn client_error(error: ClientError) -> WebError {
    let status = match &error {
        ClientError::NotFound { .. } => 404,
        ClientError::BadName(_) => 400,
        _ => 502,
    };
    WebError::new(status, error.to_string())
}

fn cluster_error(error: ClusterError) -> WebError {
    let status = match &error {
        ClusterError::NotFound(_) => 404,
        ClusterError::BadName(_) => 400,
        ClusterError::Client(ClientError::NotFound { .. }) => 404,
        _ => 502,
    };
    WebError::new(status, error.to_string())
}

fn metadata_error(error: crate::metadata::MetadataError) -> WebError {
    WebError::new(502, error.to_string())
}

/// Bounds on what one answer holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Files the graph, search and related-file answers consider at most.
    pub files_max: usize,
    /// Nodes (files and tags) one graph answer holds at most.
    pub graph_nodes_max: usize,
    /// Results of a search at most.
    pub results_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { files_max: 10_000, graph_nodes_max: 300, results_max: 500 }
    }
}

/// A file as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    pub name: String,
    pub size_bytes: u64,
    pub created_unix_ms: u64,
    pub blake3: String,
}

impl From<&FileRecord> for FileView {
    fn from(record: &FileRecord) -> Self {
        FileView {
            name: record.name.clone(),
            size_bytes: record.size_bytes,
            created_unix_ms: record.created_unix_ms,
            blake3: crate::keyfile::to_hex(&record.blake3),
        }
    }
}

/// A tag on a file and where it came from (`user`, or the extractor that made it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TagView {
    pub tag: String,
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Related {
    pub name: String,
    pub score: f64,
    pub shared: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphNode {
    /// `file:NAME` or `tag:TAG`: unique across both kinds.
    pub id: String,
    pub kind: &'static str,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Whether nodes were left out to stay within the limit.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    pub state: String,
    pub health: String,
    pub backend: String,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    pub heartbeat_age_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub mode: &'static str,
    pub nodes: Vec<NodeView>,
    pub files: u64,
    pub used_bytes: u64,
    pub replication: String,
}

/// A connection to the storage.
pub enum Backend {
    Node(Box<Client>),
    Cluster(Box<ClusterClient>),
}

pub fn file_id(name: &str) -> String {
    format!("file:{name}")
}

pub fn tag_id(tag: &str) -> String {
    format!("tag:{tag}")
}

impl Backend {
    pub fn list(&mut self) -> Result<Vec<FileRecord>, WebError> {
        match self {
            Backend::Node(client) => client.list().map_err(client_error),
            Backend::Cluster(cluster) => cluster.list().map_err(cluster_error),
        }
    }

    pub fn stat(&mut self, name: &str) -> Result<FileRecord, WebError> {
        match self {
            Backend::Node(client) => client.lookup(name).map_err(client_error),
            Backend::Cluster(cluster) => cluster.layout(name).map(|layout| layout.record).map_err(cluster_error),
        }
    }

    pub fn put(&mut self, name: &str, reader: &mut dyn Read) -> Result<FileRecord, WebError> {
        let source = "the upload";
        match self {
            Backend::Node(client) => client.put_reader(name, reader, source, &mut |_| {}).map_err(client_error),
            Backend::Cluster(cluster) => {
                cluster.put_reader(name, reader, source, &mut |_| {}).map(|layout| layout.record).map_err(cluster_error)
            }
        }
    }

    pub fn get(&mut self, name: &str, writer: &mut dyn Write) -> Result<FileRecord, WebError> {
        let destination = "the download";
        match self {
            Backend::Node(client) => client.get_writer(name, writer, destination, &mut |_| {}).map_err(client_error),
            Backend::Cluster(cluster) => cluster
                .get_writer(name, writer, destination, &mut |_| {})
                .map(|layout| layout.record)
                .map_err(cluster_error),
        }
    }

    pub fn remove(&mut self, name: &str) -> Result<FileRecord, WebError> {
        match self {
            Backend::Node(client) => client.remove(name).map_err(client_error),
            Backend::Cluster(cluster) => cluster.remove(name).map(|layout| layout.record).map_err(cluster_error),
        }
    }

    pub fn tags_of(&mut self, name: &str) -> Result<Vec<TagView>, WebError> {
        match self {
            Backend::Node(_) => Ok(Vec::new()),
            Backend::Cluster(cluster) => {
                let tags = cluster.metadata().tags_of(name).map_err(metadata_error)?;
                Ok(tags.into_iter().map(|tag| TagView { tag, source: "user".into() }).collect())
            }
        }
    }

    pub fn add_tags(&mut self, name: &str, tags: &[String]) -> Result<(), WebError> {
        self.stat(name)?;
        match self {
            Backend::Node(_) => Err(single_node_tags()),
            Backend::Cluster(cluster) => cluster.metadata().tag(name, tags).map_err(metadata_error),
        }
    }

    pub fn remove_tags(&mut self, name: &str, tags: &[String]) -> Result<(), WebError> {
        let _ = (name, tags);
        Err(WebError::new(501, "removing tags needs the graph library (`beeline untag`), not in this build yet"))
    }

    /// Every file with its tags, up to `files_max` files.
    fn catalog(&mut self, limits: &Limits) -> Result<Vec<(FileRecord, Vec<String>)>, WebError> {
        let mut files = self.list()?;
        files.truncate(limits.files_max);
        let mut out = Vec::with_capacity(files.len());
        for record in files {
            let tags = self.tags_of(&record.name)?.into_iter().map(|tag| tag.tag).collect();
            out.push((record, tags));
        }
        Ok(out)
    }

    /// Files matching `query`: words are tags that must all be present, `-TAG` a tag
    /// that must be absent, `A|B` either tag, `name:TEXT` a substring of the name. An
    /// empty query matches every file.
    pub fn search(&mut self, query: &str, limits: &Limits) -> Result<Vec<FileView>, WebError> {
        let query = Query::parse(query);
        let mut results = Vec::new();
        for (record, tags) in self.catalog(limits)? {
            if query.matches(&record.name, &tags) {
                results.push(FileView::from(&record));
                if results.len() >= limits.results_max {
                    break;
                }
            }
        }
        Ok(results)
    }

    /// Tag names starting with `prefix`, most used first, at most `limit`.
    pub fn complete(&mut self, prefix: &str, limit: usize, limits: &Limits) -> Result<Vec<String>, WebError> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, tags) in self.catalog(limits)? {
            for tag in tags {
                if tag.starts_with(prefix) {
                    *counts.entry(tag).or_default() += 1;
                }
            }
        }
        let mut tags: Vec<(String, usize)> = counts.into_iter().collect();
        tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(tags.into_iter().take(limit).map(|(tag, _)| tag).collect())
    }

    /// Files sharing tags with `name`, ranked by the shared tags each weighted by its
    /// rarity (ln(files / files with the tag)), at most `limit`.
    pub fn related(&mut self, name: &str, limit: usize, limits: &Limits) -> Result<Vec<Related>, WebError> {
        let catalog = self.catalog(limits)?;
        let total = catalog.len().max(1) as f64;
        let mut frequency: HashMap<&str, usize> = HashMap::new();
        for (_, tags) in &catalog {
            for tag in tags {
                *frequency.entry(tag).or_default() += 1;
            }
        }
        let Some((_, own)) = catalog.iter().find(|(record, _)| record.name == name) else {
            return Err(WebError::new(
                404,
                format!("no file named {name:?}: reload the page to see the current files"),
            ));
        };
        let own: BTreeSet<&String> = own.iter().collect();
        let mut related = Vec::new();
        for (record, tags) in &catalog {
            if record.name == name {
                continue;
            }
            let shared: Vec<String> = tags.iter().filter(|tag| own.contains(tag)).cloned().collect();
            if shared.is_empty() {
                continue;
            }
            let score = shared
                .iter()
                .map(|tag| 1.0 + (total / frequency.get(tag.as_str()).copied().unwrap_or(1) as f64).ln())
                .sum();
            related.push(Related { name: record.name.clone(), score, shared });
        }
        related.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.name.cmp(&b.name)));
        related.truncate(limit);
        Ok(related)
    }

    /// The file-tag graph of the files matching `query` (see [`Backend::search`]) and
    /// their tags, up to the limit; with `around`, only the neighbourhood of that file or
    /// tag id within `depth` hops.
    pub fn graph(
        &mut self,
        query: &str,
        around: Option<&str>,
        depth: usize,
        limits: &Limits,
    ) -> Result<Graph, WebError> {
        let query = Query::parse(query);
        let catalog = self.catalog(limits)?;
        let mut adjacency: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (record, tags) in catalog.iter().filter(|(record, tags)| query.matches(&record.name, tags)) {
            let file = file_id(&record.name);
            adjacency.entry(file.clone()).or_default();
            for tag in tags {
                let tag = tag_id(tag);
                adjacency.entry(file.clone()).or_default().insert(tag.clone());
                adjacency.entry(tag).or_default().insert(file.clone());
            }
        }
        let mut chosen: Vec<String> = Vec::new();
        let mut truncated = false;
        match around {
            None => {
                // Files first, each followed by its tags, so that a cut graph still shows
                // whole files with their tags.
                let mut seen = BTreeSet::new();
                'files: for (id, tags) in adjacency.iter().filter(|(id, _)| id.starts_with("file:")) {
                    for id in std::iter::once(id).chain(tags) {
                        if seen.contains(id) {
                            continue;
                        }
                        if chosen.len() >= limits.graph_nodes_max {
                            truncated = true;
                            break 'files;
                        }
                        seen.insert(id.clone());
                        chosen.push(id.clone());
                    }
                }
            }
            Some(start) => {
                if !adjacency.contains_key(start) {
                    return Err(WebError::new(404, format!("{start:?} is not in the graph: reload the page")));
                }
                let mut seen = BTreeSet::from([start.to_owned()]);
                let mut frontier = vec![start.to_owned()];
                chosen.push(start.to_owned());
                'levels: for _ in 0..depth {
                    let mut next = Vec::new();
                    for id in &frontier {
                        for neighbour in &adjacency[id] {
                            if seen.insert(neighbour.clone()) {
                                if chosen.len() >= limits.graph_nodes_max {
                                    truncated = true;
                                    break 'levels;
                                }
                                chosen.push(neighbour.clone());
                                next.push(neighbour.clone());
                            }
                        }
                    }
                    frontier = next;
                }
            }
        }
        let included: BTreeSet<&String> = chosen.iter().collect();
        let mut graph = Graph { truncated, ..Graph::default() };
        for id in &chosen {
            let (kind, label) = match id.split_once(':') {
                Some(("file", label)) => ("file", label),
                Some((_, label)) => ("tag", label),
                None => ("tag", id.as_str()),
            };
            graph.nodes.push(GraphNode { id: id.clone(), kind, label: label.to_owned() });
            if kind == "file" {
                for tag in &adjacency[id] {
                    if included.contains(tag) {
                        graph.edges.push(GraphEdge { source: id.clone(), target: tag.clone() });
                    }
                }
            }
        }
        Ok(graph)
    }

    /// The nodes, their health and used space.
    pub fn cluster(&mut self) -> Result<ClusterView, WebError> {
        match self {
            Backend::Node(client) => {
                let status = client.node_status().map_err(client_error)?;
                let healthy = !status.metadata.contains("LOST");
                Ok(ClusterView {
                    mode: "single node",
                    nodes: vec![NodeView {
                        id: "-".into(),
                        address: status.listen.clone(),
                        state: "live".into(),
                        health: if healthy { "ok".into() } else { status.metadata.clone() },
                        backend: status.backend.clone(),
                        used_bytes: status.used_bytes,
                        capacity_bytes: 0,
                        heartbeat_age_ms: 0,
                    }],
                    files: status.files,
                    used_bytes: status.used_bytes,
                    replication: "single node (no replicas)".into(),
                })
            }
            Backend::Cluster(cluster) => {
                let members = cluster.members().map_err(cluster_error)?;
                let health = cluster.health().map_err(cluster_error)?;
                let now = crate::cluster::now_unix_ms();
                let nodes: Vec<NodeView> = members
                    .iter()
                    .map(|member| NodeView {
                        id: format!("{:016x}", member.record.id),
                        address: member.record.address.clone(),
                        state: member.state.name().to_owned(),
                        health: member.record.health.clone(),
                        backend: member.record.backend.clone(),
                        used_bytes: member.record.used_bytes,
                        capacity_bytes: member.record.capacity_bytes,
                        heartbeat_age_ms: now.saturating_sub(member.record.heartbeat_unix_ms),
                    })
                    .collect();
                let replication = if !health.unavailable.is_empty() {
                    "DEGRADED: some chunks have no good live replica".to_owned()
                } else if health.under_replicated > 0 || health.bad_replicas > 0 {
                    "under-replicated: run `beeline cluster repair`".to_owned()
                } else {
                    "healthy".to_owned()
                };
                Ok(ClusterView {
                    mode: "cluster",
                    used_bytes: nodes.iter().map(|node| node.used_bytes).sum(),
                    nodes,
                    files: health.files,
                    replication,
                })
            }
        }
    }
}

fn single_node_tags() -> WebError {
    WebError::new(
        501,
        "tags on a single node need the graph library, not in this build yet: run `beeline web --metadata redis://HOST:PORT`",
    )
}

/// A search: every `all` tag, none of the `none` tags, one of each `any` group, and the
/// name containing every `names` text.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    all: Vec<String>,
    none: Vec<String>,
    any: Vec<Vec<String>>,
    names: Vec<String>,
}

impl Query {
    pub fn parse(text: &str) -> Query {
        let mut query = Query::default();
        for word in text.split_whitespace() {
            if let Some(name) = word.strip_prefix("name:") {
                query.names.push(name.to_owned());
            } else if let Some(tag) = word.strip_prefix('-').filter(|tag| !tag.is_empty()) {
                query.none.push(tag.to_owned());
            } else if word.contains('|') {
                query.any.push(word.split('|').filter(|tag| !tag.is_empty()).map(str::to_owned).collect());
            } else {
                query.all.push(word.to_owned());
            }
        }
        query
    }

    pub fn matches(&self, name: &str, tags: &[String]) -> bool {
        let has = |tag: &String| tags.contains(tag);
        self.all.iter().all(has)
            && !self.none.iter().any(has)
            && self.any.iter().all(|group| group.iter().any(has))
            && self.names.iter().all(|part| name.contains(part.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|tag| tag.to_string()).collect()
    }

    #[test]
    fn queries_combine_and_or_not_and_name() {
        let query = Query::parse("rust -draft pdf|md name:notes");
        assert!(query.matches("my-notes.md", &tags(&["rust", "md"])));
        assert!(!query.matches("my-notes.md", &tags(&["rust", "md", "draft"])));
        assert!(!query.matches("my-notes.md", &tags(&["rust"])));
        assert!(!query.matches("other.md", &tags(&["rust", "md"])));
        assert!(Query::parse("  ").matches("anything", &[]));
    }
}
