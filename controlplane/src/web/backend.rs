//! What the web server asks of the storage: one node through [`Client`], or the
//! replicated cluster through [`ClusterClient`]. Every call is blocking (the client
//! library is), so the server runs them on tokio's blocking threads; every answer is
//! bounded by the limits in [`Limits`].

use std::collections::BTreeSet;
use std::io::{Read, Write};

use beeline_dataplane::wire::ClusterKey;
use serde::Serialize;

use crate::client::cluster::{ClusterClient, ClusterError};
use crate::client::{Client, ClientError, ClientOptions};
use crate::control::FileRecord;
use crate::graph::{self, Expr, Graph, GraphEdge, GraphError, GraphNode, NodeKind};
use crate::metadata::{FileTag, Metadata, TagCount};

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
    /// Nodes (files and tags) one graph answer holds at most.
    pub graph_nodes_max: usize,
    /// Results of a search at most.
    pub results_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { graph_nodes_max: 300, results_max: 500 }
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

    /// The metadata the graph queries read: the node's (through its control messages)
    /// or Redis.
    fn meta(&mut self) -> &mut dyn Metadata {
        match self {
            Backend::Node(client) => client.as_mut(),
            Backend::Cluster(cluster) => cluster.metadata(),
        }
    }

    pub fn tags_of(&mut self, name: &str) -> Result<Vec<TagView>, WebError> {
        let tags = graph::tags_of(self.meta(), name).map_err(graph_error)?;
        Ok(tags.into_iter().map(|tag| TagView { tag: tag.tag, source: tag.source }).collect())
    }

    /// Adds user tags to an existing file.
    pub fn add_tags(&mut self, name: &str, tags: &[String]) -> Result<(), WebError> {
        self.stat(name)?;
        let tags: Vec<FileTag> = tags.iter().map(FileTag::user).collect();
        self.meta().add_tags(name, &tags).map_err(metadata_error)?;
        Ok(())
    }

    /// Removes tags (user or automatic) from an existing file.
    pub fn remove_tags(&mut self, name: &str, tags: &[String]) -> Result<(), WebError> {
        self.stat(name)?;
        self.meta().remove_tags(name, tags).map_err(metadata_error)?;
        Ok(())
    }

    /// Files matching the tag expression `expr` ([`crate::graph::expr`]; empty: every
    /// file) whose name contains `name_contains`, at most `results_max`.
    pub fn search(&mut self, expr: &str, name_contains: &str, limits: &Limits) -> Result<Vec<FileView>, WebError> {
        let names = self.search_names(expr, name_contains, limits)?;
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            // A file removed between the search and this read is left out.
            if let Some(record) = self.meta().get_file(&name).map_err(metadata_error)? {
                files.push(FileView::from(&record));
            }
        }
        Ok(files)
    }

    fn search_names(&mut self, expr: &str, name_contains: &str, limits: &Limits) -> Result<Vec<String>, WebError> {
        let expr = expr.trim();
        let name_contains = Some(name_contains).filter(|text| !text.is_empty());
        if expr.is_empty() && name_contains.is_none() {
            let files = self.meta().list(None, limits.results_max).map_err(metadata_error)?;
            return Ok(files.into_iter().map(|record| record.name).collect());
        }
        let expr = if expr.is_empty() {
            None
        } else {
            Some(Expr::parse(expr).map_err(|error| WebError::new(400, error.to_string()))?)
        };
        let result =
            graph::search(self.meta(), expr.as_ref(), name_contains, limits.results_max).map_err(graph_error)?;
        Ok(result.files)
    }

    /// Tag names starting with `prefix`, at most `limit`.
    pub fn complete(&mut self, prefix: &str, limit: usize) -> Result<Vec<TagCount>, WebError> {
        graph::complete(self.meta(), prefix, limit).map_err(graph_error)
    }

    /// Files sharing tags with `name`, the rarer tags weighing more, at most `limit`.
    pub fn related(&mut self, name: &str, limit: usize) -> Result<Vec<graph::Related>, WebError> {
        graph::related(self.meta(), name, limit).map_err(graph_error)
    }

    /// The file-tag graph: of the files a search finds and their tags, or (with
    /// `around`, a file or tag name) that neighbourhood up to `depth` edges away; at most
    /// `graph_nodes_max` nodes either way.
    pub fn graph(
        &mut self,
        expr: &str,
        name_contains: &str,
        around: Option<&str>,
        depth: u32,
        limits: &Limits,
    ) -> Result<Graph, WebError> {
        if let Some(around) = around {
            return graph::graph(self.meta(), Some(around), depth, limits.graph_nodes_max).map_err(graph_error);
        }
        let names = self.search_names(expr, name_contains, limits)?;
        let mut out = Graph::default();
        let mut shown: BTreeSet<String> = BTreeSet::new();
        let mut room = limits.graph_nodes_max;
        'files: for name in names {
            let tags = graph::tags_of(self.meta(), &name).map_err(graph_error)?;
            let new_tags: Vec<&FileTag> = tags.iter().filter(|tag| !shown.contains(&tag_id(&tag.tag))).collect();
            // A file comes with all of its tags, or not at all.
            if 1 + new_tags.len() > room {
                out.truncated = true;
                break 'files;
            }
            room -= 1 + new_tags.len();
            out.nodes.push(GraphNode { id: file_id(&name), kind: NodeKind::File, label: name.clone() });
            for tag in new_tags {
                shown.insert(tag_id(&tag.tag));
                out.nodes.push(GraphNode { id: tag_id(&tag.tag), kind: NodeKind::Tag, label: tag.tag.clone() });
            }
            for tag in tags {
                out.edges.push(GraphEdge { file: file_id(&name), tag: tag_id(&tag.tag), source: tag.source });
            }
        }
        Ok(out)
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

fn graph_error(error: GraphError) -> WebError {
    let status = match &error {
        GraphError::NotFound(_) => 404,
        GraphError::Parse(_) | GraphError::NothingToSearch => 400,
        GraphError::TagTooCommon(_) | GraphError::NamespaceTooLarge => 422,
        GraphError::Metadata(_) => 502,
    };
    WebError::new(status, error.to_string())
}
