//! `/metrics` for Prometheus: the data path's counters and histograms, store and arena
//! occupancy, lease state and the store's group-commit latency, in the text exposition
//! format (encoded by the `prometheus` crate) over a small HTTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use beeline_dataplane::counters::{LATENCY_BOUNDS_US, LatencyHistogram};
use beeline_dataplane::store::disk::SyncLatency;
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::exposition::{counter, family, gauge};
use crate::node::snapshot::SharedSnapshot;

/// Everything the exporter reads.
#[derive(Clone)]
pub struct Sources {
    pub snapshot: SharedSnapshot,
    pub lease_up: Option<Arc<AtomicBool>>,
    pub sync_latency: SyncLatency,
    pub backend: String,
    /// Capacity the node advertises (its `capacity_bytes`, or its file system's size).
    pub capacity_bytes: u64,
    /// Garbage collection's totals and the metadata-loss flag.
    pub gc: Arc<crate::node::gc::GcState>,
    /// The node's own tagger (a single node's): `beeline_tagger_*`.
    pub tagger: Option<Arc<crate::tagger::runner::TaggerStats>>,
}

fn histogram(source: &LatencyHistogram) -> Metric {
    let mut histogram = Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(LATENCY_BOUNDS_US.len());
    for (bound, count) in LATENCY_BOUNDS_US.iter().zip(source.buckets) {
        cumulative += count;
        let mut bucket = Bucket::default();
        bucket.set_upper_bound(*bound as f64 / 1e6);
        bucket.set_cumulative_count(cumulative);
        buckets.push(bucket);
    }
    histogram.set_bucket(buckets);
    histogram.set_sample_count(source.count);
    histogram.set_sample_sum(source.sum_us as f64 / 1e6);
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    metric
}

