//! The cluster-mode commands: `beeline --metadata redis://... put/get/ls/stat/rm`,
//! `beeline cluster status/repair/scrub/configure`, `beeline tag`, `beeline search`.

use std::path::Path;

use beeline_dataplane::wire::ClusterKey;

use crate::client::cluster::{ClusterClient, RepairReport, describe};
use crate::keyfile;
use crate::output::Output;

pub struct Flags {
    pub url: String,
    pub prefix: String,
    pub key: ClusterKey,
    pub fragment_bytes: Option<u16>,
}

pub enum Action {
    Status(Flags),
    Repair(Flags),
    Scrub(Flags),
    Gc(Flags, bool, u64),
    ForgetLost(Flags),
    Configure(Flags, usize),
}

fn connect(flags: &Flags) -> Result<ClusterClient, String> {
    ClusterClient::connect(&flags.url, &flags.prefix, flags.key.clone(), flags.fragment_bytes)
        .map_err(|e| e.to_string())
}

pub fn run(action: Action) -> Result<(), String> {
    match action {
        Action::Status(flags) => {
            let mut cluster = connect(&flags)?;
            let members = cluster.members().map_err(|e| e.to_string())?;
            let health = cluster.health().map_err(|e| e.to_string())?;
            let live = members.iter().filter(|member| crate::client::cluster::is_live(member)).count();
            println!("metadata:           {}", crate::cluster::redact(&flags.url));
            println!("replication factor: {}", cluster.replication_factor());
            println!("nodes:              {} ({} live)", members.len(), live);
            for member in &members {
                println!("  {}", describe(member));
            }
            let lost: Vec<&crate::cluster::Member> = members
                .iter()
                .filter(|member| member.record.health.starts_with(crate::node::membership::METADATA_LOST))
                .collect();
            if !lost.is_empty() {
                println!(
                    "METADATA LOST:      {} node(s) hold chunks of a cluster this metadata does not know (Redis restarted empty?); they keep them: re-import what you can, then `beeline cluster forget-lost`",
                    lost.len()
                );
            }
            println!("files:              {}", health.files);
            println!("chunks:             {}", health.chunks);
            println!("under-replicated:   {}", health.under_replicated);
            println!("corrupt replicas:   {}", health.bad_replicas);
            println!("unavailable:        {}", health.unavailable.len());
            for chunk in &health.unavailable {
                println!("  {chunk}");
            }
            let state = if !lost.is_empty() {
                "METADATA LOST: see above"
            } else if !health.unavailable.is_empty() {
                "DEGRADED: some chunks have no good live replica"
            } else if health.under_replicated > 0 || health.bad_replicas > 0 {
                "under-replicated: run `beeline cluster repair`"
            } else {
                "healthy"
            };
            println!("replication:        {state}");
            Ok(())
        }
        Action::Repair(flags) => {
            let mut cluster = connect(&flags)?;
            let report = cluster.repair().map_err(|e| e.to_string())?;
            print_repair(&report)
        }
        Action::Scrub(flags) => {
            let mut cluster = connect(&flags)?;
            let scrub = cluster.scrub().map_err(|e| e.to_string())?;
            println!(
                "scrubbed {} files, {} chunks: {} copies ({} bytes) read back, {} bad, {} unreadable",
                scrub.files,
                scrub.chunks,
                scrub.copies_checked,
                scrub.bytes_checked,
                scrub.bad.len(),
                scrub.unreadable
            );
            for bad in &scrub.bad {
                println!("bad copy: {bad}");
            }
            if scrub.files_without_chunk_hashes > 0 {
                println!(
                    "{} file(s) stored before chunk hashes were recorded could not be checked copy by copy (`beeline get` still checks them whole)",
                    scrub.files_without_chunk_hashes
                );
            }
            // Then repair replaces what the scrub found.
            let report = cluster.repair().map_err(|e| e.to_string())?;
            print_repair(&report)
        }
        Action::Gc(flags, dry_run, grace_ms) => {
            let mut cluster = connect(&flags)?;
            let options = crate::client::cluster::GcOptions { dry_run, grace_ms, only: None, everything: true };
            let report = cluster.gc(&options).map_err(|e| e.to_string())?;
            for (node, collected) in &report.nodes {
                print_gc(&format!("{node:016x}"), collected, dry_run);
            }
            if report.puts_in_progress > 0 || report.puts_claimed > 0 {
                println!(
                    "puts in progress left alone: {}; stalled puts claimed: {}",
                    report.puts_in_progress, report.puts_claimed
                );
            }
            for (node, reason) in &report.skipped {
                println!("node {node:016x} skipped: {reason}");
            }
            if report.skipped.is_empty() {
                Ok(())
            } else {
                Err(format!("{} node(s) were not collected: see above", report.skipped.len()))
            }
        }
        Action::ForgetLost(flags) => {
            let mut cluster = connect(&flags)?;
            let members = cluster.members().map_err(|e| e.to_string())?;
            let mut forgotten = 0;
            for member in &members {
                let Some(old) = member.record.health.strip_prefix(crate::node::membership::METADATA_LOST) else {
                    continue;
                };
                let old = u64::from_str_radix(old.trim_start_matches(':'), 16).unwrap_or(0);
                cluster.metadata().allow_forget(member.record.id, old).map_err(|e| e.to_string())?;
                println!(
                    "node {:016x}: its chunks from cluster epoch {old:016x} become garbage at its next heartbeat",
                    member.record.id
                );
                forgotten += 1;
            }
            if forgotten == 0 {
                println!("no node reports lost metadata");
            }
            Ok(())
        }
        Action::Configure(flags, factor) => {
            if factor == 0 {
                return Err("--replication-factor must be at least 1".into());
            }
            let mut cluster = connect(&flags)?;
            cluster.metadata().set_replication_factor(factor).map_err(|e| e.to_string())?;
            println!("replication factor set to {factor}; run `beeline cluster repair` to apply it to stored chunks");
            Ok(())
        }
    }
}

