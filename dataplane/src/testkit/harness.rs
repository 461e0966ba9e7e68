//! A node on the `sim` network with client machines driven by virtual time: the harness
//! behind the deterministic protocol tests and the poll-loop benchmark. Memory is leaked
//! on purpose (a few MiB per harness) so that the borrowing data-plane types can be
//! `'static` here.

use std::boxed::Box;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::vec::Vec;

use crate::arena::Arena;
use crate::client::{ClientError, Exchange, GetChunk, Progress, PutChunk, Timing, Transmit, accept};
use crate::io::sim::{Impairments, SIM_DATAGRAM_BYTES_MAX, SimDatagram, SimNet, SimNodeIo};
use crate::node::poll::PollLoop;
use crate::node::{ControlHandler, Node, NodeConfig, PutSlot};
use crate::store::ChunkStore;
use crate::wire::{ChunkId, MacKey, Opcode, Repr};

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
    pub queue_datagrams: usize,
    pub timing: Timing,
    pub node_config: NodeConfig,
}

impl SimOptions {
    pub fn new(seed: u64, key: MacKey) -> Self {
        Self {
            seed,
            impairments: Impairments::NONE,
            frame_count: 4096,
            frame_bytes: 2048,
            headroom_bytes: crate::arena::HEADROOM_BYTES,
            put_slots: 16,
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

struct NetTransmit<'a> {
    net: &'a RefCell<SimNet<'static>>,
    from: SocketAddr,
    to: SocketAddr,
}

impl Transmit for NetTransmit<'_> {
    fn transmit(&mut self, datagram: &[u8]) {
        self.net.borrow_mut().send_to_node(self.from, self.to, datagram);
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
    pub key: MacKey,
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
        let node = Node::new(options.node_config, store, control, slots);
        let poll = PollLoop::new(SimNodeIo::new(net, node_addr), arena, node);
        Self {
            net,
            poll,
            now_ms: 0,
            key,
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

    /// One millisecond of virtual time: the node runs, replies reach the machines, and
    /// machines whose timers expired retransmit.
    pub fn step(&mut self, machines: &mut [Machine<'_>], key: &MacKey) {
        let mut transmit = NetTransmit { net: self.net, from: self.client_addr, to: self.node_addr };
        // The node may need several turns to drain what arrived in one millisecond.
        for _ in 0..64 {
            let turn = self.poll.run_once(self.now_ms).unwrap_or_else(|never| match never {});
            let mut buffer = [0u8; SIM_DATAGRAM_BYTES_MAX];
            let mut delivered = 0;
            loop {
                let Some((_, _, len)) = self.net.borrow_mut().recv_for_client(&mut buffer) else { break };
                delivered += 1;
                let Some((repr, payload)) = accept(&buffer[..len], key) else { continue };
                for machine in machines.iter_mut() {
                    match machine {
                        Machine::Put(put) => put.on_packet(&repr, payload, self.now_ms, &mut transmit),
                        Machine::Get(get) => get.on_packet(&repr, payload, self.now_ms, &mut transmit),
                        Machine::Exchange(exchange) => exchange.on_packet(&repr, payload, self.now_ms),
                    }
                }
            }
            if turn.idle() && delivered == 0 {
                break;
            }
        }
        for machine in machines.iter_mut() {
            if self.now_ms >= machine.deadline_ms() {
                match machine {
                    Machine::Put(put) => put.on_timer(self.now_ms, &mut transmit),
                    Machine::Get(get) => get.on_timer(self.now_ms, &mut transmit),
                    Machine::Exchange(exchange) => exchange.on_timer(self.now_ms, &mut transmit),
                }
            }
        }
        self.now_ms += 1;
    }

    /// Starts the machines and steps until every one finished; bounded by `steps_max`.
    pub fn run(&mut self, machines: &mut [Machine<'_>], key: &MacKey, steps_max: u64) -> Vec<Progress> {
        let mut transmit = NetTransmit { net: self.net, from: self.client_addr, to: self.node_addr };
        for machine in machines.iter_mut() {
            match machine {
                Machine::Put(put) => put.start(self.now_ms, &mut transmit),
                Machine::Get(get) => get.start(&mut transmit),
                Machine::Exchange(exchange) => exchange.start(&mut transmit),
            }
        }
        for _ in 0..steps_max {
            if machines.iter().all(|machine| machine.progress() != Progress::Pending) {
                break;
            }
            self.step(machines, key);
        }
        machines.iter().map(Machine::progress).collect()
    }

    pub fn put_machine<'d>(&mut self, chunk_id: ChunkId, data: &'d [u8], frag_len: u16, key: &MacKey) -> Machine<'d> {
        let request_id = self.next_request_id();
        let credits = self.poll.node.config().window_fragments_max;
        Machine::Put(Box::new(PutChunk::new(
            key.clone(),
            chunk_id,
            request_id,
            data,
            frag_len,
            credits,
            self.timing,
            self.now_ms,
        )))
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
            self.key.clone(),
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
        Machine::Exchange(Box::new(Exchange::new(self.key.clone(), request, payload, expect, self.timing, self.now_ms)))
    }

    /// Puts one chunk to completion.
    pub fn put(&mut self, chunk_id: ChunkId, data: &[u8], frag_len: u16) -> Result<(), ClientError> {
        let key = self.key.clone();
        let mut machines = [self.put_machine(chunk_id, data, frag_len, &key)];
        outcome(self.run(&mut machines, &key, 1_000_000)[0])
    }

    /// Gets a whole chunk of known length.
    pub fn get(&mut self, chunk_id: ChunkId, total_len: u32, frag_len: u16) -> Result<Vec<u8>, ClientError> {
        let mut out = std::vec![0u8; total_len as usize];
        let key = self.key.clone();
        let mut machines = [self.get_machine(chunk_id, total_len, 0, &mut out, frag_len)];
        outcome(self.run(&mut machines, &key, 1_000_000)[0])?;
        drop(machines);
        Ok(out)
    }
}

pub fn outcome(progress: Progress) -> Result<(), ClientError> {
    match progress {
        Progress::Done => Ok(()),
        Progress::Failed(error) => Err(error),
        Progress::Pending => Err(ClientError::Unreachable),
    }
}