/// Builds every metric family from the current snapshot.
// Long on purpose: one table with an entry per metric family, read top to bottom like the /metrics page it builds.
pub fn gather(sources: &Sources) -> Vec<MetricFamily> {
    let snapshot = sources.snapshot.lock().map(|snapshot| snapshot.clone()).unwrap_or_default();
    let c = &snapshot.counters;
    let i = &snapshot.integrity;
    let sync = sources.sync_latency.lock().map(|histogram| *histogram).unwrap_or_default();
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut families = vec![
        family(
            "beeline_up",
            "1 while the node's data plane runs.",
            GAUGE,
            vec![gauge(1.0, &[("backend", &sources.backend)])],
        ),
        family(
            "beeline_rx_packets_total",
            "Datagrams received by the data plane.",
            COUNTER,
            vec![counter(c.rx_packets, &[])],
        ),
        family(
            "beeline_tx_packets_total",
            "Datagrams sent by the data plane.",
            COUNTER,
            vec![counter(c.tx_packets, &[])],
        ),
        family(
            "beeline_dropped_packets_total",
            "Received datagrams dropped without effect, by reason.",
            COUNTER,
            beeline_dataplane::counters::DropReason::ALL
                .iter()
                .map(|reason| counter(c.dropped(*reason), &[("reason", reason.name())]))
                .collect(),
        ),
        family(
            "beeline_rejected_requests_total",
            "Requests answered with an error, by status.",
            COUNTER,
            [
                ("busy", c.rejected_busy),
                ("bad_request", c.rejected_bad_request),
                ("not_found", c.rejected_not_found),
                ("disk_full", c.rejected_disk_full),
                ("internal", c.rejected_internal),
                ("corrupt", c.rejected_corrupt),
            ]
            .iter()
            .map(|(status, value)| counter(*value, &[("status", status)]))
            .collect(),
        ),
        family("beeline_puts_total", "Chunks stored durably.", COUNTER, vec![counter(c.chunks_stored, &[])]),
        family("beeline_put_bytes_total", "Chunk bytes stored durably.", COUNTER, vec![counter(c.bytes_stored, &[])]),
        family(
            "beeline_put_fragments_total",
            "Put fragments written to the store.",
            COUNTER,
            vec![counter(c.fragments_stored, &[])],
        ),
        family(
            "beeline_put_fragments_duplicate_total",
            "Put fragments received again (retransmissions).",
            COUNTER,
            vec![counter(c.fragments_duplicate, &[])],
        ),
        family(
            "beeline_puts_abandoned_total",
            "Puts abandoned after their idle timeout.",
            COUNTER,
            vec![counter(c.puts_abandoned, &[])],
        ),
        family("beeline_gets_total", "Get requests served.", COUNTER, vec![counter(c.gets, &[])]),
        family(
            "beeline_get_bytes_total",
            "Chunk bytes sent in get responses.",
            COUNTER,
            vec![counter(c.bytes_served, &[])],
        ),
        family("beeline_deletes_total", "Chunk deletions made durable.", COUNTER, vec![counter(c.chunks_deleted, &[])]),
        family(
            "beeline_data_copied_bytes_total",
            "Chunk payload bytes copied by Beeline's own code on the node.",
            COUNTER,
            vec![counter(c.data_bytes_copied, &[])],
        ),
        family(
            "beeline_stored_bytes",
            "Bytes of live chunk data held.",
            GAUGE,
            vec![gauge(snapshot.used_bytes as f64, &[])],
        ),
        family(
            "beeline_capacity_bytes",
            "Bytes the node may store (capacity_bytes, or the data file system's size).",
            GAUGE,
            vec![gauge(sources.capacity_bytes as f64, &[])],
        ),
        family("beeline_stored_chunks", "Live chunks held.", GAUGE, vec![gauge(snapshot.chunks as f64, &[])]),
        family(
            "beeline_get_corrupt_total",
            "Get requests answered corrupt: the stored copy failed its checksum and none of its bytes were sent.",
            COUNTER,
            vec![counter(c.rejected_corrupt, &[])],
        ),
        family(
            "beeline_corrupt_chunks",
            "Chunks marked corrupt now (by a read or the scrub); deleting or replacing one clears it.",
            GAUGE,
            vec![gauge(i.chunks_corrupt as f64, &[])],
        ),
        family(
            "beeline_corrupt_chunks_found_total",
            "Chunks found corrupt since the node started, by reads and by the scrub.",
            COUNTER,
            vec![counter(i.chunks_found_corrupt, &[])],
        ),
        family(
            "beeline_store_written_bytes_total",
            "Chunk bytes the store wrote, by path: direct (O_DIRECT from a local client's shared memory) or page_cache.",
            COUNTER,
            vec![
                counter(snapshot.writes.direct_bytes, &[("path", "direct")]),
                counter(snapshot.writes.page_cache_bytes, &[("path", "page_cache")]),
            ],
        ),
        family(
            "beeline_scrub_bytes_total",
            "Bytes the background scrub re-read and verified.",
            COUNTER,
            vec![counter(i.scrub_bytes, &[])],
        ),
        family(
            "beeline_scrub_chunks_total",
            "Chunks the background scrub verified.",
            COUNTER,
            vec![counter(i.scrub_chunks, &[])],
        ),
        family(
            "beeline_scrub_corrupt_chunks_total",
            "Corrupt chunks the background scrub found.",
            COUNTER,
            vec![counter(i.scrub_corrupt_found, &[])],
        ),
        family(
            "beeline_scrub_passes_total",
            "Background scrub passes completed.",
            COUNTER,
            vec![counter(i.scrub_passes, &[])],
        ),
        family(
            "beeline_scrub_pass_progress_ratio",
            "Share of the current scrub pass done, 0 to 1.",
            GAUGE,
            vec![gauge(
                if i.scrub_pass_total_bytes == 0 {
                    0.0
                } else {
                    (i.scrub_pass_done_bytes as f64 / i.scrub_pass_total_bytes as f64).min(1.0)
                },
                &[],
            )],
        ),
        family(
            "beeline_scrub_last_pass_timestamp_seconds",
            "When the last scrub pass completed (Unix time); 0 before the first one.",
            GAUGE,
            vec![gauge(i.scrub_last_pass_unix_ms as f64 / 1000.0, &[])],
        ),
        family(
            "beeline_arena_frames",
            "Frames in the buffer arena.",
            GAUGE,
            vec![gauge(f64::from(snapshot.arena_frames), &[])],
        ),
        family(
            "beeline_arena_frames_in_use",
            "Arena frames currently owned by rings, requests or replies.",
            GAUGE,
            vec![gauge(f64::from(snapshot.arena_frames.saturating_sub(snapshot.arena_frames_free)), &[])],
        ),
        family(
            "beeline_puts_in_flight",
            "Puts receiving fragments or awaiting durability.",
            GAUGE,
            vec![gauge(f64::from(snapshot.puts_in_flight), &[])],
        ),
        family(
            "beeline_sessions_active",
            "Client sessions in the node's table (protocol v2).",
            GAUGE,
            vec![gauge(f64::from(snapshot.sessions_active), &[])],
        ),
        family(
            "beeline_handshake_challenges_total",
            "Stateless Challenges sent in answer to a handshake Initiate.",
            COUNTER,
            vec![counter(c.handshake_challenges, &[])],
        ),
        family(
            "beeline_sessions_established_total",
            "Sessions made by a Confirm that proved the cluster key at its address.",
            COUNTER,
            vec![counter(c.sessions_established, &[])],
        ),
        family(
            "beeline_upgrade_replies_total",
            "Protocol version 1 requests answered with an upgrade error.",
            COUNTER,
            vec![counter(c.upgrade_replies, &[])],
        ),
        family(
            "beeline_put_latency_seconds",
            "From a put's first fragment to its durable acknowledgement.",
            HISTOGRAM,
            vec![histogram(&c.put_latency)],
        ),
        family(
            "beeline_store_fsync_seconds",
            "Duration of one group commit (fdatasync of a batch).",
            HISTOGRAM,
            vec![histogram(&sync)],
        ),
    ];
    families.extend(backend_families(&snapshot.backend_counters));
    let gc = &sources.gc;
    let total = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
    families.extend([
        family(
            "beeline_gc_chunks_collected_total",
            "Chunks no file referenced, deleted by garbage collection.",
            COUNTER,
            vec![counter(total(&gc.chunks_collected), &[])],
        ),
        family(
            "beeline_gc_bytes_collected_total",
            "Chunk bytes deleted by garbage collection.",
            COUNTER,
            vec![counter(total(&gc.bytes_collected), &[])],
        ),
        family(
            "beeline_gc_disk_bytes_freed_total",
            "Segment bytes given back to the file system by garbage collection's compactions.",
            COUNTER,
            vec![counter(total(&gc.disk_bytes_freed), &[])],
        ),
        family("beeline_gc_passes_total", "Garbage collection passes run.", COUNTER, vec![counter(total(&gc.passes), &[])]),
        family(
            "beeline_metadata_lost",
            "1 while the metadata store does not know this node's cluster (Redis restarted empty?): garbage collection keeps every old chunk until `beeline cluster forget-lost`.",
            GAUGE,
            vec![gauge(f64::from(u8::from(gc.metadata_lost.load(Ordering::Acquire))), &[])],
        ),
    ]);
    if let Some(lease_up) = &sources.lease_up {
        families.push(family(
            "beeline_lease_up",
            "1 while the node holds a current membership lease.",
            GAUGE,
            vec![gauge(f64::from(u8::from(lease_up.load(Ordering::Acquire))), &[])],
        ));
    }
    if let Some(tagger) = &sources.tagger {
        families.extend(tagger.families());
    }
    families
}

