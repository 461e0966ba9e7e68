//! A single node's own tagger: a background thread of `beeline node run` that takes the
//! files its embedded metadata lists as untagged (each recorded file is listed in the
//! same transaction that records it), reads each back through the client library from
//! the node itself, and records the extractors' tags only if the file is still the one
//! it read. The put path never waits for it: a commit only nudges it (`try_send`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use beeline_dataplane::wire::ClusterKey;
use tracing::{debug, warn};

use crate::client::{Client, ClientOptions};
use crate::metadata::EmbeddedMetadata;
use crate::tagger::extract::Limits;
use crate::tagger::runner::{PrefixWriter, TaggerStats, tags_for};

/// Files taken from the untagged list at a time.
const BATCH: usize = 16;
/// How long the thread waits for a nudge before looking again (a missed nudge, or a
/// metadata error, costs at most this).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// The nudge a commit sends (never blocks: a full channel already has one waiting).
pub fn nudge_channel() -> (SyncSender<()>, Receiver<()>) {
    std::sync::mpsc::sync_channel(1)
}

pub struct NodeTagger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NodeTagger {
    /// Starts the thread against the node serving at `address`.
    pub fn start(
        metadata: EmbeddedMetadata,
        address: SocketAddr,
        key: ClusterKey,
        limits: Limits,
        stats: Arc<TaggerStats>,
        nudges: Receiver<()>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("beeline-tagger".into())
                .spawn(move || run(metadata, address, key, limits, &stats, &nudges, &stop))?
        };
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops after the file in hand.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NodeTagger {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(
    metadata: EmbeddedMetadata,
    address: SocketAddr,
    key: ClusterKey,
    limits: Limits,
    stats: &TaggerStats,
    nudges: &Receiver<()>,
    stop: &AtomicBool,
) {
    // A node listening on every address is reached on loopback.
    let address = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, address.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()))
        }
        _ => address,
    };
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::Acquire) {
        if let Ok(waiting) = metadata.untagged_count() {
            stats.lag.store(waiting, Ordering::Relaxed);
        }
        let batch = match metadata.untagged(BATCH) {
            Ok(batch) => batch,
            Err(error) => {
                warn!(%error, "the tagger cannot read the untagged list; it will retry");
                Vec::new()
            }
        };
        if batch.is_empty() {
            match nudges.recv_timeout(IDLE_WAIT) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let mut stalled = false;
        for (name, file_id) in batch {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let reader = match &mut client {
                Some(client) => client,
                // UDP: the tagger keeps its client for the node's whole life, and over shared
                // memory it would hold a region and one of the node's shm_clients_max slots.
                None => match Client::new(ClientOptions {
                    transport: crate::client::Transport::Udp,
                    ..ClientOptions::new(address, key.clone())
                }) {
                    Ok(new) => client.insert(new),
                    Err(error) => {
                        warn!(%error, "the tagger cannot open a client to its node; it will retry");
                        stalled = true;
                        break;
                    }
                },
            };
            let mut prefix = PrefixWriter::new(&name, limits.bytes_max);
            let read = match reader.get_writer(&name, &mut prefix, "the tagger", &mut |_| {}) {
                Ok(_) => Ok(prefix.bytes),
                Err(error) if PrefixWriter::had_enough(&error) => Ok(prefix.bytes),
                Err(error) => Err((prefix.bytes, error.to_string())),
            };
            let tags = tags_for(&name, read, &limits, stats);
            match metadata.finish_tagging(&name, file_id, &tags) {
                Ok(true) => {
                    debug!(file = name, tags = tags.len(), "tagged");
                    stats.tagged(&tags);
                }
                Ok(false) => {
                    stats.files_gone.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    warn!(file = name, %error, "the tagger could not record tags; it will retry");
                    stalled = true;
                    break;
                }
            }
        }
        if stalled && matches!(nudges.recv_timeout(IDLE_WAIT), Err(RecvTimeoutError::Disconnected)) {
            return;
        }
    }
}
