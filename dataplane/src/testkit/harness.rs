//! A node on the `sim` network with client machines driven by virtual time: the harness
//! behind the deterministic protocol tests and the poll-loop benchmark. Memory is leaked
//! on purpose (a few MiB per harness) so that the borrowing data-plane types can be
//! `'static` here.
//!
//! The harness's client runs protocol v2 as the real one does: a handshake first (retried
//! on its own timer, with seeded randoms), then every datagram sealed with the session;
//! datagrams the machines send while there is no session are lost, and their timers
//! resend them. Everything sent toward the node can be captured for replay tests.

use std::boxed::Box;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::vec::Vec;

use crate::arena::Arena;
use crate::client::{ClientError, Exchange, GetChunk, Progress, PutChunk, Timing, Transmit};
use crate::io::sim::{Impairments, SIM_DATAGRAM_BYTES_MAX, SimDatagram, SimNet, SimNodeIo, SimRng};
use crate::node::poll::PollLoop;
use crate::node::sessions::{SEEN_PER_SESSION, SeenRandom, SessionMemory, SessionSlot};
use crate::node::{ControlHandler, Node, NodeConfig, PutSlot};
use crate::session::handshake::{CONFIRM_LEN, ClusterKeys, INITIATE_LEN, Kind, Message};
use crate::session::peer::{ClientHandshake, Session, SessionRx, SessionTx};
use crate::store::ChunkStore;
use crate::wire::{self, ChunkId, ClusterKey, Opcode, Repr};

pub const NODE_ADDR: &str = "10.0.0.1:7777";
pub const CLIENT_ADDR: &str = "10.0.0.2:40000";

pub struct SimOptions {
    pub seed: u64,
    pub impairments: Impairments,
    pub frame_count: u32,
    pub frame_bytes: usize,
    /// Where datagrams start in a frame (a DPDK node keeps its mbuf in front).
    pub headroom_bytes: usize,
    pub put_slots: usize,
    pub sessions: usize,
    pub queue_datagrams: usize,
    pub timing: Timing,
    pub node_config: NodeConfig,
}

impl SimOptions {
    pub fn new(seed: u64, key: ClusterKey) -> Self {
        Self {
            seed,
            impairments: Impairments::NONE,
            frame_count: 4096,
            frame_bytes: 2048,
            headroom_bytes: crate::arena::HEADROOM_BYTES,
            put_slots: 16,
            sessions: 16,
            queue_datagrams: 4096,
            timing: Timing { rto_initial_ms: 20, rto_max_ms: 400, timeouts_max: 10 },
            node_config: NodeConfig::new(key),
        }
    }
}

fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

fn leak_slice<T: Clone>(value: T, len: usize) -> &'static mut [T] {
    Vec::leak(std::vec![value; len])
}

/// Seals the machines' datagrams with the client's session and sends them to the node.
struct NetTransmit<'a> {
    net: &'a RefCell<SimNet<'static>>,
    from: SocketAddr,
    to: SocketAddr,
    session: Option<&'a mut SessionTx>,
    capture: &'a mut Option<Vec<Vec<u8>>>,
    /// Where a datagram is laid out and sealed: reused, as a real driver's send buffer.
    buffer: &'a mut [u8; SIM_DATAGRAM_BYTES_MAX],
}

impl Transmit for NetTransmit<'_> {
    fn transmit(&mut self, header: &[u8], payload: &[u8]) {
        // No session yet (or any more): lost, like a datagram the network dropped.
        let Some(session) = self.session.as_deref_mut() else { return };
        let len = header.len() + payload.len();
        let sealed = &mut self.buffer[..len];
        sealed[..header.len()].copy_from_slice(header);
        sealed[header.len()..].copy_from_slice(payload);
        if session.seal(sealed).is_ok() {
            if let Some(capture) = self.capture.as_mut() {
                capture.push(sealed.to_vec());
            }
            self.net.borrow_mut().send_to_node(self.from, self.to, sealed);
        }
    }
}

/// The harness's client end of protocol v2: its session, the previous one's receiving
/// half while replies to it may still arrive, and the handshake in progress.
pub struct SimClient {
    keys: ClusterKeys,
    rng: SimRng,
    session: Option<Session>,
    previous_rx: Option<SessionRx>,
    attempt: Option<ClientHandshake>,
    attempt_deadline_ms: u64,
    /// When the node last sent something that authenticated.
    last_rx_ms: u64,
    pub handshakes_completed: u64,
}

impl SimClient {
    fn new(key: &ClusterKey, seed: u64) -> Self {
        Self {
            keys: ClusterKeys::new(*key.bytes()),
            rng: SimRng::new(seed ^ 0x00C1_1E47),
            session: None,
            previous_rx: None,
            attempt: None,
            attempt_deadline_ms: 0,
            last_rx_ms: 0,
            handshakes_completed: 0,
        }
    }