/// Backend values that are levels, not counts.
const BACKEND_GAUGES: [&str; 2] = ["dpdk_frames_owned", "dpdk_frames_pooled"];
/// The shared-memory transport's levels (`shm::server`).
const SHM_GAUGES: [&str; 3] = ["shm_clients_connected", "shm_frames_held", "shm_region_bytes_mapped"];

/// The packet-I/O backend's counters (`Snapshot::backend_counters`): the XDP classifier's
/// verdicts as `beeline_xdp_{packets,bytes}_total{verdict}`, the AF_XDP bind mode as the
/// gauge `beeline_afxdp_zero_copy` (1 zero-copy, 0 copy mode), DPDK's per-queue receive
/// counts as `beeline_dpdk_rx_queue_packets_total{queue}`, its frame levels as gauges
/// `beeline_dpdk_frames_{owned,pooled}`, every other one as `beeline_<name>_total`.
fn backend_families(counters: &[(String, u64)]) -> Vec<MetricFamily> {
    let mut xdp_packets = Vec::new();
    let mut xdp_bytes = Vec::new();
    let mut queue_packets = Vec::new();
    let mut families = Vec::new();
    for (name, value) in counters {
        if let Some(queue) = name.strip_prefix("dpdk_rxq").and_then(|rest| rest.strip_suffix("_packets")) {
            queue_packets.push(counter(*value, &[("queue", queue)]));
        } else if BACKEND_GAUGES.contains(&name.as_str()) {
            let help = "Arena frames DPDK holds (pool, RX and TX rings), and mbufs waiting in the pool.";
            families.push(family(&format!("beeline_{name}"), help, MetricType::GAUGE, vec![gauge(*value as f64, &[])]));
        } else if SHM_GAUGES.contains(&name.as_str()) {
            let help =
                "Shared-memory clients connected now, arena frames held for them, and bytes of their regions mapped.";
            families.push(family(&format!("beeline_{name}"), help, MetricType::GAUGE, vec![gauge(*value as f64, &[])]));
        } else if let Some(verdict) = name.strip_prefix("xdp_").and_then(|rest| rest.strip_suffix("_packets")) {
            xdp_packets.push(counter(*value, &[("verdict", verdict)]));
        } else if let Some(verdict) = name.strip_prefix("xdp_").and_then(|rest| rest.strip_suffix("_bytes")) {
            xdp_bytes.push(counter(*value, &[("verdict", verdict)]));
        } else if name == "afxdp_zero_copy" {
            let help = "1 when the AF_XDP socket runs zero-copy, 0 when it runs in copy mode.";
            families.push(family("beeline_afxdp_zero_copy", help, MetricType::GAUGE, vec![gauge(*value as f64, &[])]));
        } else {
            let help = "Counted by the node's packet-I/O backend (see `beeline node status`).";
            families.push(family(
                &format!("beeline_{name}_total"),
                help,
                MetricType::COUNTER,
                vec![counter(*value, &[])],
            ));
        }
    }
    if !queue_packets.is_empty() {
        let help = "Packets the DPDK port received, by RX queue (RSS spreads flows over them).";
        families.push(family("beeline_dpdk_rx_queue_packets_total", help, MetricType::COUNTER, queue_packets));
    }
    // An empty family fails the whole text encoding, so each is added only with samples.
    if !xdp_packets.is_empty() {
        let help = "Packets the XDP classifier handled, by verdict (pass, redirect, drop_*).";
        families.push(family("beeline_xdp_packets_total", help, MetricType::COUNTER, xdp_packets));
    }
    if !xdp_bytes.is_empty() {
        let help = "Bytes of the packets the XDP classifier handled, by verdict.";
        families.push(family("beeline_xdp_bytes_total", help, MetricType::COUNTER, xdp_bytes));
    }
    families
}

