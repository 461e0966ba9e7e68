//! The client library under the CLI: talks to one node over the storage protocol,
//! streaming files chunk by chunk (never the whole file in memory) with several chunks
//! in flight, and runs control requests for the namespace.

mod bulk;
pub mod cluster;
mod file;
pub use file::new_file_id;
mod link;
pub mod metadata;
mod op;
mod socket;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use beeline_dataplane::bitmap::FRAGMENTS_MAX;
use beeline_dataplane::client::{
    self, ClientError as MachineError, DATAGRAM_BYTES_MAX, Exchange, GetChunk, Progress, PutChunk, Timing, Transmit,
};
use beeline_dataplane::session::peer::SessionTx;
use beeline_dataplane::wire::{self, ClusterKey, HEADER_LEN, Opcode, Repr, Status};

use crate::control::{ControlRequest, ControlResponse, FileRecord, NodeStatus};
use crate::shm::client::{ShmError, ShmLink};
use bulk::{BulkGet, BulkPut, BulkSlots};
use link::Link;
use op::Op;
use socket::{Receiver, SendBatch};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "node {node} did not answer after {retries} retries: is `beeline node run` running there, is --node right, and does this machine have the node's cluster key?"
    )]
    Unreachable { node: SocketAddr, retries: u32 },
    #[error("no file named {name:?} on node {node}: `beeline ls` lists the files")]
    NotFound { name: String, node: SocketAddr },
    #[error("node {node}'s disk is full: remove files with `beeline rm` or give the node more space")]
    DiskFull { node: SocketAddr },
    #[error("node {node} is busy and stayed busy: retry later")]
    Busy { node: SocketAddr },
    #[error("node {node} refused the request ({status:?}): {hint}")]
    Rejected { node: SocketAddr, status: Status, hint: &'static str },
    #[error("node {node} answered inconsistently: {what}; the node may run a different version")]
    Protocol { node: SocketAddr, what: String },
    #[error("node {node} could not do it: {reason}")]
    Failed { node: SocketAddr, reason: String },
    #[error("{path}: {source}")]
    LocalIo { path: String, source: std::io::Error },
    #[error("cannot open a UDP socket to talk to {node}: {source}")]
    Socket { node: SocketAddr, source: std::io::Error },
    #[error(
        "{name} came back with different content than was stored (BLAKE3 mismatch); the copy on the node is damaged"
    )]
    Corrupt { name: String },
    #[error(
        "node {node} refused to serve a damaged copy (it failed its checksum on the node's disk; none of its bytes were sent): in a cluster run `beeline cluster scrub` then `beeline cluster repair`; a single node holds no other copy, so put the file again from its source"
    )]
    CorruptCopy { node: SocketAddr },
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    Shm(#[from] ShmError),
    #[error(
        "--transport shm needs the node on this host, and {node} is not an address of this host: use --transport udp or auto"
    )]
    ShmNotLocal { node: SocketAddr },
    #[error(
        "datagrams of {bytes} bytes do not fit the path to node {node} (its MTU): use a smaller --fragment-bytes (the MTU minus 128 fits IPv4 and IPv6)"
    )]
    DatagramTooLarge { node: SocketAddr, bytes: usize },
}

/// What a node told us about itself in its Pong.
#[derive(Debug, Clone, Copy)]
pub struct NodeInfo {
    pub fragment_bytes_max: u16,
    pub window_fragments: u16,
    pub chunk_bytes_max: u32,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub node: SocketAddr,
    pub key: ClusterKey,
    pub timing: Timing,
    /// Fragment payload per datagram; `None` picks the node's maximum on loopback and
    /// [`NETWORK_FRAGMENT_BYTES`] elsewhere.
    pub fragment_bytes: Option<u16>,
    /// Chunks in flight at once per file.
    pub parallel_chunks: usize,
    pub chunk_bytes: u32,
    /// A session older than this is replaced by a new handshake (the node ends sessions
    /// at twice this age by default).
    pub rekey_after_ms: u64,
    pub transport: Transport,
    /// The node's shared-memory socket; `None` = the default path for its port.
    pub shm_socket: Option<std::path::PathBuf>,
    /// Puts tell the node their chunks will not be read back soon (`flags::NOT_READ_SOON`):
    /// it then drops their pages from its page cache once durable. For bulk copies in,
    /// such as the mount's write-behind; a GET right after such a PUT reads the disk.
    pub puts_not_read_soon: bool,
    /// Gets tell the node this client keeps what it reads (`flags::NOT_READ_SOON`): it then
    /// drops a chunk's pages from its page cache once a get has read the chunk through.
    /// For readers with a cache of their own, such as the mount (the kernel's page cache
    /// of its files); a second read of the same chunk reads the node's disk.
    pub gets_not_read_soon: bool,
}

/// How a client reaches its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Shared memory when the node is on this host and its socket answers, else UDP.
    Auto,
    /// Shared memory or fail.
    Shm,
    /// The storage protocol over UDP.
    Udp,
}

