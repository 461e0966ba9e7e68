//! Durability: the group-commit thread.
//!
//! `commit_put` and `delete` write their records with `pwrite` and queue a sync request
//! (ticket, segment file) over a bounded channel to a background thread. The thread takes
//! every request queued so far, calls `fdatasync` once per segment file named in the
//! batch (and `fsync`s the directory if a segment file was created), then reports each
//! ticket back in request order. A failed `fdatasync` fails every ticket of that segment,
//! then and forever after (the kernel may have dropped the dirty pages), and makes the
//! store start a new segment. `poll_durable` drains the reports without blocking (at
//! most [`POLL_DURABLE_BATCH_MAX`] per call); `wait_durable` blocks for one. Puts in
//! flight plus unreported changes are bounded by `max_pending_durable` (`Busy` beyond),
//! which bounds both channels, so neither side ever blocks on a full queue.

use super::*;

/// The group-commit thread: one `fdatasync` per dirty segment per batch of requests.
/// Runs until the store sends `Shutdown` (after everything queued before it) or goes away.
pub(super) fn run_group_commit(
    requests: &Receiver<Request>,
    completions: &SyncSender<Durable>,
    dir: &File,
    batch_max: usize,
    sync_latency: &SyncLatency,
) {
    let mut tickets: Vec<Ticket> = Vec::with_capacity(batch_max);
    let mut files: Vec<Arc<SegmentFile>> = Vec::with_capacity(batch_max);
    let mut dir_pending = false;
    loop {
        let Ok(first) = requests.recv() else { return };
        let mut shutdown = absorb(first, &mut tickets, &mut files, &mut dir_pending);
        while !shutdown && tickets.len() < batch_max {
            match requests.try_recv() {
                Ok(request) => shutdown = absorb(request, &mut tickets, &mut files, &mut dir_pending),
                Err(_) => break,
            }
        }
        let sync_started = std::time::Instant::now();
        let dir_ok = !dir_pending || dir.sync_all().is_ok();
        if dir_ok {
            dir_pending = false;
        }
        for file in &files {
            if file.file.sync_data().is_err() {
                file.sync_failed.store(true, Ordering::Release);
            }
        }
        if let Ok(mut histogram) = sync_latency.lock() {
            histogram.observe_us(sync_started.elapsed().as_micros() as u64);
        }
        for &Ticket { ticket, file, .. } in &tickets {
            let file_ok = file.is_none_or(|index| !files[index].sync_failed.load(Ordering::Acquire));
            let result = if dir_ok && file_ok { Ok(()) } else { Err(StoreError::Io) };
            // Never blocks: the store bounds the tickets outstanding to the queue length.
            // An error means the store is gone and nobody is waiting for the report.
            let _ = completions.send(Durable { ticket, result });
        }
        // After the reports, so freeing pages never delays an acknowledgement. Durable
        // now, so clean: the pages can go (advice only, see `drop_cached`).
        for Ticket { file, written, .. } in tickets.drain(..) {
            if let (Some(index), Some((offset, len))) = (file, written) {
                if !files[index].sync_failed.load(Ordering::Acquire) {
                    let _ = drop_cached(&files[index].file, offset, len);
                }
            }
        }
        files.clear();
        if shutdown {
            return;
        }
    }
}

/// A change waiting for the batch's sync: its ticket, the index of its segment in the
/// batch's files, and the record a put wrote (offset, length) if its pages are to be
/// dropped once durable.
pub(super) struct Ticket {
    ticket: u64,
    file: Option<usize>,
    written: Option<(u64, u64)>,
}

/// Adds a request to the batch; returns whether it was `Shutdown`.
pub(super) fn absorb(
    request: Request,
    tickets: &mut Vec<Ticket>,
    files: &mut Vec<Arc<SegmentFile>>,
    dir_pending: &mut bool,
) -> bool {
    match request {
        Request::Shutdown => true,
        Request::Sync { ticket, segment, written, dir_sync } => {
            *dir_pending |= dir_sync;
            let index = segment.map(|segment| match files.iter().position(|file| file.id == segment.id) {
                Some(index) => index,
                None => {
                    files.push(segment);
                    files.len() - 1
                }
            });
            tickets.push(Ticket { ticket, file: index, written });
            false
        }
    }
}