pub fn render(sources: &Sources) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed families.
    let _ = TextEncoder::new().encode(&gather(sources), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A request's head larger than this is answered from its first line alone.
const REQUEST_HEAD_BYTES_MAX: usize = 2048;
/// How long a client may take to send its request's head.
const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` (and `GET /health`) until the task is dropped.
pub async fn serve(listener: TcpListener, sources: Sources) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or memory: retrying at once would spin the runtime's one
                // worker; pause, and the scrape after next gets through.
                tracing::warn!(%error, "metrics endpoint cannot accept a connection; retrying in 100 ms");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let mut request = [0u8; REQUEST_HEAD_BYTES_MAX];
            let read =
                tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_head(&mut stream, &mut request)).await.unwrap_or(Ok(0));
            let Ok(read) = read else { return };
            let line = std::str::from_utf8(&request[..read]).unwrap_or("").lines().next().unwrap_or("");
            let (status, content_type, body) = if line.starts_with("GET /metrics") {
                ("200 OK", "text/plain; version=0.0.4", render(&sources))
            } else if line.starts_with("GET /health") {
                ("200 OK", "text/plain", "ok\n".to_owned())
            } else {
                ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Reads until the blank line that ends a request's head, the buffer is full or the client
/// stops sending; returns the bytes read. Answering after the first read instead closed the
/// connection with the rest of the head unread, and the kernel then resets it: a client that
/// sent its request in pieces (bash's `printf` to `/dev/tcp` does, and a slow VM sees the
/// pieces apart) lost the answer, so a health probe failed against a healthy node.
async fn read_head(stream: &mut tokio::net::TcpStream, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    // Bounded: every pass fills at least one more byte of `buffer` or ends.
    while filled < buffer.len() {
        let read = stream.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
        let head = &buffer[..filled];
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet_sources() -> Sources {
        Sources {
            snapshot: SharedSnapshot::default(),
            lease_up: None,
            sync_latency: SyncLatency::default(),
            backend: "udp".into(),
            capacity_bytes: 0,
            gc: Arc::default(),
            tagger: None,
        }
    }

    /// A client that sends its request in two pieces gets no answer before the head is
    /// complete, then the whole answer (it used to get an answer to the first piece and a
    /// reset: the Vagrant cluster's health probe, bash writing to `/dev/tcp`, saw that).
    #[test]
    fn a_request_sent_in_pieces_is_answered_once_whole() {
        use std::io::{Read, Write};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let server = tokio::spawn(serve(listener, quiet_sources()));
            let client = tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(address).unwrap();
                stream.write_all(b"GET /health HTTP/1.0\r\n").unwrap();
                // No answer to half a request: the peek times out.
                stream.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
                let early = stream.peek(&mut [0u8; 16]);
                assert!(
                    early.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
                    "answered half a request: {early:?}"
                );
                stream.write_all(b"Host: localhost\r\n\r\n").unwrap();
                stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                answer
            });
            let answer = client.await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("\r\n\r\nok\n"), "{answer:?}");
            server.abort();
        });
    }

    #[test]
    fn dpdk_backend_values_become_queue_labelled_counters_and_gauges() {
        let counters: Vec<(String, u64)> = vec![
            ("dpdk_rxq0_packets".into(), 5),
            ("dpdk_rxq1_packets".into(), 7),
            ("dpdk_frames_owned".into(), 100),
            ("dpdk_arp_replies".into(), 2),
            ("xdp_redirect_packets".into(), 9),
        ];
        let mut out = Vec::new();
        TextEncoder::new().encode(&backend_families(&counters), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for expected in [
            "beeline_dpdk_rx_queue_packets_total{queue=\"0\"} 5",
            "beeline_dpdk_rx_queue_packets_total{queue=\"1\"} 7",
            "# TYPE beeline_dpdk_frames_owned gauge",
            "beeline_dpdk_frames_owned 100",
            "beeline_dpdk_arp_replies_total 2",
            "beeline_xdp_packets_total{verdict=\"redirect\"} 9",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
