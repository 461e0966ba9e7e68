//! The node's side: the Unix socket, one region per client, the rings polled by the
//! data-plane thread. Requests are copied out of the client's frame into an arena frame
//! (so the client cannot change them under the parser, and the node engine and store see
//! the same frames as from the network); replies are copied from their arena frame into a
//! completion frame. Both copies are counted (`shm_bytes_copied`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use beeline_dataplane::arena::Arena;
use beeline_dataplane::io::{
    LOCAL_REQUESTS_PER_TURN, LocalRequest, RxBatch, RxPacket, TxPacket, local_client, local_peer,
};
use beeline_dataplane::wire::{self, ChunkId, HEADER_LEN, Opcode, Repr};
use tracing::{info, warn};

use super::ring::{BULK_DESCRIPTOR_BIT, Layout, Region, Reject, check_descriptor};
use super::{Hello, HelloStatus, sys};

/// Replies held for one client whose completion ring is full; more are dropped (the
/// protocol retransmits).
const BACKLOG_MAX: usize = 4096;
/// Every this many receive calls the listener and the clients' sockets are checked even
/// without a wake-up (a busy node never sleeps in `wait`).
const HOUSEKEEPING_TURNS: u32 = 64;
/// How long after a client's last request `wait` polls the request rings before it sleeps
/// on the doorbells (memif's polling mode, bounded): longer than a client takes to send
/// its next request after a reply, short enough to cost an idle node nothing.
const SPIN_AFTER_REQUEST_US: u64 = 50;

#[derive(Debug, Clone)]
pub struct ShmSettings {
    pub socket: PathBuf,
    /// File mode of the socket (who may connect).
    pub socket_mode: u32,
    pub clients_max: u32,
    pub ring_slots: u32,
    pub frame_bytes: u32,
    /// Whole-chunk slots of each client's bulk area, and their size (the node's largest
    /// chunk): the store writes and reads those in place.
    pub bulk_slots: u32,
    pub bulk_slot_bytes: u32,
    pub prefer_hugepages: bool,
    /// The node's UDP port, told to clients so that they know they reached the right node.
    pub node_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ShmServerError {
    #[error(
        "cannot serve shared memory on {path}: {source}; set shm_socket to a writable path, or shm = false to serve only UDP"
    )]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("another node already serves shared memory on {path}: give this node another port, or another shm_socket")]
    InUse { path: PathBuf },
    #[error(
        "bad shared-memory region: shm_ring_slots must be a power of two (got {slots}) and {bulk_slots} bulk slots of chunk_bytes_max ({bulk_slot_bytes} bytes) must fit in 4 GiB"
    )]
    Layout { slots: u32, bulk_slots: u32, bulk_slot_bytes: u32 },
}

#[derive(Debug, Default, Clone)]
pub struct ShmCounters {
    pub clients_accepted: u64,
    pub clients_refused: u64,
    pub clients_departed: u64,
    pub requests: u64,
    pub request_bytes: u64,
    pub replies: u64,
    pub reply_bytes: u64,
    pub replies_dropped: u64,
    pub bytes_copied: u64,
    /// Whole-chunk requests served in place, and the bytes they named.
    pub bulk_requests: u64,
    pub bulk_bytes: u64,
    pub rejected: [u64; Reject::ALL.len()],
}

struct Connection {
    id: u16,
    peer: SocketAddr,
    stream: UnixStream,
    region: Region,
    request_bell: OwnedFd,
    completion_bell: OwnedFd,
    backlog: VecDeque<TxPacket>,
    /// Set when the client broke its ring: it is dropped at the next housekeeping.
    broken: bool,
}

pub struct ShmServer {
    listener: UnixListener,
    path: PathBuf,
    settings: ShmSettings,
    layout: Layout,
    clients: Vec<Connection>,
    next_id: u16,
    next_client: usize,
    turns: u32,
    housekeeping_due: bool,
    /// When a client last queued a request: `wait` polls the rings for a while after it.
    last_request: Option<Instant>,
    /// `wait`'s descriptors, kept between calls (the listener, two per client, the network).
    pollfds: Vec<libc::pollfd>,
    departed: Vec<SocketAddr>,
    /// Bulk requests taken off the rings, served by the poll loop through `serve_local`.
    bulk: VecDeque<BulkRequest>,
    pub counters: ShmCounters,
}

