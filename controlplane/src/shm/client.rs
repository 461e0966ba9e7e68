//! The client's side: connect to the node's socket, map the region it hands over, write
//! requests into request frames and read replies from completion frames.

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ring::{BULK_DESCRIPTOR_BIT, Layout, Region, SlotBytes, check_descriptor};
use super::{HELLO_BYTES, Hello, HelloStatus, sys};

/// How long a request waits for a free slot of a full request ring before it is dropped
/// (the protocol's retransmission then covers it).
const FULL_RING_WAIT_MS: u64 = 1000;
/// How long `wait` polls the completion ring before it sleeps on the doorbell: longer than
/// the node takes to answer a small request, short enough that a client waiting on a
/// whole chunk spends little of a core on it.
const SPIN_FOR_REPLY_US: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error(
        "cannot connect to the node's shared-memory socket {path}: {source}; is the node on this host, is its socket there (shm_socket in its config, --shm-socket here) and may this user open it?"
    )]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("the node's shared-memory socket {path} did not hand over a region: {reason}")]
    Handshake { path: PathBuf, reason: String },
    #[error("the node behind {path} serves UDP port {found}, not {expected}: pass the right --shm-socket")]
    WrongNode { path: PathBuf, expected: u16, found: u16 },
    #[error("the node refused a shared-memory client ({path}): {reason}")]
    Refused { path: PathBuf, reason: &'static str },
}

pub struct ShmLink {
    stream: UnixStream,
    region: Region,
    /// The region's file, kept for `try_shrink_region`.
    memfd: OwnedFd,
    request_bell: OwnedFd,
    completion_bell: OwnedFd,
    next_request: Cell<u32>,
    pub hello: Hello,
    /// Requests dropped because the ring stayed full.
    pub dropped: Cell<u64>,
}