pub fn print_gc(node: &str, report: &crate::control::GcReport, dry_run: bool) {
    let verb = if dry_run { "would collect" } else { "collected" };
    println!(
        "{node}: {verb} {} chunks ({} bytes) of {} unrecorded files; {} bytes of disk given back; kept {} chunks ({} bytes) younger than the grace period",
        report.chunks_collected,
        report.bytes_collected,
        report.files_collected,
        report.disk_bytes_freed,
        report.chunks_kept_young,
        report.bytes_kept_young
    );
}

fn print_repair(report: &RepairReport) -> Result<(), String> {
    println!(
        "checked {} chunks, added {} replicas (replaced {} corrupt or missing copies), found {} bad copies, updated {} files",
        report.chunks_checked,
        report.replicas_added,
        report.bad_replaced,
        report.found_bad.len(),
        report.files_updated
    );
    for failed in &report.failed {
        println!("not repaired yet: {failed}");
    }
    for lost in &report.lost {
        println!("LOST: {lost}");
    }
    if report.lost.is_empty() && report.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} chunk(s) lost and {} not repaired: see above", report.lost.len(), report.failed.len()))
    }
}

pub fn put(flags: &Flags, file: &Path, name: &str, chunk_bytes: u32) -> Result<(), String> {
    let mut cluster = connect(flags)?;
    cluster.chunk_bytes = chunk_bytes;
    let source = file.display().to_string();
    let mut reader: Box<dyn std::io::Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(file).map_err(|e| format!("cannot read {source}: {e}"))?,
        ))
    };
    let layout = cluster.put_reader(name, &mut reader, &source, &mut |_| {}).map_err(|e| e.to_string())?;
    println!(
        "stored {} ({} bytes, {} chunks x {} replicas, blake3 {})",
        layout.record.name,
        layout.record.size_bytes,
        layout.record.chunk_count(),
        cluster.replication_factor(),
        &keyfile::to_hex(&layout.record.blake3)[..16]
    );
    Ok(())
}

pub fn get(flags: &Flags, name: &str, mut output: Output) -> Result<(), String> {
    let mut cluster = connect(flags)?;
    let destination = output.shown().to_owned();
    // On an error `output` is dropped, which leaves the destination as it was.
    // On an error, its one line names the bad copies of the chunk that failed.
    let layout = cluster.get_writer(name, output.writer(), &destination, &mut |_| {}).map_err(|e| e.to_string())?;
    for warning in cluster.take_warnings() {
        eprintln!("beeline: warning: {warning}");
    }
    crate::cli::finish_output(output, layout.record.size_bytes)
}

pub fn ls(flags: &Flags) -> Result<(), String> {
    let mut cluster = connect(flags)?;
    for file in cluster.list().map_err(|e| e.to_string())? {
        println!("{:>14}  {}", file.size_bytes, file.name);
    }
    Ok(())
}

pub fn stat(flags: &Flags, name: &str) -> Result<(), String> {
    let mut cluster = connect(flags)?;
    let layout = cluster.layout(name).map_err(|e| e.to_string())?;
    let tags = crate::graph::tags_of(cluster.metadata(), name).map_err(|e| e.to_string())?;
    let tags: Vec<String> = tags.into_iter().map(|tag| format!("{} ({})", tag.tag, tag.source)).collect();
    println!("name:        {}", layout.record.name);
    println!("size_bytes:  {}", layout.record.size_bytes);
    println!("chunks:      {} x {} bytes", layout.record.chunk_count(), layout.record.chunk_bytes);
    println!("blake3:      {}", keyfile::to_hex(&layout.record.blake3));
    println!("tags:        {}", tags.join(", "));
    for (index, nodes) in layout.replicas.iter().enumerate() {
        println!("  chunk {index}: {}", nodes.iter().map(|n| format!("{n:016x}")).collect::<Vec<_>>().join(" "));
    }
    Ok(())
}

pub fn rm(flags: &Flags, name: &str) -> Result<(), String> {
    let mut cluster = connect(flags)?;
    let layout = cluster.remove(name).map_err(|e| e.to_string())?;
    println!("removed {} ({} bytes)", layout.record.name, layout.record.size_bytes);
    Ok(())
}
