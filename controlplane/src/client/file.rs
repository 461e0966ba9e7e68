//! Whole files streamed chunk by chunk: `put_reader` keeps `parallel_chunks` puts in flight
//! while it reads the source; `get_writer` keeps as many gets in flight, hashes on a
//! second thread and writes in order.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use beeline_dataplane::client::Progress;
use beeline_dataplane::wire::Status;

use super::bulk::GetBytes;
use super::op::Op;
use super::{ChunkBytes, Client, ClientError, OnProgress};
use crate::control::{ControlRequest, ControlResponse, FileRecord, validate_name};

/// Chunks a get keeps between the transfer and the writer while they are hashed.
const HASH_PIPELINE_CHUNKS: u64 = 2;

/// How long a put moves its chunks in flight before it asks a reader that had no bytes
/// again (and how long it waits for one when nothing is in flight).
const READER_IDLE_MS: u64 = 5;

/// The chunks of a put that the node acknowledged (durable), and how many of them form an
/// unbroken run from the first: the bytes a caller may rely on being stored, in order.
#[derive(Debug, Default)]
struct DurablePrefix {
    /// Chunks `0..chunks` are all durable.
    chunks: u64,
    /// Durable chunks past the run, waiting for the ones before them.
    beyond: std::collections::BTreeSet<u64>,
}

impl DurablePrefix {
    fn acked(&mut self, index: u64) {
        assert!(index >= self.chunks && !self.beyond.contains(&index), "chunk {index} acknowledged twice");
        self.beyond.insert(index);
        while self.beyond.remove(&self.chunks) {
            self.chunks += 1;
        }
    }

    /// Bytes of the run, of a file of which `read_bytes` were read into chunks so far (only
    /// the last chunk read can be short).
    fn bytes(&self, chunk_bytes: u32, read_bytes: u64) -> u64 {
        self.chunks.saturating_mul(u64::from(chunk_bytes)).min(read_bytes)
    }
}

/// A fresh file id: random, odd (so never 0).
pub fn new_file_id() -> u64 {
    rand::random::<u64>() | 1
}

/// Removes the puts in `finished` (indices into `ops`, whose chunk indices `op_chunks`
/// holds alongside) and gives their buffers back to `spare`; each counts as durable.
fn reap(
    ops: &mut Vec<Op>,
    op_chunks: &mut Vec<u64>,
    mut finished: Vec<usize>,
    spare: &mut Vec<Vec<u8>>,
    durable: &mut DurablePrefix,
) {
    assert_eq!(ops.len(), op_chunks.len());
    finished.sort_unstable();
    for index in finished.into_iter().rev() {
        let op = ops.swap_remove(index);
        assert_eq!(op.progress(), Progress::Done, "only acknowledged puts are reaped");
        durable.acked(op_chunks.swap_remove(index));
        if let Some(ChunkBytes::Owned(buffer)) = op.into_put_data() {
            spare.push(buffer);
        }
    }
}

/// Fills `buffer` with the next `chunk_len` bytes of `reader`, fewer only at its end,
/// reading straight into it. A recycled buffer keeps its length, so that only bytes it never
/// held are zeroed: `read_to_end` would zero the whole chunk before every read into it, and
/// a buffered reader would copy every byte once more. `on_would_block` runs whenever the
/// reader has no bytes yet (a file still being written), and may end the fill with an error.
pub(super) fn fill_chunk<E>(
    reader: &mut dyn Read,
    buffer: &mut Vec<u8>,
    chunk_len: usize,
    mut on_would_block: impl FnMut() -> Result<(), E>,
    read_error: impl Fn(std::io::Error) -> E,
) -> Result<(), E> {
    buffer.resize(chunk_len, 0);
    let mut filled = 0;
    // Bounded by the reader: each pass reads, ends, fails, or waits in `on_would_block`.
    while filled < chunk_len {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(error) = on_would_block() {
                    buffer.truncate(filled);
                    return Err(error);
                }
            }
            Err(error) => {
                buffer.truncate(filled);
                return Err(read_error(error));
            }
        }
    }
    buffer.truncate(filled);
    Ok(())
}