    fn random(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for word in out.chunks_mut(8) {
            word.copy_from_slice(&self.rng.next_u64().to_be_bytes());
        }
        out
    }

    /// Starts a new handshake attempt (the session in use, if any, stays until it ends);
    /// returns the Initiate to send.
    fn start_attempt(&mut self, now_ms: u64, rto_ms: u64) -> [u8; INITIATE_LEN] {
        let client_index = self.rng.next_u64() as u32;
        let random = self.random();
        let attempt = ClientHandshake::new(&self.keys, client_index, random);
        let mut initiate = [0u8; INITIATE_LEN];
        attempt.initiate(&mut initiate);
        self.attempt = Some(attempt);
        self.attempt_deadline_ms = now_ms + rto_ms;
        initiate
    }

    /// Feeds a handshake message from the node; returns the Confirm answering a Challenge.
    fn on_handshake(&mut self, now_ms: u64, message: &[u8]) -> Option<[u8; CONFIRM_LEN]> {
        let attempt = self.attempt.as_mut()?;
        match Message::new_checked(message).ok()?.kind() {
            Kind::Challenge => {
                let mut confirm = [0u8; CONFIRM_LEN];
                attempt.on_challenge(message, &mut confirm).ok().map(|()| confirm)
            }
            Kind::Accept => {
                let session = attempt.on_accept(message).ok()?;
                self.previous_rx = self.session.take().map(|old| old.rx);
                self.session = Some(session);
                self.attempt = None;
                self.handshakes_completed += 1;
                self.last_rx_ms = now_ms;
                None
            }
            Kind::Initiate | Kind::Confirm => None,
        }
    }

    /// Opens a datagram from the node with whichever session it names.
    fn open(&mut self, now_ms: u64, datagram: &mut [u8]) -> Option<Repr> {
        let opened = match self.session.as_mut().map(|session| session.rx.open(datagram)) {
            Some(Ok(repr)) => Some(repr),
            _ => self.previous_rx.as_mut().and_then(|rx| rx.open(datagram).ok()),
        };
        if opened.is_some() {
            self.last_rx_ms = now_ms;
        }
        opened
    }
}

/// A client machine the harness drives.
pub enum Machine<'d> {
    Put(Box<PutChunk<&'d [u8]>>),
    Get(Box<GetChunk<&'d mut [u8]>>),
    Exchange(Box<Exchange>),
}

impl Machine<'_> {
    pub fn progress(&self) -> Progress {
        match self {
            Machine::Put(put) => put.progress(),
            Machine::Get(get) => get.progress(),
            Machine::Exchange(exchange) => exchange.progress(),
        }
    }

    fn deadline_ms(&self) -> u64 {
        match self {
            Machine::Put(put) => put.deadline_ms(),
            Machine::Get(get) => get.deadline_ms(),
            Machine::Exchange(exchange) => exchange.deadline_ms(),
        }
    }
}

pub struct SimHarness<S: ChunkStore + 'static, C: ControlHandler<S> + 'static> {
    pub net: &'static RefCell<SimNet<'static>>,
    pub poll: PollLoop<'static, 'static, SimNodeIo<'static, 'static>, S, C>,
    pub now_ms: u64,
    pub client: SimClient,
    /// When `Some`, every datagram the client sends toward the node is recorded here.
    pub capture: Option<Vec<Vec<u8>>>,
    /// Bytes the node sent, by destination address.
    pub bytes_to: std::collections::BTreeMap<SocketAddr, u64>,
    send_buffer: Box<[u8; SIM_DATAGRAM_BYTES_MAX]>,
    pub client_addr: SocketAddr,
    pub node_addr: SocketAddr,
    pub timing: Timing,
    next_request_id: u64,
}

