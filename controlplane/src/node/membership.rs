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
use crate::node::gc::GcState;
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
    gc: Arc<GcState>,
    data_dir: &Path,
) -> std::io::Result<Membership> {
    let stop = Arc::new(Stop::default());
    let lease_up = Arc::new(AtomicBool::new(false));
    let epoch_path = data_dir.join("cluster-epoch");
    gc.set_note(format!("redis {} (not reached yet)", crate::cluster::redact(&settings.metadata_url)));
    // Until the epoch is checked, collect nothing.
    gc.metadata_lost.store(true, Ordering::Release);
    let node_id = identity.id;
    let heartbeat = {
        let (settings, stop, lease_up, snapshot, gc) =
            (settings.clone(), stop.clone(), lease_up.clone(), snapshot.clone(), gc.clone());
        std::thread::Builder::new().name("beeline-heartbeat".into()).spawn(move || {
            heartbeat_loop(&settings, &identity, &snapshot, &lease_up, &stop, &Epoch { path: epoch_path, gc })
        })?
    };
    let mut threads = vec![heartbeat];
    if settings.gc_grace_ms > 0 {
        let (settings, stop, key, gc) = (settings.clone(), stop.clone(), key.clone(), gc.clone());
        threads.push(
            std::thread::Builder::new()
                .name("beeline-gc".into())
                .spawn(move || gc_loop(&settings, key, node_id, &gc, &stop))?,
        );
    }
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

/// The node's side of metadata-loss detection: the cluster epoch its chunks belong to,
/// kept in its data directory, against the one Redis holds.
struct Epoch {
    path: std::path::PathBuf,
    gc: Arc<GcState>,
}

/// The `health` a node that lost its metadata publishes: `metadata-lost:EPOCH`, its old
/// epoch, which `beeline cluster forget-lost` hands back.
pub const METADATA_LOST: &str = "metadata-lost";

impl Epoch {
    fn local(&self) -> Option<u64> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        u64::from_str_radix(text.trim(), 16).ok()
    }

    fn adopt(&self, epoch: u64) -> std::io::Result<()> {
        let temporary = self.path.with_extension("new");
        std::fs::write(&temporary, format!("{epoch:016x}\n"))?;
        std::fs::File::open(&temporary)?.sync_all()?;
        std::fs::rename(&temporary, &self.path)
    }

    /// Compares the epochs once the node is registered; returns the health to publish.
    fn check(&self, metadata: &mut RedisMetadata, node: NodeId, url: &str) -> String {
        let remote = match metadata.cluster_epoch() {
            Ok(remote) => remote,
            Err(error) => {
                warn!(%error, "cannot read the cluster epoch; garbage collection waits");
                return if self.gc.metadata_lost.load(Ordering::Acquire) { self.lost_health() } else { "ok".into() };
            }
        };
        let was_lost = self.gc.metadata_lost.load(Ordering::Acquire);
        let local = self.local();
        let agreed = match local {
            Some(local) if local == remote => true,
            Some(local) => match metadata.take_forget(node, local) {
                Ok(true) => {
                    warn!(
                        old = format!("{local:016x}"),
                        new = format!("{remote:016x}"),
                        "an operator ran `beeline cluster forget-lost`: chunks from before the metadata was lost are now ordinary garbage"
                    );
                    self.adopt(remote).is_ok()
                }
                _ => false,
            },
            // A node new to the cluster, or one from before epochs existed: it joins.
            None => self.adopt(remote).is_ok(),
        };
        if agreed {
            self.gc.set_note(format!("redis {} (cluster epoch {remote:016x})", crate::cluster::redact(url)));
            self.gc.metadata_lost.store(false, Ordering::Release);
            if was_lost && local.is_some() {
                info!("metadata and node agree on the cluster again; garbage collection resumes");
            }
            return "ok".into();
        }
        let local = local.unwrap_or(0);
        let note = format!(
            "METADATA LOST: redis {} holds cluster epoch {remote:016x}, but this node's chunks belong to epoch {local:016x} (Redis restarted empty, or lost its data?); puts go on, no old chunk is garbage-collected until an operator runs `beeline cluster forget-lost` (see docs/operations.md)",
            crate::cluster::redact(url)
        );
        if !was_lost || self.gc.note() != note {
            tracing::error!("{note}");
        }
        self.gc.set_note(note);
        self.gc.metadata_lost.store(true, Ordering::Release);
        self.lost_health()
    }

    fn lost_health(&self) -> String {
        format!("{METADATA_LOST}:{:016x}", self.local().unwrap_or(0))
    }
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
    epoch: &Epoch,
) {
    let interval = Duration::from_millis((settings.lease_ttl_ms / 3).max(100));
    let mut metadata: Option<RedisMetadata> = None;
    let mut health = "ok".to_owned();
    loop {
        let mut unreachable = None;
        if metadata.is_none() {
            match RedisMetadata::connect(&settings.metadata_url, &settings.prefix) {
                Ok(connected) => metadata = Some(connected),
                Err(error) => unreachable = Some(error),
            }
        }
        let outcome = match metadata.as_mut() {
            Some(metadata) => {
                let record = NodeRecord { health: health.clone(), ..record(identity, settings, snapshot, true) };
                let outcome = metadata.heartbeat(&record, settings.lease_ttl_ms);
                if outcome.is_ok() {
                    let checked = epoch.check(metadata, identity.id, &settings.metadata_url);
                    if checked != health {
                        // Published at once, so `cluster status` shows it.
                        health = checked;
                        let record = NodeRecord { health: health.clone(), ..record };
                        let _ = metadata.heartbeat(&record, settings.lease_ttl_ms);
                    }
                }
                outcome
            }
            None => Err(unreachable.unwrap_or_else(|| {
                crate::metadata::MetadataError::Remote(format!(
                    "cannot reach {}",
                    crate::cluster::redact(&settings.metadata_url)
                ))
            })),
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

/// This node's background garbage collection in a cluster: the same pass as `beeline
/// cluster gc`, for this node only, every quarter of the grace period (250 ms to a minute).
fn gc_loop(settings: &ClusterSettings, key: ClusterKey, me: NodeId, gc: &GcState, stop: &Stop) {
    let interval = Duration::from_millis((settings.gc_grace_ms / 4).clamp(250, 60_000));
    while !stop.wait(interval) {
        if gc.metadata_lost.load(Ordering::Acquire) {
            continue;
        }
        let Ok(mut cluster) = ClusterClient::connect(&settings.metadata_url, &settings.prefix, key.clone(), None)
        else {
            continue;
        };
        let options = crate::client::cluster::GcOptions {
            dry_run: false,
            grace_ms: settings.gc_grace_ms,
            only: Some(me),
            everything: false,
        };
        if let Err(error) = cluster.gc(&options) {
            warn!(%error, "background garbage collection failed; retrying next interval");
        }
    }
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
