//! A node's life in the metadata cluster: it registers with a lease and renews it by
//! heartbeat (re-registering by itself after Redis restarts or the network returns),
//! publishes its address, capacity, usage and health, leaves cleanly on shutdown, and,
//! when it is the cluster's repair leader (the live node with the lowest id), restores
//! the replication factor in the background (from verified copies, replacing copies
//! marked bad, never dropping a node that may hold the only good copy: see
//! [`ClusterClient::repair`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use beeline_dataplane::wire::ClusterKey;
use tracing::{info, warn};

use crate::client::cluster::ClusterClient;
use crate::cluster::placement::NodeId;
use crate::cluster::{NodeRecord, RedisMetadata, now_unix_ms};
use crate::config::ClusterSettings;
use crate::node::snapshot::SharedSnapshot;

/// A stop signal that wakes sleepers at once.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    pub fn stop(&self) {
        if let Ok(mut stopped) = self.stopped.lock() {
            *stopped = true;
        }
        self.wake.notify_all();
    }

    /// Waits up to `timeout`; returns true when stopped.
    pub fn wait(&self, timeout: Duration) -> bool {
        let Ok(stopped) = self.stopped.lock() else { return true };
        match self.wake.wait_timeout_while(stopped, timeout, |stopped| !*stopped) {
            Ok((stopped, _)) => *stopped,
            Err(_) => true,
        }
    }
}

/// The node's id, kept in its data directory so it survives restarts.
pub fn node_id(data_dir: &Path) -> std::io::Result<NodeId> {
    let path = data_dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(id) = u64::from_str_radix(text.trim(), 16) {
            return Ok(id);
        }
    }
    let id = rand::random::<u64>() | 1;
    std::fs::write(&path, format!("{id:016x}\n"))?;
    Ok(id)
}

/// Total bytes of the file system holding `path`.
pub fn filesystem_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stats`
    // points to writable memory of the right type, initialised by statvfs on success.
    let result = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    // The field types differ between libc targets; widen explicitly.
    #[allow(clippy::unnecessary_cast)]
    Some(stats.f_blocks as u64 * stats.f_frsize as u64)
}

pub struct Membership {
    pub lease_up: Arc<AtomicBool>,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl Membership {
    /// Deregisters and stops the heartbeat and repair threads.
    pub fn stop(mut self) {
        self.stop.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

pub struct Identity {
    pub id: NodeId,
    pub backend: String,
    pub capacity_bytes: u64,
    pub metrics_address: Option<String>,
}

pub fn start(
    settings: ClusterSettings,
    identity: Identity,
    key: ClusterKey,
    snapshot: SharedSnapshot,
) -> std::io::Result<Membership> {
    let stop = Arc::new(Stop::default());
    let lease_up = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (settings, stop, lease_up, snapshot) = (settings.clone(), stop.clone(), lease_up.clone(), snapshot.clone());
        std::thread::Builder::new()
            .name("beeline-heartbeat".into())
            .spawn(move || heartbeat_loop(&settings, &identity, &snapshot, &lease_up, &stop))?
    };
    let mut threads = vec![heartbeat];
    if settings.repair_interval_ms > 0 {
        let stop = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("beeline-repair".into())
                .spawn(move || repair_loop(&settings, key, &stop))?,
        );
    }
    Ok(Membership { lease_up, stop, threads })
}

fn record(identity: &Identity, settings: &ClusterSettings, snapshot: &SharedSnapshot, serving: bool) -> NodeRecord {
    let used_bytes = snapshot.lock().map(|snapshot| snapshot.used_bytes).unwrap_or(0);
    NodeRecord {
        id: identity.id,
        address: settings.advertise.clone(),
        backend: identity.backend.clone(),
        capacity_bytes: identity.capacity_bytes,
        used_bytes,
        health: "ok".into(),
        heartbeat_unix_ms: now_unix_ms(),
        serving,
        metrics_address: identity.metrics_address.clone(),
    }
}

fn heartbeat_loop(
    settings: &ClusterSettings,
    identity: &Identity,
    snapshot: &SharedSnapshot,
    lease_up: &AtomicBool,
    stop: &Stop,
) {
    let interval = Duration::from_millis((settings.lease_ttl_ms / 3).max(100));
    let mut metadata: Option<RedisMetadata> = None;
    loop {
        if metadata.is_none() {
            metadata = RedisMetadata::connect(&settings.metadata_url, &settings.prefix).ok();
        }
        let outcome = match metadata.as_mut() {
            Some(metadata) => metadata.heartbeat(&record(identity, settings, snapshot, true), settings.lease_ttl_ms),
            None => Err(crate::metadata::MetadataError::Storage(format!(
                "cannot reach {}",
                crate::cluster::redact(&settings.metadata_url)
            ))),
        };
        let was_up = lease_up.swap(outcome.is_ok(), Ordering::AcqRel);
        match (&outcome, was_up) {
            (Ok(()), false) => {
                info!(node = format!("{:016x}", identity.id), address = %settings.advertise, "registered with the metadata cluster")
            }
            (Err(error), true) | (Err(error), false) if was_up || metadata.is_some() => {
                warn!(%error, "heartbeat failed; retrying every {} ms", interval.as_millis());
            }
            _ => {}
        }
        if outcome.is_err() {
            metadata = None;
        }
        if stop.wait(interval) {
            break;
        }
    }
    if let Some(mut metadata) =
        metadata.or_else(|| RedisMetadata::connect(&settings.metadata_url, &settings.prefix).ok())
    {
        match metadata.leave(&record(identity, settings, snapshot, false)) {
            Ok(()) => info!("left the metadata cluster"),
            Err(error) => warn!(%error, "could not deregister; the lease will expire by itself"),
        }
    }
    lease_up.store(false, Ordering::Release);
}

fn repair_loop(settings: &ClusterSettings, key: ClusterKey, stop: &Stop) {
    let interval = Duration::from_millis(settings.repair_interval_ms);
    let mut me: Option<NodeId> = None;
    while !stop.wait(interval) {
        let Ok(mut cluster) = ClusterClient::connect(&settings.metadata_url, &settings.prefix, key.clone(), None)
        else {
            continue;
        };
        let Ok(members) = cluster.members() else { continue };
        let live: Vec<&crate::cluster::Member> =
            members.iter().filter(|member| crate::client::cluster::is_live(member)).collect();
        if me.is_none() {
            me = live.iter().find(|member| member.record.address == settings.advertise).map(|member| member.record.id);
        }
        // One repairer at a time: the live node with the lowest id.
        let leader = live.iter().map(|member| member.record.id).min();
        if me.is_none() || leader != me {
            continue;
        }
        match cluster.repair() {
            Ok(report)
                if report.replicas_added > 0
                    || !report.found_bad.is_empty()
                    || !report.lost.is_empty()
                    || !report.failed.is_empty() =>
            {
                info!(added = report.replicas_added, replaced_bad = report.bad_replaced, found_bad = report.found_bad.len(), files = report.files_updated, lost = ?report.lost, failed = ?report.failed, "background repair pass");
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "background repair failed; retrying next interval"),
        }
    }
}