/// Fragment payload that keeps a datagram within a 1500-byte MTU over IPv6 (40-byte IP and
/// 8-byte UDP headers) and so over IPv4 too: larger ones would need IP fragmentation, which
/// the kernel refuses for segmented sends and UDP sockets with path-MTU discovery on.
pub const NETWORK_FRAGMENT_BYTES: u16 = (1500 - 40 - 8 - HEADER_LEN) as u16;

/// Rekey after two minutes: half the node's default session lifetime.
pub const REKEY_AFTER_MS_DEFAULT: u64 = 120_000;

impl ClientOptions {
    pub fn new(node: SocketAddr, key: ClusterKey) -> Self {
        Self {
            node,
            key,
            timing: Timing { rto_initial_ms: 40, rto_max_ms: 1000, timeouts_max: 8 },
            fragment_bytes: None,
            parallel_chunks: 4,
            chunk_bytes: 4 << 20,
            rekey_after_ms: REKEY_AFTER_MS_DEFAULT,
            transport: Transport::Auto,
            shm_socket: None,
            puts_not_read_soon: false,
            gets_not_read_soon: false,
        }
    }
}

/// Hands the machines' datagrams to the send batch, sealed with the session where they
/// lie in it; whatever is still queued goes out when it is dropped, so every call that
/// may transmit ends with its datagrams sent.
struct SocketTransmit<'a> {
    socket: &'a UdpSocket,
    batch: &'a mut SendBatch,
    session: &'a mut Option<SessionTx>,
}

impl<'a> SocketTransmit<'a> {
    fn new(socket: &'a UdpSocket, batch: &'a mut SendBatch, session: &'a mut Option<SessionTx>) -> Self {
        Self { socket, batch, session }
    }
}

impl Transmit for SocketTransmit<'_> {
    fn transmit(&mut self, header: &[u8], payload: &[u8]) {
        // Without a session (none yet, or none left) the datagram is lost, as is one whose
        // send fails: the protocol's retransmission covers both.
        let Some(session) = self.session.as_mut() else { return };
        self.batch.push(self.socket, header, payload, |bytes| session.seal(bytes).is_ok());
    }
}

impl Drop for SocketTransmit<'_> {
    fn drop(&mut self) {
        self.batch.flush(self.socket);
    }
}

/// Writes the machines' requests into the shared-memory request ring: plaintext, no
/// session (the Unix socket's permission is the access control).
struct ShmTransmit<'a> {
    link: &'a ShmLink,
}

impl Transmit for ShmTransmit<'_> {
    fn transmit(&mut self, header: &[u8], payload: &[u8]) {
        // A request the full ring cannot take in time is lost like a datagram: retransmitted.
        self.link.send(header, payload);
    }
}

/// The transmit of whichever transport the client uses.
enum AnyTransmit<'a> {
    Udp(SocketTransmit<'a>),
    Shm(ShmTransmit<'a>),
}

impl Transmit for AnyTransmit<'_> {
    fn transmit(&mut self, header: &[u8], payload: &[u8]) {
        match self {
            AnyTransmit::Udp(udp) => udp.transmit(header, payload),
            AnyTransmit::Shm(shm) => shm.transmit(header, payload),
        }
    }
}

fn transmitter<'a>(
    shm: &'a Option<ShmLink>,
    socket: &'a UdpSocket,
    batch: &'a mut SendBatch,
    session: &'a mut Option<SessionTx>,
) -> AnyTransmit<'a> {
    match shm {
        Some(link) => AnyTransmit::Shm(ShmTransmit { link }),
        None => AnyTransmit::Udp(SocketTransmit::new(socket, batch, session)),
    }
}

/// Whether `ip` is an address of this host: loopback, or one a socket can bind to.
fn is_local_address(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The shared-memory link `options` asks for: `None` for UDP.
fn open_shm(options: &ClientOptions) -> Result<Option<ShmLink>, ClientError> {
    let node = options.node;
    if options.transport == Transport::Udp {
        return Ok(None);
    }
    if !is_local_address(node.ip()) {
        return match options.transport {
            Transport::Shm => Err(ClientError::ShmNotLocal { node }),
            _ => Ok(None),
        };
    }
    let path = options.shm_socket.clone().unwrap_or_else(|| crate::shm::default_socket_path(node.port()));
    match ShmLink::connect(&path, node.port()) {
        Ok(link) => Ok(Some(link)),
        Err(error) if options.transport == Transport::Shm => Err(error.into()),
        // No socket, or nobody behind it: no node on this host offers shared memory at
        // that path (it runs elsewhere, not as root, or is down); UDP without a word.
        Err(ShmError::Connect { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            Ok(None)
        }
        Err(error) => {
            eprintln!("beeline: notice: using UDP to {node}, not shared memory: {error}");
            Ok(None)
        }
    }
}

/// Chunk bytes a put sends: a reusable buffer, or one shared by several replicas.
pub enum ChunkBytes {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl AsRef<[u8]> for ChunkBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            ChunkBytes::Owned(bytes) => bytes,
            ChunkBytes::Shared(bytes) => bytes,
        }
    }
}