impl ShmLink {
    /// Connects and maps the region; `node_port` is the UDP port the node must serve.
    pub fn connect(path: &Path, node_port: u16) -> Result<ShmLink, ShmError> {
        let stream = UnixStream::connect(path).map_err(|source| ShmError::Connect { path: path.to_owned(), source })?;
        let handshake = |reason: String| ShmError::Handshake { path: path.to_owned(), reason };
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| handshake(e.to_string()))?;
        let mut bytes = [0u8; HELLO_BYTES];
        let (len, fds) = sys::recv_with_fds(&stream, &mut bytes).map_err(|e| handshake(e.to_string()))?;
        let hello = Hello::decode(&bytes[..len]).ok_or_else(|| handshake("not a Beeline hello".into()))?;
        match hello.status {
            HelloStatus::Accepted => {}
            HelloStatus::Full => {
                return Err(ShmError::Refused { path: path.to_owned(), reason: "it serves its maximum of clients" });
            }
            HelloStatus::NoMemory => {
                return Err(ShmError::Refused { path: path.to_owned(), reason: "it has no memory for another region" });
            }
        }
        if hello.node_port != node_port {
            return Err(ShmError::WrongNode { path: path.to_owned(), expected: node_port, found: hello.node_port });
        }
        let [memfd, request_bell, completion_bell]: [OwnedFd; 3] =
            fds.try_into().map_err(|_| handshake("expected three descriptors".into()))?;
        let layout = Layout::new(hello.slots, hello.frame_bytes, u32::from(hello.bulk_slots), hello.bulk_slot_bytes)
            .ok_or_else(|| handshake("bad ring shape".into()))?;
        let region = Region::map(memfd.as_fd(), hello.region_bytes as usize, layout)
            .map_err(|e| handshake(format!("mapping the region: {e}")))?;
        if !region.header_matches() {
            return Err(handshake("the region's header does not match the hello".into()));
        }
        let next_request = Cell::new(region.request_ring().own_head());
        Ok(ShmLink { stream, region, memfd, request_bell, completion_bell, next_request, hello, dropped: Cell::new(0) })
    }

    /// Bytes of replies the completion ring holds at once (bounds a get's window).
    pub fn completion_bytes(&self) -> usize {
        self.hello.slots as usize * self.hello.frame_bytes as usize
    }

    pub fn frame_bytes(&self) -> usize {
        self.hello.frame_bytes as usize
    }

    /// Whole-chunk slots of this client's bulk area, and the bytes each holds.
    pub fn bulk_slots(&self) -> u32 {
        self.region.layout().bulk_slots
    }

    pub fn bulk_slot_bytes(&self) -> usize {
        self.region.layout().bulk_slot_bytes as usize
    }

    /// Copies a chunk into bulk slot `slot` (which the caller owns) for a bulk put. False
    /// when this region has no such slot or a smaller one: a node restarted with another
    /// `chunk_bytes_max` since the slot was taken.
    pub fn write_bulk(&self, slot: u32, data: &[u8]) -> bool {
        match self.region.layout().bulk_slot(slot) {
            Some(at) if data.len() <= self.bulk_slot_bytes() => {
                self.region.write(at, data);
                true
            }
            _ => false,
        }
    }

    /// Replaces `out`'s contents with the first `len` bytes of bulk slot `slot`, where the
    /// node put a bulk get's bytes before answering it. False as for `write_bulk`.
    pub fn read_bulk(&self, slot: u32, len: usize, out: &mut Vec<u8>) -> bool {
        match self.region.layout().bulk_slot(slot) {
            Some(at) if len <= self.bulk_slot_bytes() => {
                self.region.read_to_vec(at, len, out);
                true
            }
            _ => false,
        }
    }

    /// The first `len` bytes of bulk slot `slot`, read in place: only for a slot whose one
    /// request the node answered, sent once (see [`Region::slot_bytes`]). None as for
    /// `write_bulk`.
    pub fn bulk_in_place(&self, slot: u32, len: usize) -> Option<SlotBytes> {
        match self.region.layout().bulk_slot(slot) {
            Some(at) if len <= self.bulk_slot_bytes() => Some(self.region.slot_bytes(at, len)),
            _ => None,
        }
    }

    /// Writes one request (header + payload) into the next request frame and publishes
    /// it; waits (bounded) while the ring is full. Returns false when it was dropped.
    pub fn send(&self, header: &[u8], payload: &[u8]) -> bool {
        self.send_marked(header, payload, 0)
    }

    /// Sends a bulk request: a header naming a bulk slot (`docs/protocol.md`).
    pub fn send_bulk(&self, header: &[u8]) -> bool {
        self.send_marked(header, &[], BULK_DESCRIPTOR_BIT)
    }

    fn send_marked(&self, header: &[u8], payload: &[u8], mark: u32) -> bool {
        let layout = *self.region.layout();
        let len = header.len() + payload.len();
        if len > layout.frame_bytes as usize {
            self.dropped.set(self.dropped.get() + 1);
            return false;
        }
        let ring = self.region.request_ring();
        let head = self.next_request.get();
        let deadline = Instant::now() + Duration::from_millis(FULL_RING_WAIT_MS);
        // Bounded by the deadline; the node drains the ring whenever it runs.
        while head.wrapping_sub(ring.consumer_tail()) >= layout.slots {
            if Instant::now() >= deadline {
                self.dropped.set(self.dropped.get() + 1);
                return false;
            }
            sys::ring(self.request_bell.as_fd());
            std::thread::sleep(Duration::from_micros(20));
        }
        let at = layout.request_frame(head);
        self.region.write(at, header);
        self.region.write(at + header.len(), payload);
        ring.set_descriptor(head, at as u32, len as u32 | mark);
        let head = head.wrapping_add(1);
        self.next_request.set(head);
        ring.publish(head);
        if ring.consumer_sleeps() {
            sys::ring(self.request_bell.as_fd());
        }
        true
    }

    /// Tries to cut the region's file to nothing under the node's mapping (tests: a client
    /// that would make the node's next access to its region fault); the node's seals make
    /// it fail.
    pub fn try_shrink_region(&self) -> std::io::Result<()> {
        sys::truncate(self.memfd.as_fd(), 0)
    }

    /// Writes a raw descriptor and head (tests: a client that scribbles on its ring).
    pub fn scribble(&self, offset: u32, len: u32, head: Option<u32>) {
        let ring = self.region.request_ring();
        let index = self.next_request.get();
        ring.set_descriptor(index, offset, len);
        let head = head.unwrap_or(index.wrapping_add(1));
        self.next_request.set(head);
        ring.scribble_head(head);
        sys::ring(self.request_bell.as_fd());
    }

    /// Calls `each` with every reply queued now, then gives their frames back. Replies
    /// whose descriptor does not name a completion frame are skipped.
    pub fn receive(&self, mut each: impl FnMut(&[u8])) -> usize {
        let layout = *self.region.layout();
        let ring = self.region.completion_ring();
        let head = ring.producer_head();
        let mut tail = ring.own_tail();
        let mut count = 0;
        // Bounded: at most one ring's worth per call.
        while tail != head && count < layout.slots as usize {
            let (offset, len) = ring.descriptor(tail);
            if check_descriptor(&layout, layout.completion_frames, offset, len, 0).is_ok() {
                each(self.region.slice(offset as usize, len as usize));
            }
            tail = tail.wrapping_add(1);
            count += 1;
        }
        ring.release(tail);
        count
    }

    /// Sleeps until a reply is queued, the node goes away, or `timeout_ms` passes.
    /// Returns false when the node closed the socket.
    pub fn wait(&self, timeout_ms: u64) -> bool {
        let ring = self.region.completion_ring();
        // A reply to a small request comes within microseconds: poll the ring for it first,
        // as the node polls its request rings, rather than pay a wake-up for every reply.
        let spin_until = Instant::now() + Duration::from_micros(SPIN_FOR_REPLY_US);
        // Bounded by the clock.
        while Instant::now() < spin_until {
            if ring.producer_head() != ring.own_tail() {
                return true;
            }
            std::hint::spin_loop();
        }
        let mut alive = true;
        if !ring.prepare_sleep() {
            let pollfd = |fd: i32| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let mut fds = [pollfd(self.completion_bell.as_raw_fd()), pollfd(self.stream.as_raw_fd())];
            let timeout_us = (timeout_ms.min(1000) * 1000) as u32;
            sys::poll(&mut fds, timeout_us);
            alive = fds[1].revents == 0;
        }
        ring.end_sleep();
        sys::drain(self.completion_bell.as_fd());
        alive
    }
}