/// A checked bulk request: which client, what, and where in its bulk area.
#[derive(Debug, Clone, Copy)]
struct BulkRequest {
    client: u16,
    put: bool,
    request_id: u64,
    chunk_id: ChunkId,
    /// Offset of the bulk slot in the client's region, and the bytes it names.
    at: usize,
    len: usize,
    /// Get: the first byte of the chunk to read.
    chunk_offset: u32,
    /// The client's hint (`flags::NOT_READ_SOON`): a put's chunk will not be read back
    /// soon; a get's client keeps what it reads.
    not_read_soon: bool,
}

impl ShmServer {
    pub fn bind(settings: ShmSettings) -> Result<ShmServer, ShmServerError> {
        let path = settings.socket.clone();
        let layout = Layout::new(
            settings.ring_slots,
            settings.frame_bytes.max(4096),
            settings.bulk_slots,
            settings.bulk_slot_bytes,
        )
        .ok_or(ShmServerError::Layout {
            slots: settings.ring_slots,
            bulk_slots: settings.bulk_slots,
            bulk_slot_bytes: settings.bulk_slot_bytes,
        })?;
        let bind_error = |source| ShmServerError::Bind { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(bind_error)?;
        }
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(ShmServerError::InUse { path });
            }
            // A socket file left by a node that died: nobody answers on it.
            std::fs::remove_file(&path).map_err(bind_error)?;
        }
        let listener = UnixListener::bind(&path).map_err(bind_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(settings.socket_mode)).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        info!(socket = %path.display(), mode = format!("{:o}", settings.socket_mode), "serving local clients over shared memory");
        let pollfds = Vec::with_capacity(3 + 2 * settings.clients_max as usize);
        Ok(ShmServer {
            listener,
            path,
            settings,
            layout,
            clients: Vec::new(),
            next_id: 1,
            next_client: 0,
            turns: 0,
            housekeeping_due: true,
            last_request: None,
            pollfds,
            departed: Vec::new(),
            bulk: VecDeque::with_capacity(layout.slots as usize),
            counters: ShmCounters::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Arena frames held for clients (replies waiting for completion-ring space).
    pub fn frames_held(&self) -> usize {
        self.clients.iter().map(|client| client.backlog.len()).sum()
    }

    pub fn region_bytes_mapped(&self) -> usize {
        self.clients.iter().map(|client| client.region.len()).sum()
    }

    /// Peers of clients gone since the last call: their puts can be abandoned.
    pub fn take_departed(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.departed)
    }

    /// Accepts new clients and drops dead ones, now and then or when `wait` saw activity.
    fn housekeeping(&mut self, arena: &mut Arena<'_>) {
        self.turns = self.turns.wrapping_add(1);
        if !self.housekeeping_due && !self.turns.is_multiple_of(HOUSEKEEPING_TURNS) {
            return;
        }
        self.housekeeping_due = false;
        // Bounded: a few new clients per pass.
        for _ in 0..4 {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    warn!(%error, "accepting a shared-memory client failed");
                    break;
                }
            }
        }
        let mut index = 0;
        while index < self.clients.len() {
            let client = &self.clients[index];
            let gone = client.broken || sys::peer_closed(&client.stream);
            if gone {
                let client = self.clients.swap_remove(index);
                self.counters.clients_departed += 1;
                info!(client = client.id, broken = client.broken, "shared-memory client gone; its region is unmapped");
                for packet in client.backlog {
                    arena.free(packet.frame);
                }
                self.departed.push(client.peer);
            } else {
                index += 1;
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        let credentials = sys::peer_credentials(&stream);
        let refuse = |stream: &UnixStream, status| {
            let hello = Hello {
                status,
                client_id: 0,
                node_port: 0,
                slots: 0,
                frame_bytes: 0,
                bulk_slots: 0,
                bulk_slot_bytes: 0,
                huge: false,
                region_bytes: 0,
            };
            let _ = sys::send_with_fds(stream, &hello.encode(), &[]);
        };
        if self.clients.len() >= self.settings.clients_max as usize {
            self.counters.clients_refused += 1;
            warn!(?credentials, clients_max = self.settings.clients_max, "shared-memory client refused: too many");
            refuse(&stream, HelloStatus::Full);
            return;
        }
        let (region, memfd, huge) = match self.make_region() {
            Ok(made) => made,
            Err(error) => {
                self.counters.clients_refused += 1;
                warn!(%error, "cannot make a shared-memory region for a client");
                refuse(&stream, HelloStatus::NoMemory);
                return;
            }
        };
        let bells = sys::eventfd().and_then(|request| Ok((request, sys::eventfd()?)));
        let Ok((request_bell, completion_bell)) = bells else {
            self.counters.clients_refused += 1;
            refuse(&stream, HelloStatus::NoMemory);
            return;
        };
        let id = self.fresh_id();
        let hello = Hello {
            status: HelloStatus::Accepted,
            client_id: id,
            node_port: self.settings.node_port,
            slots: self.layout.slots,
            frame_bytes: self.layout.frame_bytes,
            bulk_slots: self.layout.bulk_slots as u16,
            bulk_slot_bytes: self.layout.bulk_slot_bytes,
            huge,
            region_bytes: region.len() as u64,
        };
        let fds = [memfd.as_raw_fd(), request_bell.as_raw_fd(), completion_bell.as_raw_fd()];
        if let Err(error) = sys::send_with_fds(&stream, &hello.encode(), &fds) {
            warn!(%error, "the shared-memory hello could not be sent");
            return;
        }
        if let Err(error) = stream.set_nonblocking(true) {
            warn!(%error, "shared-memory client socket");
            return;
        }
        // The client holds its own descriptor now; the node keeps only the mapping.
        drop(memfd);
        let (pid, uid, gid) = credentials.unwrap_or((-1, u32::MAX, u32::MAX));
        info!(
            client = id,
            pid,
            uid,
            gid,
            pages = if huge { "hugepages-2M" } else { "normal-4K" },
            region_bytes = region.len(),
            "shared-memory client connected"
        );
        self.counters.clients_accepted += 1;
        self.clients.push(Connection {
            id,
            peer: local_peer(id),
            stream,
            region,
            request_bell,
            completion_bell,
            backlog: VecDeque::new(),
            broken: false,
        });
    }

    fn fresh_id(&mut self) -> u16 {
        // Bounded: fewer clients than ids, so a free one is found within clients_max + 1.
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.clients.iter().any(|client| client.id == id) {
                return id;
            }
        }
    }

    fn make_region(&self) -> std::io::Result<(Region, OwnedFd, bool)> {
        const HUGE_PAGE: usize = 2 << 20;
        if self.settings.prefer_hugepages {
            let len = self.layout.bytes.next_multiple_of(HUGE_PAGE);
            if let Ok(fd) = sys::memfd(len, true) {
                if let Ok(mut region) = Region::map(fd.as_fd(), len, self.layout) {
                    region.write_header();
                    return Ok((region, fd, true));
                }
            }
        }
        let fd = sys::memfd(self.layout.bytes, false)?;
        let mut region = Region::map(fd.as_fd(), self.layout.bytes, self.layout)?;
        region.write_header();
        Ok((region, fd, false))
    }

    /// Takes requests from the clients' rings into arena frames, up to `out`'s room; the
    /// clients take turns so that one cannot starve the others.
    pub fn recv(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> usize {
        self.housekeeping(arena);
        let count = self.clients.len();
        let mut received = 0;
        for turn in 0..count {
            let index = (self.next_client + turn) % count;
            received += self.recv_from(index, arena, out);
            self.flush_backlog(index, arena);
            if out.is_full() {
                break;
            }
        }
        if count > 0 {
            self.next_client = (self.next_client + 1) % count;
        }
        received
    }

    fn recv_from(&mut self, index: usize, arena: &mut Arena<'_>, out: &mut RxBatch) -> usize {
        let headroom = arena.headroom();
        let room = arena.frame_size() - headroom;
        let client = &mut self.clients[index];
        if client.broken {
            return 0;
        }
        let ring = client.region.request_ring();
        let head = ring.producer_head();
        let mut tail = ring.own_tail();
        if head.wrapping_sub(tail) > self.layout.slots {
            self.counters.rejected[Reject::BadIndex as usize] += 1;
            client.broken = true;
            self.housekeeping_due = true;
            warn!(client = client.id, "shared-memory client wrote a bad ring index; disconnecting it");
            return 0;
        }
        let mut received = 0;
        // Bulk requests wait in `self.bulk`, at most a ring's worth.
        while tail != head && !out.is_full() && self.bulk.len() < self.layout.slots as usize {
            let (offset, len) = ring.descriptor(tail);
            if len & BULK_DESCRIPTOR_BIT != 0 {
                let request = check_descriptor(
                    &self.layout,
                    self.layout.request_frames,
                    offset,
                    len & !BULK_DESCRIPTOR_BIT,
                    HEADER_LEN,
                )
                .and_then(|()| parse_bulk(&client.region, client.id, offset as usize));
                match request {
                    Ok(request) => {
                        self.counters.requests += 1;
                        self.last_request = Some(Instant::now());
                        self.bulk.push_back(request);
                    }
                    Err(reason) => self.counters.rejected[reason as usize] += 1,
                }
                tail = tail.wrapping_add(1);
                continue;
            }
            let checked = check_descriptor(&self.layout, self.layout.request_frames, offset, len, HEADER_LEN)
                .and(if len as usize > room { Err(Reject::BadLength) } else { Ok(()) });
            if let Err(reason) = checked {
                self.counters.rejected[reason as usize] += 1;
                tail = tail.wrapping_add(1);
                continue;
            }
            let Some(frame) = arena.alloc() else { break };
            let len = len as usize;
            client.region.read(offset as usize, &mut arena.frame_mut(&frame)[headroom..headroom + len]);
            tail = tail.wrapping_add(1);
            self.last_request = Some(Instant::now());
            self.counters.requests += 1;
            self.counters.request_bytes += len as u64;
            self.counters.bytes_copied += len as u64;
            let packet = RxPacket { frame, offset: headroom as u16, len: len as u16, peer: client.peer };
            let pushed = out.push(packet);
            assert!(pushed.is_ok(), "checked is_full");
            received += 1;
        }
        ring.release(tail);
        received
    }

    /// Hands the poll loop's node the bulk requests taken off the rings, at most
    /// `LOCAL_REQUESTS_PER_TURN`, each with its bulk slot to write from or read into.
    pub fn serve_local(&mut self, serve: &mut dyn FnMut(LocalRequest<'_>)) -> usize {
        let mut served = 0;
        while served < LOCAL_REQUESTS_PER_TURN {
            let Some(request) = self.bulk.pop_front() else { break };
            // A client that left meanwhile: its region is gone, and so is the request.
            let Some(client) = self.clients.iter_mut().find(|client| client.id == request.client) else { continue };
            let bytes = client.region.bulk_mut(request.at, request.len);
            let peer = client.peer;
            let local = if request.put {
                LocalRequest::Put {
                    peer,
                    request_id: request.request_id,
                    chunk_id: request.chunk_id,
                    data: bytes,
                    not_read_soon: request.not_read_soon,
                }
            } else {
                LocalRequest::Get {
                    peer,
                    request_id: request.request_id,
                    chunk_id: request.chunk_id,
                    offset: request.chunk_offset,
                    out: bytes,
                    not_read_soon: request.not_read_soon,
                }
            };
            self.counters.bulk_requests += 1;
            self.counters.bulk_bytes += request.len as u64;
            serve(local);
            served += 1;
        }
        served
    }

    /// Queues a reply for its client (or frees it when the client is gone).
    pub fn send(&mut self, arena: &mut Arena<'_>, packet: TxPacket) {
        let Some(index) = local_client(&packet.peer).and_then(|id| self.clients.iter().position(|c| c.id == id)) else {
            self.counters.replies_dropped += 1;
            arena.free(packet.frame);
            return;
        };
        let client = &mut self.clients[index];
        if client.backlog.len() >= BACKLOG_MAX {
            self.counters.replies_dropped += 1;
            arena.free(packet.frame);
            return;
        }
        client.backlog.push_back(packet);
    }

    /// Moves queued replies into free completion slots and rings the client if it sleeps.
    pub fn flush_all(&mut self, arena: &mut Arena<'_>) {
        for index in 0..self.clients.len() {
            self.flush_backlog(index, arena);
        }
    }

    fn flush_backlog(&mut self, index: usize, arena: &mut Arena<'_>) {
        let client = &mut self.clients[index];
        if client.backlog.is_empty() {
            return;
        }
        let ring = client.region.completion_ring();
        let mut head = ring.own_head();
        let tail = ring.consumer_tail();
        let mut produced = false;
        while head.wrapping_sub(tail) < self.layout.slots {
            let Some(packet) = client.backlog.pop_front() else { break };
            let start = usize::from(packet.offset);
            let bytes = &arena.frame(&packet.frame)[start..start + usize::from(packet.len)];
            let at = self.layout.completion_frame(head);
            client.region.write(at, bytes);
            ring.set_descriptor(head, at as u32, bytes.len() as u32);
            self.counters.replies += 1;
            self.counters.reply_bytes += bytes.len() as u64;
            self.counters.bytes_copied += bytes.len() as u64;
            arena.free(packet.frame);
            head = head.wrapping_add(1);
            produced = true;
        }
        if produced {
            ring.publish(head);
            if ring.consumer_sleeps() {
                sys::ring(client.completion_bell.as_fd());
            }
        }
    }

    /// Sleeps until a client rings, connects or leaves, `extra` (the network socket) is
    /// readable, or `timeout_us` passes. Returns whether something may be ready.
    pub fn wait(&mut self, extra: Option<i32>, timeout_us: u32) -> bool {
        if !self.bulk.is_empty() {
            return true;
        }
        if self.spin_for_requests() {
            return true;
        }
        let backlog = self.clients.iter().any(|client| !client.backlog.is_empty());
        let timeout_us = if backlog { timeout_us.min(100) } else { timeout_us };
        let mut work = false;
        for client in &self.clients {
            work |= client.region.request_ring().prepare_sleep();
        }
        if !work {
            let pollfd = |fd: i32| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let fds = &mut self.pollfds;
            fds.clear();
            fds.push(pollfd(self.listener.as_raw_fd()));
            for client in &self.clients {
                fds.push(pollfd(client.request_bell.as_raw_fd()));
                fds.push(pollfd(client.stream.as_raw_fd()));
            }
            fds.extend(extra.map(pollfd));
            work = sys::poll(fds, timeout_us) > 0;
            if fds[0].revents != 0 || fds.iter().skip(2).step_by(2).take(self.clients.len()).any(|fd| fd.revents != 0) {
                self.housekeeping_due = true;
            }
        }
        for client in &self.clients {
            client.region.request_ring().end_sleep();
            sys::drain(client.request_bell.as_fd());
        }
        work
    }

    /// Within `SPIN_AFTER_REQUEST_US` of a client's last request, polls the request rings
    /// (no system call) until one holds something or that time is up; says which. A
    /// client with one request in flight sends its next within microseconds of the reply,
    /// and sleeping on the doorbell would add a wake-up on each side to every request.
    fn spin_for_requests(&self) -> bool {
        let Some(last) = self.last_request else { return false };
        let spin_until = last + Duration::from_micros(SPIN_AFTER_REQUEST_US);
        // Bounded by the clock: at most `SPIN_AFTER_REQUEST_US` after the last request.
        while Instant::now() < spin_until {
            let queued = self.clients.iter().any(|client| {
                let ring = client.region.request_ring();
                ring.producer_head() != ring.own_tail()
            });
            if queued {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    pub fn counter_pairs(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        let mut pairs: Vec<(String, u64)> = [
            ("shm_clients_connected", self.clients.len() as u64),
            ("shm_frames_held", self.frames_held() as u64),
            ("shm_region_bytes_mapped", self.region_bytes_mapped() as u64),
            ("shm_clients_accepted", c.clients_accepted),
            ("shm_clients_refused", c.clients_refused),
            ("shm_clients_departed", c.clients_departed),
            ("shm_requests", c.requests),
            ("shm_request_bytes", c.request_bytes),
            ("shm_replies", c.replies),
            ("shm_reply_bytes", c.reply_bytes),
            ("shm_replies_dropped", c.replies_dropped),
            ("shm_bytes_copied", c.bytes_copied),
            ("shm_bulk_requests", c.bulk_requests),
            ("shm_bulk_bytes", c.bulk_bytes),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        pairs.extend(
            Reject::ALL.iter().map(|reason| (format!("shm_rejected_{}", reason.name()), c.rejected[*reason as usize])),
        );
        pairs
    }
}

/// Reads and checks the bulk request in the request frame at `at`: a header (copied out
/// of shared memory first, so the client cannot change it under the checks) whose opcode
/// is `PutFrag` or `Get`, `index` a bulk slot, `total_len` the bytes in (put) or wanted
/// from (get) that slot, and for a get `count` the first byte of the chunk to read.
fn parse_bulk(region: &Region, client: u16, at: usize) -> Result<BulkRequest, Reject> {
    let layout = region.layout();
    let mut header = [0u8; HEADER_LEN];
    region.read(at, &mut header);
    let packet = wire::Packet::new_checked(&header[..]).map_err(|_| Reject::BadBulk)?;
    let repr = Repr::parse(&packet);
    let put = match repr.opcode {
        Opcode::PutFrag => true,
        Opcode::Get => false,
        _ => return Err(Reject::BadBulk),
    };
    let slot_at = layout.bulk_slot(repr.index).ok_or(Reject::BadBulk)?;
    if repr.payload_len != 0 || repr.total_len > layout.bulk_slot_bytes {
        return Err(Reject::BadBulk);
    }
    Ok(BulkRequest {
        client,
        put,
        request_id: repr.request_id,
        chunk_id: repr.chunk_id,
        at: slot_at,
        len: repr.total_len as usize,
        chunk_offset: if put { 0 } else { repr.count },
        not_read_soon: repr.flags & wire::flags::NOT_READ_SOON != 0,
    })
}

impl Drop for ShmServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
