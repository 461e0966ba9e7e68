//! The file-tag graph from the shell: `beeline tag/untag/tags/search/related/graph`, on a
//! single node (its embedded metadata, through control messages) or on the cluster
//! (`--metadata redis://...`) alike, through [`crate::graph`].

use crate::cli::ClientFlags;
use crate::graph::{self, Expr};
use crate::metadata::{FileTag, Metadata, validate_tag};

/// The metadata the flags point at: Redis with `--metadata`, else the node.
pub fn open(flags: &ClientFlags) -> Result<Box<dyn Metadata>, String> {
    match &flags.metadata {
        Some(url) => Ok(Box::new(
            crate::cluster::RedisMetadata::connect(url, &flags.metadata_prefix).map_err(|e| e.to_string())?,
        )),
        None => Ok(Box::new(crate::cli::connect(flags)?)),
    }
}

fn checked(tags: &[String]) -> Result<(), String> {
    tags.iter().try_for_each(|tag| validate_tag(tag))
}

pub fn tag(flags: &ClientFlags, name: &str, tags: &[String]) -> Result<(), String> {
    checked(tags)?;
    let mut meta = open(flags)?;
    let tags: Vec<FileTag> = tags.iter().map(FileTag::user).collect();
    let added = meta.add_tags(name, &tags).map_err(|e| e.to_string())?;
    let names: Vec<&str> = tags.iter().map(|tag| tag.tag.as_str()).collect();
    println!("tagged {name}: {} ({added} new)", names.join(", "));
    Ok(())
}

pub fn untag(flags: &ClientFlags, name: &str, tags: &[String], automatic: bool) -> Result<(), String> {
    if tags.is_empty() && !automatic {
        return Err("name the tags to remove, or pass --automatic to remove every tag an extractor made".into());
    }
    let mut meta = open(flags)?;
    if meta.get_file(name).map_err(|e| e.to_string())?.is_none() {
        return Err(format!("no file named {name}: check the name with `beeline ls`"));
    }
    let mut remove = tags.to_vec();
    if automatic {
        let all = graph::tags_of(meta.as_mut(), name).map_err(|e| e.to_string())?;
        remove.extend(all.into_iter().filter(|tag| !tag.is_user()).map(|tag| tag.tag));
    }
    let removed = meta.remove_tags(name, &remove).map_err(|e| e.to_string())?;
    for tag in &removed {
        println!("removed {} ({})", tag.tag, tag.source);
    }
    if removed.is_empty() {
        println!("{name} carried none of those tags");
    }
    Ok(())
}

pub fn tags(flags: &ClientFlags, name: Option<&str>, prefix: Option<&str>, limit: usize) -> Result<(), String> {
    let mut meta = open(flags)?;
    match (name, prefix) {
        (Some(name), None) => {
            if meta.get_file(name).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("no file named {name}: check the name with `beeline ls`"));
            }
            for tag in graph::tags_of(meta.as_mut(), name).map_err(|e| e.to_string())? {
                println!("{}\t{}", tag.tag, tag.source);
            }
        }
        (None, prefix) => {
            for tag in graph::complete(meta.as_mut(), prefix.unwrap_or(""), limit).map_err(|e| e.to_string())? {
                println!("{}\t{}", tag.tag, tag.files);
            }
        }
        (Some(_), Some(_)) => return Err("give a file NAME or --prefix, not both".into()),
    }
    Ok(())
}

pub fn search(flags: &ClientFlags, terms: &[String], name: Option<&str>, limit: usize) -> Result<(), String> {
    // Several arguments are ANDed, as two terms side by side are.
    let text = terms.join(" ");
    let expr = if text.trim().is_empty() { None } else { Some(Expr::parse(&text).map_err(|e| e.to_string())?) };
    let mut meta = open(flags)?;
    let result = graph::search(meta.as_mut(), expr.as_ref(), name, limit).map_err(|e| e.to_string())?;
    for file in &result.files {
        println!("{file}");
    }
    if result.total > result.files.len() {
        eprintln!("beeline: {} more matched; raise --limit to see them", result.total - result.files.len());
    }
    Ok(())
}

pub fn related(flags: &ClientFlags, name: &str, limit: usize) -> Result<(), String> {
    let mut meta = open(flags)?;
    for related in graph::related(meta.as_mut(), name, limit).map_err(|e| e.to_string())? {
        println!("{:.3}\t{}\t{}", related.score, related.name, related.shared.join(" "));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    Json,
    Dot,
}

pub fn graph(
    flags: &ClientFlags,
    around: Option<&str>,
    depth: u32,
    nodes_max: usize,
    format: GraphFormat,
) -> Result<(), String> {
    let mut meta = open(flags)?;
    let graph = graph::graph(meta.as_mut(), around, depth, nodes_max).map_err(|e| e.to_string())?;
    match format {
        GraphFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&graph).map_err(|e| format!("cannot write JSON: {e}"))?)
        }
        GraphFormat::Dot => print!("{}", graph.to_dot()),
    }
    if graph.truncated {
        eprintln!("beeline: the graph was cut at {nodes_max} nodes; raise --max-nodes or narrow it with --around");
    }
    Ok(())
}

/// `beeline tagger run`: tags from the stream until SIGINT/SIGTERM.
pub fn tagger_run(
    options: &crate::tagger::stream::StreamOptions,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(crate::tagger::runner::TaggerStats::default());
    {
        let stop = stop.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let signal = runtime.block_on(async { crate::cli::shutdown_signal() });
        let signal = signal.map_err(|e| format!("cannot listen for signals: {e}"))?;
        std::thread::spawn(move || {
            runtime.block_on(signal);
            stop.store(true, Ordering::Release);
        });
    }
    if let Some(address) = metrics_listen {
        let listener = std::net::TcpListener::bind(address)
            .map_err(|e| format!("cannot serve metrics on {address}: {e}; pick another --metrics-listen"))?;
        tracing::info!(%address, "serving Prometheus metrics at /metrics");
        let stats = stats.clone();
        std::thread::spawn(move || serve_metrics(&listener, &stats));
    }
    crate::tagger::stream::run(options, &stop, &stats).map_err(|e| e.to_string())
}

/// A minimal HTTP/1.0 answer with the tagger's metrics to every request, one at a time.
fn serve_metrics(listener: &std::net::TcpListener, stats: &crate::tagger::runner::TaggerStats) {
    use prometheus::Encoder;
    use std::io::{Read, Write};
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let mut body = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder.encode(&stats.families(), &mut body).is_err() {
            continue;
        }
        let head = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            encoder.format_type(),
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
    }
}