impl Client {
    /// Stores everything `reader` yields as file `name`, chunk by chunk. `on_progress` is
    /// told the bytes from the start of the file that are durable on the node so far (a
    /// write-behind frees its copy of them).
    pub fn put_reader(
        &mut self,
        name: &str,
        reader: &mut dyn Read,
        source: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<FileRecord, ClientError> {
        self.put_reader_as(name, new_file_id(), reader, source, on_progress)
    }

    /// The chunk size this client's puts cut files into.
    pub fn put_chunk_bytes(&mut self) -> Result<u32, ClientError> {
        Ok(self.options.chunk_bytes.min(self.info()?.chunk_bytes_max))
    }

    /// [`Client::put_reader`] with the file id chosen by the caller (from [`new_file_id`]),
    /// who can then read back the chunks made durable (`chunk_id(file_id, index)`) should
    /// the put fail before its commit.
    // Long on purpose: one streaming loop (read, start chunk puts up to the parallel limit, drive them, record the file) whose local state every step shares.
    pub fn put_reader_as(
        &mut self,
        name: &str,
        file_id: u64,
        reader: &mut dyn Read,
        source: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<FileRecord, ClientError> {
        validate_name(name).map_err(ClientError::BadName)?;
        assert!(file_id & 1 == 1, "file ids come from new_file_id");
        let chunk_bytes = self.put_chunk_bytes()?;
        let frag_len = self.fragment_bytes(chunk_bytes)?;
        let window = self.info()?.window_fragments;
        let mut hasher = blake3::Hasher::new();
        // `parallel` chunks move fragments while as many more wait for the node's disk: the
        // network and the disk then work at once instead of taking turns (a put is
        // acknowledged only when durable, so each round would otherwise wait for a sync).
        let parallel = self.options.parallel_chunks.max(1);
        let mut spare: Vec<Vec<u8>> = (0..2 * parallel).map(|_| Vec::new()).collect();
        let mut ops: Vec<Op> = Vec::new();
        let mut op_chunks: Vec<u64> = Vec::new();
        let mut size_bytes = 0u64;
        let mut next_index = 0u64;
        let mut durable = DurablePrefix::default();
        let mut eof = false;
        loop {
            // Over shared memory a whole chunk is handed over at once: `parallel` in flight
            // in all (each holds a bulk slot). Over UDP, `parallel` still sending.
            let whole_chunks = self.shm.is_some();
            let in_flight = |ops: &[Op]| {
                if whole_chunks { ops.len() } else { ops.iter().filter(|op| op.is_sending_put()).count() }
            };
            while !eof && !spare.is_empty() && in_flight(&ops) < parallel {
                let mut buffer = spare.pop().expect("checked non-empty");
                // A reader that has no bytes yet (such as a file still being written) lets
                // the chunks in flight move for a moment instead of stalling them meanwhile.
                let on_would_block = || -> Result<(), ClientError> {
                    if ops.is_empty() {
                        // Nothing to move: wait for the reader without spinning.
                        std::thread::sleep(std::time::Duration::from_millis(READER_IDLE_MS));
                        return Ok(());
                    }
                    let until_ms = self.now_ms() + READER_IDLE_MS;
                    let finished = self.drive_until(&mut ops, true, Some(until_ms))?;
                    reap(&mut ops, &mut op_chunks, finished, &mut spare, &mut durable);
                    on_progress(durable.bytes(chunk_bytes, size_bytes));
                    Ok(())
                };
                let read_error = |error| ClientError::LocalIo { path: source.to_owned(), source: error };
                fill_chunk(reader, &mut buffer, chunk_bytes as usize, on_would_block, read_error)?;
                if buffer.is_empty() {
                    eof = true;
                    spare.push(buffer);
                    break;
                }
                if buffer.len() < chunk_bytes as usize {
                    eof = true;
                }
                hasher.update(&buffer);
                size_bytes += buffer.len() as u64;
                let chunk_id = crate::control::chunk_id(file_id, next_index);
                let op = self.start_put(chunk_id, ChunkBytes::Owned(buffer), frag_len, window);
                ops.push(op);
                op_chunks.push(next_index);
                next_index += 1;
            }
            if ops.is_empty() {
                break;
            }
            let finished = self.drive(&mut ops, true)?;
            reap(&mut ops, &mut op_chunks, finished, &mut spare, &mut durable);
            on_progress(durable.bytes(chunk_bytes, size_bytes));
        }
        let record = FileRecord {
            name: name.to_owned(),
            file_id,
            size_bytes,
            chunk_bytes,
            blake3: *hasher.finalize().as_bytes(),
            created_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        };
        match self.control(&ControlRequest::CommitFile(record.clone()))? {
            ControlResponse::Committed { .. } => Ok(record),
            other => Err(ClientError::Protocol {
                node: self.options.node,
                what: format!("unexpected answer to commit: {other:?}"),
            }),
        }
    }

    /// Writes file `name` to `writer` in order, checking its BLAKE3 at the end. Every byte
    /// written passed the node's block checksums (a damaged copy is refused, not sent); when
    /// a chunk fails, the chunks before it are still written whole, then the error returns.
    ///
    /// Hashing runs on a second thread, pipelined with the transfer: on a get the client
    /// spends about a third of its CPU in BLAKE3, which would otherwise stall the receive
    /// loop (and let the node's datagrams overrun the socket). Chunk buffers are recycled,
    /// so a steady get neither zeroes nor faults in fresh memory per chunk.
    pub fn get_writer(
        &mut self,
        name: &str,
        writer: &mut dyn Write,
        destination: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<FileRecord, ClientError> {
        let record = self.lookup(name)?;
        let frag_len = self.fragment_bytes(record.chunk_bytes)?;
        let parallel = self.options.parallel_chunks.max(1) as u64;
        let window = self.get_window(frag_len, parallel as usize)?;
        // Every chunk buffer is fetching, waiting for its turn, hashing or being written:
        // at most this many exist, so neither channel below can ever be full. Over shared
        // memory a chunk is hashed and written where the node read it, in its bulk slot,
        // so there are no more buffers than slots: one more would go as fragments.
        let mut buffers_max = (parallel + HASH_PIPELINE_CHUNKS) as usize;
        if let Some(slots) = self.bulk_slots_holding(record.chunk_bytes) {
            buffers_max = buffers_max.min(slots.max(1) as usize);
        }
        let (to_hash, hash_input) = std::sync::mpsc::sync_channel::<GetBytes>(buffers_max);
        let (hash_output, hashed) = std::sync::mpsc::sync_channel::<GetBytes>(buffers_max);
        let digest = std::thread::scope(|scope| -> Result<[u8; 32], ClientError> {
            let hasher = scope.spawn(move || {
                let mut hasher = blake3::Hasher::new();
                for data in hash_input {
                    hasher.update(data.as_ref());
                    if hash_output.send(data).is_err() {
                        break;
                    }
                }
                *hasher.finalize().as_bytes()
            });
            self.get_pipelined(
                name,
                &record,
                frag_len,
                window,
                buffers_max,
                &to_hash,
                &hashed,
                writer,
                destination,
                on_progress,
            )?;
            drop(to_hash);
            Ok(hasher.join().expect("the hashing thread does not panic"))
        })?;
        if digest != record.blake3 {
            return Err(ClientError::Corrupt { name: name.to_owned() });
        }
        Ok(record)
    }

    /// The transfer half of [`Client::get_writer`]: fetches chunks `parallel` at a time,
    /// hands them to the hashing thread in order and writes what comes back from it.
    #[allow(clippy::too_many_arguments)]
    fn get_pipelined(
        &mut self,
        name: &str,
        record: &FileRecord,
        frag_len: u16,
        window: u16,
        buffers_max: usize,
        to_hash: &std::sync::mpsc::SyncSender<GetBytes>,
        hashed: &std::sync::mpsc::Receiver<GetBytes>,
        writer: &mut dyn Write,
        destination: &str,
        on_progress: OnProgress<'_>,
    ) -> Result<(), ClientError> {
        let parallel = self.options.parallel_chunks.max(1) as u64;
        let chunk_count = record.chunk_count();
        let mut spare: Vec<Vec<u8>> = Vec::with_capacity(buffers_max);
        let mut ready: BTreeMap<u64, GetBytes> = BTreeMap::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut op_chunks: Vec<u64> = Vec::new();
        // The lowest chunk that failed, and why: nothing from it on is written.
        let mut failed: Option<(u64, ClientError)> = None;
        let mut next_start = 0u64;
        let mut next_hash = 0u64;
        let mut next_write = 0u64;
        let mut written = 0u64;
        let write_error = |source| ClientError::LocalIo { path: destination.to_owned(), source };
        let node = self.options.node;
        let hash_gone = || ClientError::Failed {
            node,
            reason: "the client's hashing thread stopped; this is a bug in beeline".to_owned(),
        };
        while next_write < chunk_count {
            if let Some((index, _)) = &failed {
                if next_write >= *index {
                    let (_, error) = failed.expect("checked above");
                    let _ = writer.flush();
                    return Err(match error {
                        ClientError::Rejected { status: Status::NotFound, .. } => ClientError::Failed {
                            node: self.options.node,
                            reason: format!(
                                "a chunk of {name} is missing on the node; the file cannot be read back whole"
                            ),
                        },
                        other => other,
                    });
                }
            }
            // At most `parallel` chunks in flight, no more buffers than `buffers_max`, and
            // none started after a failure.
            while failed.is_none()
                && next_start < chunk_count
                && (ops.len() as u64) < parallel
                && next_start < next_write + buffers_max as u64
            {
                let len = record.chunk_len(next_start) as usize;
                // A recycled buffer is overwritten (fragment by fragment, or from a bulk
                // slot at once), and the machine reports done only when all of it arrived.
                let buffer = spare.pop().unwrap_or_default();
                let op =
                    self.start_get(record.chunk_id(next_start), len as u32, 0, len as u32, buffer, frag_len, window);
                ops.push(op);
                op_chunks.push(next_start);
                next_start += 1;
            }
            if ops.is_empty() {
                // Everything left to write is with the hashing thread: wait for the next
                // chunk back.
                let data = hashed.recv().map_err(|_| hash_gone())?;
                writer.write_all(data.as_ref()).map_err(write_error)?;
                written += data.as_ref().len() as u64;
                next_write += 1;
                on_progress(written);
                spare.extend(data.into_buffer());
                continue;
            }
            let mut finished = self.drive(&mut ops, false)?;
            finished.sort_unstable();
            for index in finished.into_iter().rev() {
                let chunk_index = op_chunks.swap_remove(index);
                let op = ops.swap_remove(index);
                if let Progress::Failed(error) = op.progress() {
                    if failed.as_ref().is_none_or(|(first, _)| chunk_index < *first) {
                        failed = Some((chunk_index, self.error(error)));
                    }
                } else if let Some(data) = op.into_get_bytes() {
                    ready.insert(chunk_index, data);
                }
            }
            while let Some(data) = ready.remove(&next_hash) {
                to_hash.try_send(data).map_err(|_| hash_gone())?;
                next_hash += 1;
            }
            while let Ok(data) = hashed.try_recv() {
                writer.write_all(data.as_ref()).map_err(write_error)?;
                written += data.as_ref().len() as u64;
                next_write += 1;
                on_progress(written);
                spare.extend(data.into_buffer());
            }
        }
        writer.flush().map_err(write_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::{self, Read};

    use super::{DurablePrefix, fill_chunk};

    /// A reader that plays back a script: bytes in pieces, "no bytes yet", interrupts, errors.
    enum Step {
        Bytes(Vec<u8>),
        WouldBlock,
        Interrupted,
        Fail,
    }

    struct Scripted(VecDeque<Step>);

    impl Read for Scripted {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Step::Bytes(mut bytes)) => {
                    let taken = bytes.len().min(out.len());
                    out[..taken].copy_from_slice(&bytes[..taken]);
                    if taken < bytes.len() {
                        self.0.push_front(Step::Bytes(bytes.split_off(taken)));
                    }
                    Ok(taken)
                }
                Some(Step::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
                Some(Step::Interrupted) => Err(io::ErrorKind::Interrupted.into()),
                Some(Step::Fail) => Err(io::Error::other("disk gone")),
            }
        }
    }

    fn never_blocks() -> Result<(), String> {
        panic!("the reader never said it had no bytes")
    }

    #[test]
    fn short_reads_waits_and_interrupts_fill_whole_chunks_in_order() {
        let mut reader = Scripted(VecDeque::from([
            Step::Bytes(vec![1, 2, 3]),
            Step::WouldBlock,
            Step::Interrupted,
            Step::Bytes(vec![4, 5, 6, 7, 8, 9, 10]),
        ]));
        let mut waits = 0;
        let mut buffer = Vec::new();
        let on_wait = || -> Result<(), String> {
            waits += 1;
            Ok(())
        };
        fill_chunk(&mut reader, &mut buffer, 4, on_wait, |error| error.to_string()).unwrap();
        assert_eq!(buffer, [1, 2, 3, 4]);
        assert_eq!(waits, 1);
        // The same buffer again: the next chunk, then the short tail, then nothing.
        fill_chunk(&mut reader, &mut buffer, 4, never_blocks, |error| error.to_string()).unwrap();
        assert_eq!(buffer, [5, 6, 7, 8]);
        fill_chunk(&mut reader, &mut buffer, 4, never_blocks, |error| error.to_string()).unwrap();
        assert_eq!(buffer, [9, 10]);
        fill_chunk(&mut reader, &mut buffer, 4, never_blocks, |error| error.to_string()).unwrap();
        assert!(buffer.is_empty());
    }

    #[test]
    fn the_durable_prefix_grows_only_through_an_unbroken_run_from_the_first_chunk() {
        let mut durable = DurablePrefix::default();
        assert_eq!(durable.bytes(4, 10), 0);
        durable.acked(1);
        durable.acked(2);
        assert_eq!(durable.bytes(4, 10), 0, "chunk 0 is still in flight");
        durable.acked(0);
        assert_eq!(durable.bytes(4, 10), 10, "0..3 durable, the last chunk short");
        durable.acked(4);
        assert_eq!(durable.bytes(4, 20), 12);
        durable.acked(3);
        assert_eq!(durable.bytes(4, 20), 20);
    }

    #[test]
    #[should_panic(expected = "acknowledged twice")]
    fn a_chunk_acknowledged_twice_is_a_bug_not_a_longer_prefix() {
        let mut durable = DurablePrefix::default();
        durable.acked(0);
        durable.acked(0);
    }

    #[test]
    fn a_recycled_buffer_holds_only_the_new_bytes() {
        let mut buffer = vec![0xAA; 8];
        let mut reader = Scripted(VecDeque::from([Step::Bytes(vec![1, 2, 3])]));
        fill_chunk(&mut reader, &mut buffer, 6, never_blocks, |error| error.to_string()).unwrap();
        assert_eq!(buffer, [1, 2, 3]);
    }

    #[test]
    fn a_read_error_or_a_refused_wait_ends_the_fill_with_the_callers_error() {
        let mut buffer = Vec::new();
        let mut reader = Scripted(VecDeque::from([Step::Bytes(vec![1, 2]), Step::Fail]));
        let error = fill_chunk(&mut reader, &mut buffer, 4, never_blocks, |error| format!("read: {error}"));
        assert_eq!(error, Err("read: disk gone".to_owned()));
        assert_eq!(buffer, [1, 2], "the bytes read before the error stay, and nothing else");

        let mut reader = Scripted(VecDeque::from([Step::Bytes(vec![7]), Step::WouldBlock, Step::Bytes(vec![8])]));
        let refuse = || Err("put reclaimed".to_owned());
        let error = fill_chunk(&mut reader, &mut buffer, 4, refuse, |error| error.to_string());
        assert_eq!(error, Err("put reclaimed".to_owned()));
        assert_eq!(buffer, [7]);
    }
}