pub struct Client {
    socket: UdpSocket,
    /// The shared-memory link to a node on this host; UDP when `None`.
    shm: Option<ShmLink>,
    options: ClientOptions,
    started: Instant,
    next_request_id: u64,
    info: Option<NodeInfo>,
    batch: SendBatch,
    receiver: Receiver,
    link: Link,
    /// The socket's receive buffer as granted: bounds how much a get asks for at once.
    receive_buffer_bytes: usize,
    /// Which bulk slots of the shared-memory region requests hold.
    bulk_slots: BulkSlots,
}

/// Progress callback: bytes done so far.
pub type OnProgress<'a> = &'a mut dyn FnMut(u64);

impl Client {
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        let node = options.node;
        let bind: SocketAddr =
            if node.is_ipv4() { "0.0.0.0:0".parse().expect("constant") } else { "[::]:0".parse().expect("constant") };
        let socket = UdpSocket::bind(bind).map_err(|source| ClientError::Socket { node, source })?;
        let receive_buffer_bytes = enlarge_receive_buffer(&socket, 16 << 20);
        socket.set_nonblocking(true).map_err(|source| ClientError::Socket { node, source })?;
        // Connected: the kernel drops datagrams from anyone but the node, and sends need no
        // address (the segmented sends of `socket::SendBatch` rely on that).
        socket.connect(node).map_err(|source| ClientError::Socket { node, source })?;
        let receiver = Receiver::new(&socket);
        let link = Link::new(&options.key, options.timing, options.rekey_after_ms);
        let shm = open_shm(&options)?;
        let receive_buffer_bytes = shm.as_ref().map(ShmLink::completion_bytes).unwrap_or(receive_buffer_bytes);
        Ok(Self {
            socket,
            shm,
            options,
            started: Instant::now(),
            next_request_id: rand::random::<u64>() >> 1,
            info: None,
            batch: SendBatch::new(),
            receiver,
            link,
            receive_buffer_bytes,
            bulk_slots: BulkSlots::default(),
        })
    }

    /// Starts a put of one chunk: a bulk put when a shared-memory bulk slot is free and
    /// holds the chunk, else fragments.
    fn start_put(&mut self, chunk_id: u128, data: ChunkBytes, frag_len: u16, window: u16) -> Op {
        let request_id = self.request_id();
        let now_ms = self.now_ms();
        let timing = self.options.timing;
        let hint = if self.options.puts_not_read_soon { wire::flags::NOT_READ_SOON } else { 0 };
        if let Some(link) = self.shm.as_ref().filter(|link| data.as_ref().len() <= link.bulk_slot_bytes()) {
            if let Some(slot) = self.bulk_slots.take(link.bulk_slots()) {
                let mut put = BulkPut::new(link, slot, chunk_id, request_id, data, hint, timing, now_ms);
                put.start(link);
                return Op::BulkPut(Box::new(put));
            }
        }
        let mut put = PutChunk::new(chunk_id, request_id, data, frag_len, window, timing, now_ms).with_flags(hint);
        put.start(now_ms, &mut transmitter(&self.shm, &self.socket, &mut self.batch, &mut self.link.tx));
        Op::Put(Box::new(put))
    }

    /// Starts a get of `len` bytes of a chunk of `total_len` from `range_start` into
    /// `out`, storage whose contents do not matter (a recycled buffer, or an empty one): a
    /// bulk get when a shared-memory bulk slot is free and holds them, else fragments.
    #[allow(clippy::too_many_arguments)]
    fn start_get(
        &mut self,
        chunk_id: u128,
        total_len: u32,
        range_start: u32,
        len: u32,
        mut out: Vec<u8>,
        frag_len: u16,
        window: u16,
    ) -> Op {
        let request_id = self.request_id();
        let now_ms = self.now_ms();
        let timing = self.options.timing;
        let hint = if self.options.gets_not_read_soon { wire::flags::NOT_READ_SOON } else { 0 };
        if let Some(link) = self.shm.as_ref().filter(|link| len as usize <= link.bulk_slot_bytes()) {
            if let Some(slot) = self.bulk_slots.take(link.bulk_slots()) {
                let range = range_start..range_start + len;
                let mut get = BulkGet::new(slot, chunk_id, request_id, range, out, hint, timing, now_ms);
                get.start(link);
                return Op::BulkGet(Box::new(get));
            }
        }
        // The fragments land wherever they belong, so the machine needs the whole length.
        // Fresh storage comes zeroed from the allocator (`calloc`: pages the kernel zeroes
        // as they are first touched); a recycled buffer zeroes only its growth.
        if out.capacity() == 0 {
            out = vec![0u8; len as usize];
        } else {
            out.resize(len as usize, 0);
        }
        let mut get =
            GetChunk::new(chunk_id, request_id, total_len, range_start, out, frag_len, window, timing, now_ms)
                .with_flags(hint);
        get.start(&mut transmitter(&self.shm, &self.socket, &mut self.batch, &mut self.link.tx));
        Op::Get(Box::new(get))
    }

    /// Fragments to request at once per get with `gets_in_flight` of them in flight.
    fn get_window(&mut self, frag_len: u16, gets_in_flight: usize) -> Result<u16, ClientError> {
        let node_window = self.info()?.window_fragments;
        Ok(window_for_buffer(self.receive_buffer_bytes, frag_len, node_window, gets_in_flight))
    }

    /// The shared-memory link's bulk slots, when there is a link and its slots hold chunks
    /// of `chunk_bytes`.
    fn bulk_slots_holding(&self, chunk_bytes: u32) -> Option<u32> {
        self.shm.as_ref().filter(|link| chunk_bytes as usize <= link.bulk_slot_bytes()).map(|link| link.bulk_slots())
    }

    /// Whether requests go through shared memory (else UDP).
    pub fn uses_shm(&self) -> bool {
        self.shm.is_some()
    }

    /// Handshakes completed with the node so far (the first one, rekeys, and new sessions
    /// after the node fell silent).
    pub fn handshakes(&self) -> u64 {
        self.link.state.handshakes
    }

    /// Runs the handshake now unless a session exists; bounded by the retry budget.
    fn ensure_session(&mut self) -> Result<(), ClientError> {
        if self.shm.is_some() {
            return Ok(());
        }
        let attempts_max = u64::from(self.options.timing.timeouts_max) + 1;
        let mut attempts = 0u64;
        // Bounded: every pass waits for an answer or the attempt's deadline.
        while !self.link.has_session() {
            let now = self.now_ms();
            let before = self.link.deadline_ms();
            self.link.poll(now, true, &self.socket);
            if self.link.deadline_ms() != before {
                attempts += 1;
                if attempts > attempts_max {
                    let node = self.options.node;
                    return Err(ClientError::Unreachable { node, retries: self.options.timing.timeouts_max });
                }
            }
            let wait_ms = self.link.deadline_ms().unwrap_or(now).saturating_sub(now).max(1);
            wait_readable(&self.socket, wait_ms);
            while let Some((bytes, datagram_bytes)) = self.receiver.recv(&self.socket) {
                for datagram in bytes.chunks_mut(datagram_bytes) {
                    if wire::is_handshake(datagram) {
                        self.link.state.on_handshake(self.started.elapsed().as_millis() as u64, datagram, &self.socket);
                    }
                }
            }
            self.link.settle();
        }
        Ok(())
    }

    pub fn set_chunk_bytes(&mut self, chunk_bytes: u32) {
        assert!(chunk_bytes > 0);
        self.options.chunk_bytes = chunk_bytes;
    }

    pub fn node(&self) -> SocketAddr {
        self.options.node
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn request_id(&mut self) -> u64 {
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.next_request_id
    }

    fn error(&self, error: MachineError) -> ClientError {
        let node = self.options.node;
        match error {
            MachineError::Unreachable => match self.batch.too_large_bytes {
                Some(bytes) => ClientError::DatagramTooLarge { node, bytes },
                None => ClientError::Unreachable { node, retries: self.options.timing.timeouts_max },
            },
            MachineError::Rejected(Status::DiskFull) => ClientError::DiskFull { node },
            MachineError::Rejected(Status::Busy) => ClientError::Busy { node },
            MachineError::Rejected(Status::Corrupt) => ClientError::CorruptCopy { node },
            MachineError::Rejected(Status::TooLarge) => ClientError::Rejected {
                node,
                status: Status::TooLarge,
                hint: "the chunk is larger than the node accepts; use a smaller --chunk-bytes",
            },
            MachineError::Rejected(status) => ClientError::Rejected {
                node,
                status,
                hint: "this is a bug or a version mismatch between client and node",
            },
            MachineError::Inconsistent => {
                ClientError::Protocol { node, what: "a reply did not match its request".into() }
            }
        }
    }

    /// Runs machines until at least one of them settles (or none is pending), or until a
    /// put has every fragment on the node and only waits for its disk (so the caller can
    /// start the next chunk while that one is made durable); returns the index of every
    /// machine that settled during this call. With `fail_fast`, a machine that failed is
    /// returned as an error instead.
    fn drive(&mut self, ops: &mut [Op], fail_fast: bool) -> Result<Vec<usize>, ClientError> {
        self.drive_until(ops, fail_fast, None)
    }

    /// Like [`Client::drive`], returning by `until_ms` (on this client's clock) at the
    /// latest, with what settled by then (perhaps nothing): the machines keep moving while
    /// the caller waits for something else, such as a reader that has no bytes yet.
    // Long on purpose: one loop (settle, wait, receive and dispatch, timers) whose borrows of the socket, batch and session must stay side by side.
    fn drive_until(
        &mut self,
        ops: &mut [Op],
        fail_fast: bool,
        until_ms: Option<u64>,
    ) -> Result<Vec<usize>, ClientError> {
        let mut finished = Vec::new();
        let mut was_pending: Vec<bool> = ops.iter().map(|op| op.progress() == Progress::Pending).collect();
        let sending_at_start = ops.iter().filter(|op| op.is_sending_put()).count();
        // Bounded: every machine fails by itself after its retries run out.
        loop {
            for (index, op) in ops.iter().enumerate() {
                if was_pending[index] && op.progress() != Progress::Pending {
                    was_pending[index] = false;
                    finished.push(index);
                    if let (true, Progress::Failed(error)) = (fail_fast, op.progress()) {
                        return Err(self.error(error));
                    }
                }
            }
            if !finished.is_empty()
                || !was_pending.iter().any(|pending| *pending)
                || ops.iter().filter(|op| op.is_sending_put()).count() < sending_at_start
            {
                return Ok(finished);
            }
            let now = self.now_ms();
            if until_ms.is_some_and(|until| now >= until) {
                return Ok(finished);
            }
            let wait_max_ms = until_ms.map_or(u64::MAX, |until| until - now);
            if self.shm.is_some() {
                self.drive_shm_once(ops, wait_max_ms)?;
                continue;
            }
            // A silent node, an old session or a lost attempt starts a handshake.
            self.link.poll(now, true, &self.socket);
            let next_deadline = ops
                .iter()
                .filter(|op| op.progress() == Progress::Pending)
                .map(Op::deadline_ms)
                .chain(self.link.deadline_ms())
                .min()
                .unwrap_or(now);
            let wait_ms = next_deadline.saturating_sub(now).clamp(1, wait_max_ms);
            wait_readable(&self.socket, wait_ms);
            let mut transmit = transmitter(&self.shm, &self.socket, &mut self.batch, &mut self.link.tx);
            // Read everything that is waiting (the socket is non-blocking and connected to the
            // node, so nothing else arrives), then run timers.
            while let Some((bytes, datagram_bytes)) = self.receiver.recv(&self.socket) {
                let now = self.started.elapsed().as_millis() as u64;
                for datagram in bytes.chunks_mut(datagram_bytes) {
                    if wire::is_handshake(datagram) {
                        self.link.state.on_handshake(now, datagram, &self.socket);
                        continue;
                    }
                    // Opened in place: the payload is plaintext from here on.
                    let Some(repr) = self.link.state.open(now, datagram) else { continue };
                    let payload = &datagram[HEADER_LEN..HEADER_LEN + usize::from(repr.payload_len)];
                    for op in ops.iter_mut() {
                        op.on_packet(&repr, payload, now, &mut transmit, None);
                    }
                }
            }
            let now = self.started.elapsed().as_millis() as u64;
            for op in ops.iter_mut() {
                op.on_timer_if_due(now, &mut transmit, None);
            }
            drop(transmit);
            self.link.settle();
        }
    }

    /// One pass of `drive` over shared memory: wait for replies (or the next timer),
    /// hand each to the machines, run timers.
    fn drive_shm_once(&mut self, ops: &mut [Op], wait_max_ms: u64) -> Result<(), ClientError> {
        let link = self.shm.as_ref().expect("called with a link");
        let now = self.started.elapsed().as_millis() as u64;
        let next_deadline =
            ops.iter().filter(|op| op.progress() == Progress::Pending).map(Op::deadline_ms).min().unwrap_or(now);
        if !link.wait(next_deadline.saturating_sub(now).clamp(1, wait_max_ms.max(1))) {
            // The node stopped: wait for it to come back, as the UDP path's retries do; the
            // machines' timers then resend whatever the old region held.
            self.shm = Some(self.reconnect_shm()?);
        }
        let link = self.shm.as_ref().expect("connected");
        let mut transmit = ShmTransmit { link };
        let started = self.started;
        link.receive(|message| {
            let Ok(packet) = wire::Packet::new_checked(message) else { return };
            let repr = Repr::parse(&packet);
            let payload = packet.payload();
            let now = started.elapsed().as_millis() as u64;
            for op in ops.iter_mut() {
                op.on_packet(&repr, payload, now, &mut transmit, Some(link));
            }
        });
        let now = self.started.elapsed().as_millis() as u64;
        for op in ops.iter_mut() {
            op.on_timer_if_due(now, &mut transmit, Some(link));
        }
        Ok(())
    }

    /// A new shared-memory link after the node closed the old one (it stopped or
    /// restarted), tried every 50 ms for as long as a request's retries would last.
    fn reconnect_shm(&self) -> Result<ShmLink, ClientError> {
        let timing = self.options.timing;
        let mut budget_ms = 0u64;
        let mut rto_ms = timing.rto_initial_ms;
        for _ in 0..=timing.timeouts_max {
            budget_ms += rto_ms;
            rto_ms = (rto_ms * 2).min(timing.rto_max_ms);
        }
        let node = self.options.node;
        let path = self.options.shm_socket.clone().unwrap_or_else(|| crate::shm::default_socket_path(node.port()));
        let deadline = Instant::now() + std::time::Duration::from_millis(budget_ms);
        // Bounded by the deadline.
        loop {
            match ShmLink::connect(&path, node.port()) {
                Ok(link) => return Ok(link),
                Err(_) if Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(_) => return Err(ClientError::Unreachable { node, retries: timing.timeouts_max }),
            }
        }
    }

    fn exchange(&mut self, request: Repr, payload: &[u8], expect: Opcode) -> Result<(Repr, Vec<u8>), ClientError> {
        self.ensure_session()?;
        let request = Repr { request_id: self.request_id(), ..request };
        let mut exchange = Exchange::new(request, payload, expect, self.options.timing, self.now_ms());
        exchange.start(&mut transmitter(&self.shm, &self.socket, &mut self.batch, &mut self.link.tx));
        let mut ops = [Op::Exchange(Box::new(exchange))];
        self.drive(&mut ops, true)?;
        let Op::Exchange(exchange) = &ops[0] else { unreachable!("built above") };
        let (repr, payload) = exchange.reply().ok_or_else(|| self.error(MachineError::Inconsistent))?;
        Ok((*repr, payload.to_vec()))
    }

    /// Checks the node answers, and learns its limits.
    pub fn ping(&mut self) -> Result<NodeInfo, ClientError> {
        let (pong, _) = self.exchange(Repr::new(Opcode::Ping), &[], Opcode::Pong)?;
        let info = NodeInfo {
            fragment_bytes_max: pong.frag_len,
            window_fragments: pong.credits.max(1),
            chunk_bytes_max: pong.total_len,
        };
        self.info = Some(info);
        Ok(info)
    }

    fn info(&mut self) -> Result<NodeInfo, ClientError> {
        match self.info {
            Some(info) => Ok(info),
            None => self.ping(),
        }
    }

    fn fragment_bytes(&mut self, chunk_bytes: u32) -> Result<u16, ClientError> {
        let info = self.info()?;
        let preferred = match self.options.fragment_bytes {
            Some(bytes) => bytes,
            None if self.options.node.ip().is_loopback() || self.shm.is_some() => info.fragment_bytes_max,
            None => NETWORK_FRAGMENT_BYTES,
        };
        let cap = (DATAGRAM_BYTES_MAX - HEADER_LEN).min(usize::from(info.fragment_bytes_max)) as u16;
        let floor = chunk_bytes.div_ceil(FRAGMENTS_MAX).min(u32::from(cap)) as u16;
        Ok(preferred.clamp(floor.max(1), cap))
    }

    pub fn control(&mut self, request: &ControlRequest) -> Result<ControlResponse, ClientError> {
        let payload = postcard::to_stdvec(request)
            .map_err(|error| ClientError::Protocol { node: self.options.node, what: error.to_string() })?;
        let (_, reply) = self.exchange(Repr::new(Opcode::Control), &payload, Opcode::ControlReply)?;
        let response: ControlResponse = postcard::from_bytes(&reply).map_err(|error| ClientError::Protocol {
            node: self.options.node,
            what: format!("undecodable control reply: {error}"),
        })?;
        if let ControlResponse::Failed(reason) = response {
            return Err(ClientError::Failed { node: self.options.node, reason });
        }
        Ok(response)
    }

    pub fn lookup(&mut self, name: &str) -> Result<FileRecord, ClientError> {
        match self.control(&ControlRequest::Lookup { name: name.to_owned() })? {
            ControlResponse::File(record) => Ok(record),
            ControlResponse::NotFound => Err(ClientError::NotFound { name: name.to_owned(), node: self.options.node }),
            other => Err(ClientError::Protocol {
                node: self.options.node,
                what: format!("unexpected answer to lookup: {other:?}"),
            }),
        }
    }

    /// Fragment size and window for chunks of up to `chunk_bytes` on this node.
    fn transfer_shape(&mut self, chunk_bytes: u32) -> Result<(u16, u16), ClientError> {
        let frag_len = self.fragment_bytes(chunk_bytes)?;
        Ok((frag_len, self.info()?.window_fragments))
    }

    /// Puts several chunks on this node at once; one result per chunk, in order.
    pub fn put_chunks(&mut self, chunks: &[(u128, Arc<[u8]>)]) -> Vec<Result<(), ClientError>> {
        let mut results: Vec<Option<Result<(), ClientError>>> = chunks.iter().map(|_| None).collect();
        let largest = chunks.iter().map(|(_, data)| data.len() as u32).max().unwrap_or(0);
        let (frag_len, window) = match self.ensure_session().and_then(|()| self.transfer_shape(largest)) {
            Ok(setup) => setup,
            Err(error) => return chunks.iter().map(|_| Err(clone_error(&error))).collect(),
        };
        let mut ops = Vec::with_capacity(chunks.len());
        for (chunk_id, data) in chunks {
            let op = self.start_put(*chunk_id, ChunkBytes::Shared(data.clone()), frag_len, window);
            ops.push(op);
        }
        self.drive_all(&mut ops, &mut results);
        results.into_iter().map(|result| result.expect("drive_all settles every machine")).collect()
    }

    /// Gets several whole chunks `(id, length)` from this node; one result per chunk.
    pub fn get_chunks(&mut self, chunks: &[(u128, u32)]) -> Vec<Result<Vec<u8>, ClientError>> {
        let mut results: Vec<Option<Result<(), ClientError>>> = chunks.iter().map(|_| None).collect();
        let largest = chunks.iter().map(|(_, len)| *len).max().unwrap_or(0);
        let shape = self.ensure_session().and_then(|()| self.transfer_shape(largest)).and_then(|(frag_len, _)| {
            let window = self.get_window(frag_len, chunks.len())?;
            Ok((frag_len, window))
        });
        let (frag_len, window) = match shape {
            Ok(setup) => setup,
            Err(error) => return chunks.iter().map(|_| Err(clone_error(&error))).collect(),
        };
        let mut ops = Vec::with_capacity(chunks.len());
        for (chunk_id, len) in chunks {
            let op = self.start_get(*chunk_id, *len, 0, *len, Vec::new(), frag_len, window);
            ops.push(op);
        }
        self.drive_all(&mut ops, &mut results);
        ops.into_iter()
            .zip(results)
            .map(|(op, result)| match (op, result.expect("drive_all settles every machine")) {
                (op, Ok(())) => Ok(op.into_get_output().expect("only gets were queued")),
                (_, Err(error)) => Err(error),
            })
            .collect()
    }

    /// Deletes chunks on this node (durably); deleting an absent chunk succeeds.
    pub fn delete_chunks(&mut self, chunk_ids: &[u128]) -> Vec<Result<(), ClientError>> {
        let mut results: Vec<Option<Result<(), ClientError>>> = chunk_ids.iter().map(|_| None).collect();
        if let Err(error) = self.ensure_session() {
            return chunk_ids.iter().map(|_| Err(clone_error(&error))).collect();
        }
        let mut ops = Vec::with_capacity(chunk_ids.len());
        for chunk_id in chunk_ids {
            let request = Repr { request_id: self.request_id(), chunk_id: *chunk_id, ..Repr::new(Opcode::Delete) };
            let mut exchange = Exchange::new(request, &[], Opcode::DeleteDone, self.options.timing, self.now_ms());
            exchange.start(&mut transmitter(&self.shm, &self.socket, &mut self.batch, &mut self.link.tx));
            ops.push(Op::Exchange(Box::new(exchange)));
        }
        self.drive_all(&mut ops, &mut results);
        results.into_iter().map(|result| result.expect("drive_all settles every machine")).collect()
    }

    /// Drives every machine to its end, recording each one's outcome.
    fn drive_all(&mut self, ops: &mut [Op], results: &mut [Option<Result<(), ClientError>>]) {
        assert_eq!(ops.len(), results.len());
        // Bounded: each call to drive settles at least one machine or fails them all.
        while results.iter().any(Option::is_none) {
            match self.drive(ops, false) {
                Ok(_) => {}
                Err(error) => {
                    for slot in results.iter_mut().filter(|slot| slot.is_none()) {
                        *slot = Some(Err(clone_error(&error)));
                    }
                    return;
                }
            }
            for (op, slot) in ops.iter().zip(results.iter_mut()) {
                if slot.is_none() {
                    match op.progress() {
                        Progress::Pending => {}
                        Progress::Done => *slot = Some(Ok(())),
                        Progress::Failed(error) => *slot = Some(Err(self.error(error))),
                    }
                }
            }
        }
    }

    pub fn list(&mut self) -> Result<Vec<FileRecord>, ClientError> {
        let mut files = Vec::new();
        let mut after = None;
        // Bounded by the namespace size: every page moves `after` forward.
        loop {
            match self.control(&ControlRequest::List { after: after.clone(), limit: 256 })? {
                ControlResponse::Listing { files: page, more } => {
                    after = page.last().map(|record| record.name.clone());
                    let empty = page.is_empty();
                    files.extend(page);
                    if !more || empty {
                        return Ok(files);
                    }
                }
                other => {
                    return Err(ClientError::Protocol {
                        node: self.options.node,
                        what: format!("unexpected answer to list: {other:?}"),
                    });
                }
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Result<FileRecord, ClientError> {
        match self.control(&ControlRequest::Remove { name: name.to_owned() })? {
            ControlResponse::Removed(record) => Ok(record),
            ControlResponse::NotFound => Err(ClientError::NotFound { name: name.to_owned(), node: self.options.node }),
            other => Err(ClientError::Protocol {
                node: self.options.node,
                what: format!("unexpected answer to remove: {other:?}"),
            }),
        }
    }

    /// The node's state and every counter, in as many replies as the counters need.
    pub fn node_status(&mut self) -> Result<NodeStatus, ClientError> {
        let mut status = self.node_status_page(0)?;
        // Bounded: every page moves `counters_next` forward or ends.
        while let Some(from) = status.counters_next.take() {
            let page = self.node_status_page(from)?;
            if page.counters.is_empty() {
                return Err(ClientError::Protocol { node: self.options.node, what: "an empty status page".into() });
            }
            status.counters.extend(page.counters);
            status.counters_next = page.counters_next.filter(|next| *next > from);
        }
        Ok(status)
    }

    fn node_status_page(&mut self, counters_from: u32) -> Result<NodeStatus, ClientError> {
        match self.control(&ControlRequest::NodeStatus { counters_from })? {
            ControlResponse::Status(status) => Ok(status),
            other => Err(ClientError::Protocol {
                node: self.options.node,
                what: format!("unexpected answer to status: {other:?}"),
            }),
        }
    }

    /// Gets one chunk range (used by benchmarks): `len` bytes from `offset`.
    pub fn get_chunk_range(
        &mut self,
        chunk_id: u128,
        total_len: u32,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        self.ensure_session()?;
        let frag_len = self.fragment_bytes(total_len)?;
        let window = self.get_window(frag_len, 1)?;
        let mut ops = [self.start_get(chunk_id, total_len, offset, len, Vec::new(), frag_len, window)];
        self.drive(&mut ops, true)?;
        let [op] = ops;
        Ok(op.into_get_output().expect("a get was started"))
    }
}

/// A copy of an error for every chunk it applies to (errors own non-Clone sources).
fn clone_error(error: &ClientError) -> ClientError {
    match error {
        ClientError::Unreachable { node, retries } => ClientError::Unreachable { node: *node, retries: *retries },
        ClientError::DiskFull { node } => ClientError::DiskFull { node: *node },
        ClientError::Busy { node } => ClientError::Busy { node: *node },
        ClientError::CorruptCopy { node } => ClientError::CorruptCopy { node: *node },
        ClientError::Rejected { node, status, hint } => ClientError::Rejected { node: *node, status: *status, hint },
        other => ClientError::Failed { node: "0.0.0.0:0".parse().expect("constant"), reason: other.to_string() },
    }
}

/// Waits until the socket is readable or `timeout_ms` passes.
fn wait_readable(socket: &UdpSocket, timeout_ms: u64) {
    use std::os::fd::AsRawFd;
    let mut poll_fd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let timeout = timeout_ms.min(i32::MAX as u64) as libc::c_int;
    // SAFETY: `poll_fd` is one valid pollfd for a live socket and outlives the call; the
    // count passed is 1. Errors (EINTR) just end the wait early.
    unsafe {
        libc::poll(&raw mut poll_fd, 1, timeout);
    }
}

/// Asks for a large receive buffer, so a window of get replies is not dropped by the
/// kernel: SO_RCVBUFFORCE (root may exceed `net.core.rmem_max`), else SO_RCVBUF (capped
/// at `net.core.rmem_max`). Returns the size the kernel granted.
fn enlarge_receive_buffer(socket: &UdpSocket, bytes: usize) -> usize {
    use std::os::fd::AsRawFd;
    let value = bytes as libc::c_int;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: the fd is a live socket owned by `socket`; `value` is a c_int that
        // outlives the call and its size is passed exactly. A failure only leaves the
        // previous size.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            break;
        }
    }
    let mut granted: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above; `granted` and `len` are live and sized for the option's int.
    let result = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, (&raw mut granted).cast(), &raw mut len)
    };
    // The kernel reports twice what it grants to payload (the rest is its bookkeeping).
    if result == 0 { usize::try_from(granted).unwrap_or(0) / 2 } else { 0 }
}