impl<S: ChunkStore + 'static, C: ControlHandler<S> + 'static> SimHarness<S, C> {
    pub fn new(options: SimOptions, store: S, control: C) -> Self {
        let node_addr: SocketAddr = NODE_ADDR.parse().expect("constant address");
        let client_addr: SocketAddr = CLIENT_ADDR.parse().expect("constant address");
        let to_node = leak_slice(SimDatagram::EMPTY, options.queue_datagrams);
        let to_clients = leak_slice(SimDatagram::EMPTY, options.queue_datagrams);
        let net: &'static RefCell<SimNet<'static>> =
            leak(RefCell::new(SimNet::new(to_node, to_clients, options.seed, options.impairments)));
        let frame_count = options.frame_count as usize;
        let memory = leak_slice(0u8, frame_count * options.frame_bytes);
        let free = leak_slice(0u32, frame_count);
        let bits = leak_slice(0u64, frame_count.div_ceil(64));
        let mut arena = Arena::new(memory, options.frame_bytes, free, bits).expect("valid arena options");
        arena.set_headroom(options.headroom_bytes);
        let slots = leak_slice(PutSlot::default(), options.put_slots);
        let key = options.node_config.key.clone();
        let session_slots = Vec::leak((0..options.sessions).map(|_| SessionSlot::default()).collect());
        let seen = leak_slice(SeenRandom::default(), options.sessions * SEEN_PER_SESSION);
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&options.seed.to_be_bytes());
        let memory = SessionMemory { slots: session_slots, seen, seed };
        let node = Node::new(options.node_config, store, control, slots, memory);
        let poll = PollLoop::new(SimNodeIo::new(net, node_addr), arena, node);
        Self {
            net,
            poll,
            now_ms: 0,
            client: SimClient::new(&key, options.seed),
            capture: None,
            bytes_to: std::collections::BTreeMap::new(),
            send_buffer: Box::new([0; SIM_DATAGRAM_BYTES_MAX]),
            client_addr,
            node_addr,
            timing: options.timing,
            next_request_id: options.seed << 32,
        }
    }

    pub fn next_request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    /// From now on the client speaks with `key` (a new handshake; a wrong key never
    /// gets a session).
    pub fn set_client_key(&mut self, key: &ClusterKey) {
        self.client = SimClient::new(key, self.next_request_id);
    }

    /// Starts a new handshake now, as a client does when it rekeys; the session in use
    /// carries on until the new one is accepted.
    pub fn rekey(&mut self) {
        let initiate = self.client.start_attempt(self.now_ms, self.timing.rto_initial_ms);
        self.send_raw(&initiate);
    }

    /// Sends bytes toward the node from the client's address, recording them if asked.
    fn send_raw(&mut self, bytes: &[u8]) {
        if let Some(capture) = self.capture.as_mut() {
            capture.push(bytes.to_vec());
        }
        self.net.borrow_mut().send_to_node(self.client_addr, self.node_addr, bytes);
    }

    pub fn has_session(&self) -> bool {
        self.client.session.is_some()
    }

    /// Seals `datagram` (unsealed, header and payload) with the client's session and
    /// sends it, as a machine would.
    pub fn send_sealed(&mut self, datagram: &[u8]) {
        let (header, payload) = datagram.split_at(wire::HEADER_LEN);
        self.transmit().transmit(header, payload);
    }

    fn transmit(&mut self) -> NetTransmit<'_> {
        NetTransmit {
            net: self.net,
            from: self.client_addr,
            to: self.node_addr,
            session: self.client.session.as_mut().map(|session| &mut session.tx),
            capture: &mut self.capture,
            buffer: &mut self.send_buffer,
        }
    }

    /// Delivers what arrived for the client: handshake messages to the client, data
    /// datagrams (opened) to every machine. Returns how many datagrams arrived.
    fn deliver(&mut self, machines: &mut [Machine<'_>]) -> usize {
        let mut buffer = [0u8; SIM_DATAGRAM_BYTES_MAX];
        let mut delivered = 0;
        loop {
            let Some((_, to, len)) = self.net.borrow_mut().recv_for_client(&mut buffer) else { break };
            delivered += 1;
            *self.bytes_to.entry(to).or_default() += len as u64;
            if to != self.client_addr {
                continue;
            }
            let datagram = &mut buffer[..len];
            if wire::is_handshake(datagram) {
                if let Some(confirm) = self.client.on_handshake(self.now_ms, datagram) {
                    self.send_raw(&confirm);
                }
                continue;
            }
            let Some(repr) = self.client.open(self.now_ms, datagram) else { continue };
            let payload = &buffer[wire::HEADER_LEN..wire::HEADER_LEN + usize::from(repr.payload_len)];
            let now_ms = self.now_ms;
            let mut transmit = self.transmit();
            for machine in machines.iter_mut() {
                match machine {
                    Machine::Put(put) => put.on_packet(&repr, payload, now_ms, &mut transmit),
                    Machine::Get(get) => get.on_packet(&repr, payload, now_ms, &mut transmit),
                    Machine::Exchange(exchange) => exchange.on_packet(&repr, payload, now_ms),
                }
            }
        }
        delivered
    }

    /// One millisecond of virtual time: the node runs, replies reach the machines, and
    /// machines whose timers expired retransmit.
    pub fn step(&mut self, machines: &mut [Machine<'_>]) {
        // The node may need several turns to drain what arrived in one millisecond.
        for _ in 0..64 {
            let turn = self.poll.run_once(self.now_ms).unwrap_or_else(|never| match never {});
            let delivered = self.deliver(machines);
            if turn.idle() && delivered == 0 {
                break;
            }
        }
        // As the real client: a handshake when there is no session, when an attempt timed
        // out, or when the node fell silent while requests wait (it may have lost the
        // session).
        let waiting = machines.iter().any(|m| m.progress() == Progress::Pending);
        let silent = waiting && self.now_ms.saturating_sub(self.client.last_rx_ms) >= 8 * self.timing.rto_initial_ms;
        let idle = self.client.attempt.is_none();
        let attempt_due = !idle && self.now_ms >= self.client.attempt_deadline_ms;
        if (idle && (self.client.session.is_none() && waiting || silent)) || attempt_due {
            self.rekey();
        }
        let now_ms = self.now_ms;
        let mut transmit = self.transmit();
        for machine in machines.iter_mut() {
            if now_ms >= machine.deadline_ms() {
                match machine {
                    Machine::Put(put) => put.on_timer(now_ms, &mut transmit),
                    Machine::Get(get) => get.on_timer(now_ms, &mut transmit),
                    Machine::Exchange(exchange) => exchange.on_timer(now_ms, &mut transmit),
                }
            }
        }
        self.now_ms += 1;
    }

    /// Steps until the client has a session; bounded by `steps_max`.
    pub fn establish(&mut self, steps_max: u64) -> bool {
        for _ in 0..steps_max {
            if self.client.session.is_some() {
                return true;
            }
            if self.client.attempt.is_none() {
                self.rekey();
            }
            self.step(&mut []);
        }
        self.client.session.is_some()
    }

    /// Starts the machines and steps until every one finished; bounded by `steps_max`.
    pub fn run(&mut self, machines: &mut [Machine<'_>], steps_max: u64) -> Vec<Progress> {
        self.start(machines);
        for _ in 0..steps_max {
            if machines.iter().all(|machine| machine.progress() != Progress::Pending) {
                break;
            }
            self.step(machines);
        }
        machines.iter().map(Machine::progress).collect()
    }

    /// Sends the machines' first datagrams.
    pub fn start(&mut self, machines: &mut [Machine<'_>]) {
        let now_ms = self.now_ms;
        let mut transmit = self.transmit();
        for machine in machines.iter_mut() {
            match machine {
                Machine::Put(put) => put.start(now_ms, &mut transmit),
                Machine::Get(get) => get.start(&mut transmit),
                Machine::Exchange(exchange) => exchange.start(&mut transmit),
            }
        }
    }

    pub fn put_machine<'d>(&mut self, chunk_id: ChunkId, data: &'d [u8], frag_len: u16) -> Machine<'d> {
        let request_id = self.next_request_id();
        let credits = self.poll.node.config().window_fragments_max;
        Machine::Put(Box::new(PutChunk::new(chunk_id, request_id, data, frag_len, credits, self.timing, self.now_ms)))
    }

    pub fn get_machine<'d>(
        &mut self,
        chunk_id: ChunkId,
        total_len: u32,
        range_start: u32,
        out: &'d mut [u8],
        frag_len: u16,
    ) -> Machine<'d> {
        let request_id = self.next_request_id();
        let window = self.poll.node.config().window_fragments_max;
        Machine::Get(Box::new(GetChunk::new(
            chunk_id,
            request_id,
            total_len,
            range_start,
            out,
            frag_len,
            window,
            self.timing,
            self.now_ms,
        )))
    }

    pub fn exchange(&mut self, request: Repr, payload: &[u8], expect: Opcode) -> Machine<'static> {
        let request = Repr { request_id: self.next_request_id(), ..request };
        Machine::Exchange(Box::new(Exchange::new(request, payload, expect, self.timing, self.now_ms)))
    }

    /// Puts one chunk to completion.
    pub fn put(&mut self, chunk_id: ChunkId, data: &[u8], frag_len: u16) -> Result<(), ClientError> {
        let mut machines = [self.put_machine(chunk_id, data, frag_len)];
        outcome(self.run(&mut machines, 1_000_000)[0])
    }

    /// Gets a whole chunk of known length.
    pub fn get(&mut self, chunk_id: ChunkId, total_len: u32, frag_len: u16) -> Result<Vec<u8>, ClientError> {
        let mut out = std::vec![0u8; total_len as usize];
        let mut machines = [self.get_machine(chunk_id, total_len, 0, &mut out, frag_len)];
        outcome(self.run(&mut machines, 1_000_000)[0])?;
        drop(machines);
        Ok(out)
    }
}

/// The seeds a seeded test runs: `BEELINE_SIM_SEED=<seed>` replays exactly one, else
/// `1..=count`.
pub fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("BEELINE_SIM_SEED") {
        Ok(seed) => std::vec![seed.parse().expect("BEELINE_SIM_SEED must be an integer")],
        Err(_) => (1..=count).collect(),
    }
}

pub fn outcome(progress: Progress) -> Result<(), ClientError> {
    match progress {
        Progress::Done => Ok(()),
        Progress::Failed(error) => Err(error),
        Progress::Pending => Err(ClientError::Unreachable),
    }
}
