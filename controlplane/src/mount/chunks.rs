//! Chunks of stored files as the mount reads them: a bounded cache, and a thread with a
//! client of its own that fetches the chunks after the one being read while the kernel's
//! reads are served from it. Before, a read that missed fetched the next chunks and the
//! kernel waited for all of them, then was served from the cache while nothing was
//! fetched: the transfer and the copying out took turns instead of overlapping.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::store::{Source, Store, Target};

/// Bytes of chunks kept (16 chunks of 4 MiB: the one being read, those fetched ahead of
/// it and a few behind it).
pub const CACHE_BYTES_MAX: usize = 64 << 20;
/// How many chunks past the one being read are fetched ahead.
pub const PREFETCH_CHUNKS: u64 = 8;
/// Chunks asked for in one fetch: in flight at once, so the node reads the next while the
/// client checks the last.
pub const PREFETCH_BATCH_CHUNKS: u64 = 4;
/// Fetches queued for the prefetch thread at most; more are not queued (the read that
/// needs one then fetches it itself).
const PREFETCH_QUEUE_MAX: usize = 8;
/// How long a read waits for a chunk the prefetch thread is fetching, at most (its client
/// gives up well before: this only bounds the wait if the thread is gone).
const IN_FLIGHT_WAIT_MAX: Duration = Duration::from_secs(120);

/// A chunk: (file id, chunk index).
pub type ChunkKey = (u64, u64);