/// Kernel bookkeeping per queued datagram, beyond its bytes (a conservative `sk_buff`
/// truesize estimate).
const QUEUED_DATAGRAM_OVERHEAD_BYTES: usize = 768;

/// Fragments to request per get so that `gets_in_flight` gets' replies fit the socket's
/// receive buffer (`buffer_bytes`, as granted): a client that may not enlarge its buffer
/// (not root, a small `net.core.rmem_max`) asks for less at a time instead of having the
/// kernel drop most of each window. Between 2 and the node's window.
pub fn window_for_buffer(buffer_bytes: usize, frag_len: u16, node_window: u16, gets_in_flight: usize) -> u16 {
    let per_datagram = usize::from(frag_len) + HEADER_LEN + QUEUED_DATAGRAM_OVERHEAD_BYTES;
    let fits = buffer_bytes / (per_datagram * gets_in_flight.max(1));
    fits.clamp(2, usize::from(node_window.max(2))) as u16
}

pub use client::Timing as ClientTiming;

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer that holds the node's whole window for every get keeps it; Debian's
    /// default (212,992 bytes, what a non-root client gets without a larger
    /// `net.core.rmem_max`) holds a few fragments per get; never fewer than 2.
    #[test]
    fn the_get_window_fits_the_receive_buffer() {
        assert_eq!(window_for_buffer(8 << 20, 8000, 256, 4), 237);
        assert_eq!(window_for_buffer(32 << 20, 8000, 256, 4), 256);
        assert_eq!(window_for_buffer(212_992, 8000, 256, 4), 6);
        assert_eq!(window_for_buffer(212_992, 1400, 256, 1), 94);
        assert_eq!(window_for_buffer(0, 1400, 256, 4), 2);
        assert_eq!(window_for_buffer(1 << 30, 1400, 1, 4), 2);
    }

    /// The size reported is what the kernel granted: all of it for root (which may
    /// exceed `net.core.rmem_max`), at most the asked size otherwise.
    #[test]
    fn the_receive_buffer_reports_what_was_granted() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let granted = enlarge_receive_buffer(&socket, 1 << 20);
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(granted, 1 << 20);
        } else {
            assert!(granted > 0 && granted <= 1 << 20, "{granted}");
        }
    }
}