/// Recently read chunks, least recently used first; bounded in bytes.
#[derive(Default)]
struct ChunkCache {
    entries: VecDeque<(ChunkKey, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl ChunkCache {
    fn get(&mut self, key: ChunkKey) -> Option<Arc<Vec<u8>>> {
        let at = self.entries.iter().position(|(k, _)| *k == key)?;
        let entry = self.entries.remove(at)?;
        let data = entry.1.clone();
        self.entries.push_back(entry);
        Some(data)
    }

    fn contains(&self, key: ChunkKey) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    fn insert(&mut self, key: ChunkKey, data: Arc<Vec<u8>>) {
        if self.contains(key) {
            return;
        }
        self.bytes += data.len();
        self.entries.push_back((key, data));
        while self.bytes > CACHE_BYTES_MAX && self.entries.len() > 1 {
            if let Some((_, old)) = self.entries.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

#[derive(Default)]
struct Cached {
    cache: ChunkCache,
    /// Chunks the prefetch thread was asked for and has not delivered (or given up on).
    in_flight: HashSet<ChunkKey>,
}

impl Cached {
    /// The chunks of file `file_id` (of `chunk_count`) to fetch next while chunk `index` is
    /// read: the first run of chunks within [`PREFETCH_CHUNKS`] after it that are neither
    /// cached nor in flight, at most [`PREFETCH_BATCH_CHUNKS`] of them. A batch holds no
    /// chunk already there, so nothing is fetched twice and batches never overlap (each
    /// clears exactly its own in-flight marks). `None` while the window, not the file's end
    /// or a chunk already there, would cut the batch short: it fills as the reader moves.
    fn next_batch(&self, file_id: u64, index: u64, chunk_count: u64) -> Option<(u64, u64)> {
        let end = index.saturating_add(1 + PREFETCH_CHUNKS).min(chunk_count);
        let wanted = |at: &u64| !self.cache.contains((file_id, *at)) && !self.in_flight.contains(&(file_id, *at));
        let first = (index.saturating_add(1)..end).find(wanted)?;
        let count = ((first..end).take_while(wanted).count() as u64).min(PREFETCH_BATCH_CHUNKS);
        debug_assert!(count >= 1 && first + count <= end);
        if count < PREFETCH_BATCH_CHUNKS && first + count == end && end < chunk_count {
            return None;
        }
        Some((first, count))
    }
}

#[derive(Default)]
struct Shared {
    cached: Mutex<Cached>,
    delivered: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Chunks `first..first + count` of `source`, for the prefetch thread.
struct Fetch {
    source: Source,
    file_id: u64,
    first: u64,
    count: u64,
}

pub struct Chunks {
    shared: Arc<Shared>,
    requests: Option<SyncSender<Fetch>>,
    worker: Option<JoinHandle<()>>,
}

impl Chunks {
    /// The cache, and the prefetch thread with its own connection to `target` (none if the
    /// thread cannot start: reads then fetch what they need themselves).
    pub fn new(target: &Target) -> Chunks {
        let shared = Arc::new(Shared::default());
        let (requests, queue) = std::sync::mpsc::sync_channel::<Fetch>(PREFETCH_QUEUE_MAX);
        let started = {
            let (shared, target) = (shared.clone(), target.clone());
            std::thread::Builder::new().name("beeline-prefetch".into()).spawn(move || prefetch(&target, &shared, queue))
        };
        match started {
            Ok(worker) => Chunks { shared, requests: Some(requests), worker: Some(worker) },
            Err(error) => {
                tracing::warn!("no prefetch thread ({error}): reads fetch their chunks themselves");
                Chunks { shared, requests: None, worker: None }
            }
        }
    }

    /// The chunk, cached or once the prefetch thread delivers it; `None` if it is neither
    /// cached nor being fetched (or its fetch failed).
    pub fn get(&self, key: ChunkKey) -> Option<Arc<Vec<u8>>> {
        let deadline = Instant::now() + IN_FLIGHT_WAIT_MAX;
        let mut cached = self.shared.lock();
        loop {
            if let Some(chunk) = cached.cache.get(key) {
                return Some(chunk);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !cached.in_flight.contains(&key) || left.is_zero() {
                return None;
            }
            cached = self.shared.delivered.wait_timeout(cached, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    pub fn insert(&self, key: ChunkKey, chunk: Arc<Vec<u8>>) {
        self.shared.lock().cache.insert(key, chunk);
    }

    /// Has the chunks after `index` of `source` that are neither cached nor being fetched
    /// fetched in the background, up to [`PREFETCH_CHUNKS`] ahead, in batches.
    pub fn prefetch_after(&self, source: &Source, index: u64) {
        let Some(requests) = &self.requests else { return };
        let record = source.record();
        let file_id = record.file_id;
        let mut cached = self.shared.lock();
        let Some((first, count)) = cached.next_batch(file_id, index, record.chunk_count()) else { return };
        let fetch = Fetch { source: source.clone(), file_id, first, count };
        match requests.try_send(fetch) {
            Ok(()) => cached.in_flight.extend((first..first + count).map(|at| (file_id, at))),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // The thread ends when its queue closes, after the fetch it is in.
        self.requests.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn prefetch(target: &Target, shared: &Shared, queue: Receiver<Fetch>) {
    let mut store = match Store::open(target) {
        Ok(store) => Some(store),
        Err(error) => {
            tracing::warn!("the prefetch thread cannot reach the store ({error}): reads fetch their chunks themselves");
            None
        }
    };
    for fetch in queue {
        let fetched = match store.as_mut() {
            Some(store) => store.read_chunks(&fetch.source, fetch.first, fetch.count),
            None => Ok(Vec::new()),
        };
        let mut cached = shared.lock();
        match fetched {
            Ok(chunks) => {
                for (at, chunk) in (fetch.first..).zip(chunks) {
                    cached.cache.insert((fetch.file_id, at), Arc::new(chunk));
                }
            }
            // The read that needs one of them fetches it itself and reports the error.
            Err(error) => tracing::debug!("prefetch of {} failed: {error}", fetch.source.record().name),
        }
        for at in fetch.first..fetch.first + fetch.count {
            cached.in_flight.remove(&(fetch.file_id, at));
        }
        drop(cached);
        shared.delivered.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_most_recently_used_within_its_bound() {
        let mut cache = ChunkCache::default();
        let chunk = Arc::new(vec![0u8; CACHE_BYTES_MAX / 4]);
        for index in 0..4 {
            cache.insert((1, index), chunk.clone());
        }
        assert!(cache.get((1, 0)).is_some(), "chunk 0 is now the most recently used");
        cache.insert((1, 4), chunk.clone());
        assert!(!cache.contains((1, 1)), "the least recently used went");
        assert!(cache.contains((1, 0)) && cache.contains((1, 4)));
        assert!(cache.bytes <= CACHE_BYTES_MAX);
        cache.insert((1, 4), chunk);
        assert_eq!(cache.entries.len(), 4, "a chunk is kept once");
    }

    #[test]
    fn prefetch_batches_skip_chunks_already_there_and_never_overlap() {
        let mut cached = Cached::default();
        let chunk = Arc::new(vec![0u8; 16]);
        // Reading chunk 0 of 100: chunks 1-4 first.
        assert_eq!(cached.next_batch(7, 0, 100), Some((1, 4)));
        cached.in_flight.extend((1..5).map(|at| (7, at)));
        // Chunks 5-8 next, not 1-4 again.
        assert_eq!(cached.next_batch(7, 0, 100), Some((5, 4)));
        cached.in_flight.extend((5..9).map(|at| (7, at)));
        // The window (8 after chunk 0) is all asked for.
        assert_eq!(cached.next_batch(7, 0, 100), None);
        // Reading chunk 2: 9 and 10 are in the window, a batch of 4 is not yet: wait.
        assert_eq!(cached.next_batch(7, 2, 100), None);
        // Reading chunk 4: 9-12.
        assert_eq!(cached.next_batch(7, 4, 100), Some((9, 4)));
        // A chunk read by itself (cached) cuts a run short: the run before it goes alone.
        cached.in_flight.clear();
        cached.cache.insert((7, 23), chunk.clone());
        assert_eq!(cached.next_batch(7, 20, 100), Some((21, 2)));
        // At the file's end a short batch goes.
        assert_eq!(cached.next_batch(7, 97, 100), Some((98, 2)));
        assert_eq!(cached.next_batch(7, 99, 100), None);
        // Another file's chunks do not count.
        cached.in_flight.insert((8, 1));
        assert_eq!(cached.next_batch(7, 0, 100), Some((1, 4)));
    }
}
