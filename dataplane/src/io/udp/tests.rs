use super::*;
use crate::arena::memory::{ArenaMemory, PagePolicy};
use crate::io::TxPacket;
use std::vec::Vec;

/// Upper bound on wait/recv rounds before a test gives up.
const ROUNDS_MAX: usize = 1000;
const WAIT_US: u32 = 100_000;

fn memory(frames: u32, frame_size: usize) -> ArenaMemory {
    ArenaMemory::allocate(frames, frame_size, PagePolicy::Normal).unwrap()
}

fn pattern(seq: usize, i: usize) -> u8 {
    (seq.wrapping_mul(31) ^ i.wrapping_mul(7) ^ (i >> 8)) as u8
}

/// Fills a frame with datagram `seq` of `len` bytes at `offset` and queues it for `peer`.
fn queue(arena: &mut Arena<'_>, batch: &mut TxBatch, seq: usize, offset: usize, len: usize, peer: SocketAddr) {
    let frame = arena.alloc().expect("sender arena has room");
    let bytes = &mut arena.frame_mut(&frame)[offset..offset + len];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = pattern(seq, i);
    }
    if len >= 2 {
        bytes[..2].copy_from_slice(&(seq as u16).to_be_bytes());
    }
    batch.push(TxPacket { frame, offset: offset as u16, len: len as u16, peer }).unwrap();
}

fn check(arena: &Arena<'_>, packet: &RxPacket, seq: usize, len: usize) {
    assert_eq!(usize::from(packet.offset), HEADROOM_BYTES);
    assert_eq!(usize::from(packet.len), len, "datagram {seq}");
    let start = usize::from(packet.offset);
    let bytes = &arena.frame(&packet.frame)[start..start + len];
    assert_eq!(&bytes[..2], &(seq as u16).to_be_bytes());
    for (i, byte) in bytes.iter().enumerate().skip(2) {
        assert_eq!(*byte, pattern(seq, i), "datagram {seq} byte {i}");
    }
}

/// Receives until `count` datagrams arrived, passing each to `each` and freeing it.
fn receive(io: &mut UdpIo, arena: &mut Arena<'_>, count: usize, mut each: impl FnMut(&Arena<'_>, &RxPacket)) {
    let mut got = 0;
    let mut out = RxBatch::new();
    for _ in 0..ROUNDS_MAX {
        if got == count {
            break;
        }
        if io.wait(WAIT_US) == Readiness::TimedOut {
            continue;
        }
        let n = io.recv_batch(arena, &mut out).unwrap();
        assert_eq!(n, out.len());
        for packet in out.drain(..) {
            each(arena, &packet);
            arena.free(packet.frame);
            got += 1;
        }
    }
    assert_eq!(got, count, "datagrams received");
}

/// Runs of same-size datagrams to one peer leave as segmented sends and arrive as the
/// same separate datagrams, in order, as with segmentation off; a shorter datagram ends
/// a run, and so does a change of peer.
#[test]
fn segmented_sends_arrive_as_the_same_datagrams() {
    for offload in [true, false] {
        let config = UdpConfig { segmentation_offload: offload, ..UdpConfig::default() };
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut sender = UdpIo::bind(loopback, config).unwrap();
        let mut to_a = UdpIo::bind(loopback, UdpConfig::default()).unwrap();
        let mut to_b = UdpIo::bind(loopback, UdpConfig::default()).unwrap();
        let (a, b) = (to_a.local_addr(), to_b.local_addr());
        let mut mem_sender = memory(128, 2048);
        let mut arena_sender = mem_sender.arena();
        // seq, length, peer: a run of 20 to A ended by a shorter one, 5 to B, 3 to A.
        let mut plan: Vec<(usize, usize, SocketAddr)> = (0..20).map(|seq| (seq, 1400, a)).collect();
        plan.push((20, 300, a));
        plan.extend((21..26).map(|seq| (seq, 1400, b)));
        plan.extend((26..29).map(|seq| (seq, 1400, a)));
        let mut batch = TxBatch::new();
        for (seq, len, peer) in &plan {
            queue(&mut arena_sender, &mut batch, *seq, HEADROOM_BYTES, *len, *peer);
        }
        sender.send_batch(&mut arena_sender, &mut batch).unwrap();
        assert_eq!(arena_sender.free_frames(), 128, "every frame is back after the send");
        for (receiver, peer) in [(&mut to_a, a), (&mut to_b, b)] {
            let expected: Vec<(usize, usize)> =
                plan.iter().filter(|(_, _, p)| *p == peer).map(|(seq, len, _)| (*seq, *len)).collect();
            let mut mem = memory(128, 2048);
            let mut arena = mem.arena();
            let mut next = 0;
            receive(receiver, &mut arena, expected.len(), |arena, packet| {
                let (seq, len) = expected[next];
                check(arena, packet, seq, len);
                next += 1;
            });
        }
        let counters = sender.counters();
        assert_eq!(counters.send_failed, 0);
        assert_eq!(counters.gso_disabled, 0, "loopback takes segmented sends");
        if offload {
            assert_eq!(counters.gso_sends, 3, "three runs: 21 to A, 5 to B, 3 to A");
        } else {
            assert_eq!(counters.gso_sends, 0);
        }
    }
}

/// A path that refuses segmented sends (here: a socket with UDP checksums off, which
/// the kernel never segments, EINVAL) turns segmentation off for good, and every
/// datagram still arrives, in order.
#[test]
fn a_refused_segmented_send_falls_back_to_one_datagram_per_message() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut sender = UdpIo::bind(loopback, UdpConfig::default()).unwrap();
    let mut receiver = UdpIo::bind(loopback, UdpConfig::default()).unwrap();
    let no_check: c_int = 1;
    // SAFETY: setsockopt(2) on our open socket with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sender.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const no_check).cast(),
            mem::size_of::<c_int>() as socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
    let mut mem_sender = memory(128, 2048);
    let mut arena_sender = mem_sender.arena();
    let peer = receiver.local_addr();
    for round in 0..2 {
        let mut batch = TxBatch::new();
        for seq in 0..10 {
            queue(&mut arena_sender, &mut batch, round * 10 + seq, HEADROOM_BYTES, 1200, peer);
        }
        sender.send_batch(&mut arena_sender, &mut batch).unwrap();
        let mut mem = memory(128, 2048);
        let mut arena = mem.arena();
        let mut next = round * 10;
        receive(&mut receiver, &mut arena, 10, |arena, packet| {
            check(arena, packet, next, 1200);
            next += 1;
        });
    }
    let counters = sender.counters();
    assert_eq!(counters.gso_disabled, 1);
    assert_eq!(counters.gso_sends, 0);
    assert_eq!(counters.send_failed, 0);
}

/// Sends 64 datagrams of varied sizes and offsets from `a` to `b` and checks them.
fn exchange(a: &mut UdpIo, b: &mut UdpIo) {
    let mut mem_a = memory(128, 2048);
    let mut mem_b = memory(128, 2048);
    let mut arena_a = mem_a.arena();
    let mut arena_b = mem_b.arena();
    let payload_max = 2048 - HEADROOM_BYTES;
    let sizes: Vec<usize> = (0..BATCH_MAX)
        .map(|seq| match seq {
            0 => 2,
            1 => payload_max,
            _ => 2 + (seq * 211) % (payload_max - 1),
        })
        .collect();
    let mut batch = TxBatch::new();
    for (seq, &len) in sizes.iter().enumerate() {
        // Some datagrams start elsewhere in the frame: the backend sends frame[offset..].
        let offset = if seq % 3 == 0 && len <= 2048 - 300 { 300 } else { HEADROOM_BYTES };
        queue(&mut arena_a, &mut batch, seq, offset, len, b.local_addr());
    }
    a.send_batch(&mut arena_a, &mut batch).unwrap();
    assert!(batch.is_empty(), "send_batch drains the batch");
    assert_eq!(arena_a.free_frames(), 128, "every sent frame went back to the arena");
    assert_eq!(a.counters().send_failed, 0);
    assert_eq!(a.dropped(), 0);
    assert!(a.counters().syscalls_send >= 1);

    let mut next = 0;
    let from = a.local_addr();
    receive(b, &mut arena_b, BATCH_MAX, |arena, packet| {
        assert_eq!(packet.peer, from);
        check(arena, packet, next, sizes[next]);
        next += 1;
    });
    assert_eq!(arena_b.free_frames(), 128);
    assert_eq!(b.dropped(), 0);
    assert!(b.counters().syscalls_recv >= 1);
}

fn loopback_v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn ipv4_batch_of_64_varied_datagrams_arrives_intact() {
    let mut a = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let mut b = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    assert!(b.local_addr().port() != 0);
    assert!(b.recv_buffer_bytes() > 0 && b.send_buffer_bytes() > 0);
    exchange(&mut a, &mut b);
    exchange(&mut b, &mut a);
}

#[test]
fn ipv6_loopback_exchange() {
    let addr: SocketAddr = "[::1]:0".parse().unwrap();
    let mut a = match UdpIo::bind(addr, UdpConfig::default()) {
        Ok(io) => io,
        Err(e @ (UdpIoError::FamilyUnsupported { .. } | UdpIoError::AddrNotAvailable { .. })) => {
            crate::testkit::skip("ipv6_loopback_exchange", &format!("IPv6 loopback is unavailable here: {e}"));
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut b = UdpIo::bind(addr, UdpConfig::default()).unwrap();
    assert!(b.local_addr().is_ipv6());
    exchange(&mut a, &mut b);
}

#[test]
fn dual_stack_socket_reports_and_answers_ipv4_peers_as_ipv4() {
    let any6: SocketAddr = "[::]:0".parse().unwrap();
    let mut server = match UdpIo::bind(any6, UdpConfig::default()) {
        Ok(io) => io,
        Err(e) => {
            crate::testkit::skip(
                "dual_stack_socket_reports_and_answers_ipv4_peers_as_ipv4",
                &format!("cannot bind [::]: {e}"),
            );
            return;
        }
    };
    let client = std::net::UdpSocket::bind(loopback_v4()).unwrap();
    let server_v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, server.local_addr().port()));
    if client.send_to(b"ping", server_v4).is_err() {
        crate::testkit::skip(
            "dual_stack_socket_reports_and_answers_ipv4_peers_as_ipv4",
            "[::] does not accept IPv4 here",
        );
        return;
    }
    let mut mem = memory(16, 1024);
    let mut arena = mem.arena();
    let mut peer = None;
    receive(&mut server, &mut arena, 1, |arena, packet| {
        let start = usize::from(packet.offset);
        assert_eq!(&arena.frame(&packet.frame)[start..start + 4], b"ping");
        peer = Some(packet.peer);
    });
    let peer = peer.unwrap();
    if peer.is_ipv6() {
        crate::testkit::skip(
            "dual_stack_socket_reports_and_answers_ipv4_peers_as_ipv4",
            "net.ipv6.bindv6only makes [::] IPv6-only",
        );
        return;
    }
    assert_eq!(peer, client.local_addr().unwrap());

    let mut batch = TxBatch::new();
    let frame = arena.alloc().unwrap();
    arena.frame_mut(&frame)[HEADROOM_BYTES..HEADROOM_BYTES + 4].copy_from_slice(b"pong");
    batch.push(TxPacket { frame, offset: HEADROOM_BYTES as u16, len: 4, peer }).unwrap();
    server.send_batch(&mut arena, &mut batch).unwrap();
    assert_eq!(server.counters().send_failed, 0);
    client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(from.port(), server.local_addr().port());
    assert_eq!(arena.free_frames(), 16);
}

#[test]
fn oversized_datagrams_are_counted_as_truncated_and_dropped() {
    // 512-byte frames hold 384-byte datagrams; a second socket caps them at 100 bytes.
    let mut io = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let config = UdpConfig { datagram_bytes_max: 100, ..UdpConfig::default() };
    let mut capped = UdpIo::bind(loopback_v4(), config).unwrap();
    let sender = std::net::UdpSocket::bind(loopback_v4()).unwrap();
    let mut mem = memory(16, 512);
    let mut arena = mem.arena();
    let big = [0xEEu8; 1000];
    let fits = [0x11u8; 384];
    sender.send_to(&big, io.local_addr()).unwrap();
    sender.send_to(&fits, io.local_addr()).unwrap();
    sender.send_to(&fits[..101], capped.local_addr()).unwrap();
    sender.send_to(&fits[..100], capped.local_addr()).unwrap();

    for (io, len) in [(&mut io, 384), (&mut capped, 100)] {
        receive(io, &mut arena, 1, |arena, packet| {
            assert_eq!(usize::from(packet.len), len);
            assert_eq!(packet.peer, sender.local_addr().unwrap());
            let start = usize::from(packet.offset);
            assert!(arena.frame(&packet.frame)[start..start + len].iter().all(|&b| b == 0x11));
        });
        // Nothing else is delivered later either.
        let mut out = RxBatch::new();
        assert_eq!(io.recv_batch(&mut arena, &mut out).unwrap(), 0);
        assert_eq!(io.counters().recv_truncated, 1);
        assert_eq!(io.dropped(), 1);
        assert_eq!(arena.free_frames(), 16);
    }
}

#[test]
fn arena_exhaustion_stops_recv_early_without_losing_datagrams() {
    const FRAMES: u32 = 8;
    const SENT: usize = 20;
    let mut tx = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let mut rx = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let mut tx_mem = memory(64, 1024);
    let mut tx_arena = tx_mem.arena();
    let mut batch = TxBatch::new();
    for seq in 0..SENT {
        queue(&mut tx_arena, &mut batch, seq, HEADROOM_BYTES, 50 + seq, rx.local_addr());
    }
    tx.send_batch(&mut tx_arena, &mut batch).unwrap();
    assert_eq!(tx.dropped(), 0);

    let mut mem = memory(FRAMES, 1024);
    let mut arena = mem.arena();
    // Hold three frames elsewhere: only five are left for the first receives.
    let held: Vec<FrameId> = (0..3).map(|_| arena.alloc().unwrap()).collect();
    let mut out = RxBatch::new();
    let mut next = 0;
    let mut exhausted = false;
    for _ in 0..ROUNDS_MAX {
        if next == SENT {
            break;
        }
        if rx.wait(WAIT_US) == Readiness::TimedOut {
            continue;
        }
        let free_before = arena.free_frames();
        let n = rx.recv_batch(&mut arena, &mut out).unwrap();
        assert!(n <= free_before, "took {n} frames with {free_before} free");
        if arena.free_frames() == 0 {
            // The arena is empty: recv must return nothing and consume nothing.
            exhausted = true;
            assert_eq!(rx.recv_batch(&mut arena, &mut out).unwrap(), 0);
        }
        for packet in out.drain(..) {
            check(&arena, &packet, next, 50 + next);
            arena.free(packet.frame);
            next += 1;
        }
    }
    assert_eq!(next, SENT, "every datagram arrives despite the small arena");
    assert!(exhausted, "the arena ran out at least once");
    for frame in held {
        arena.free(frame);
    }
    assert_eq!(arena.free_frames(), FRAMES as usize);
    assert_eq!(rx.dropped(), 0);
}

#[test]
fn wait_times_out_without_traffic_and_is_ready_with_a_pending_datagram() {
    let mut io = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    assert_eq!(io.wait(0), Readiness::TimedOut);
    let started = std::time::Instant::now();
    assert_eq!(io.wait(20_000), Readiness::TimedOut);
    assert!(started.elapsed() >= std::time::Duration::from_millis(19));

    let sender = std::net::UdpSocket::bind(loopback_v4()).unwrap();
    sender.send_to(b"hello", io.local_addr()).unwrap();
    let ready = (0..ROUNDS_MAX).any(|_| io.wait(WAIT_US) == Readiness::Ready);
    assert!(ready);
    // Still ready until received, then idle again.
    assert_eq!(io.wait(0), Readiness::Ready);
    let mut mem = memory(4, 512);
    let mut arena = mem.arena();
    let mut out = RxBatch::new();
    assert_eq!(io.recv_batch(&mut arena, &mut out).unwrap(), 1);
    let packet = out.pop().unwrap();
    assert_eq!(packet.len, 5);
    arena.free(packet.frame);
    assert_eq!(io.wait(0), Readiness::TimedOut);
    // Nothing pending: recv returns 0 and keeps no frames.
    assert_eq!(io.recv_batch(&mut arena, &mut out).unwrap(), 0);
    assert_eq!(arena.free_frames(), 4);
}

#[test]
fn unsendable_packets_are_dropped_counted_and_freed() {
    let mut io = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let target = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let mut mem = memory(8, 512);
    let mut arena = mem.arena();
    let mut batch = TxBatch::new();
    // An IPv6 peer on an IPv4 socket.
    queue(&mut arena, &mut batch, 0, HEADROOM_BYTES, 10, "[::1]:9".parse().unwrap());
    // Bytes past the end of the frame.
    let frame = arena.alloc().unwrap();
    batch.push(TxPacket { frame, offset: 500, len: 20, peer: target.local_addr() }).unwrap();
    // A good one in between the bad ones still goes out.
    queue(&mut arena, &mut batch, 1, HEADROOM_BYTES, 10, target.local_addr());
    // Port 0 is refused by the kernel (EINVAL) for this message only.
    queue(&mut arena, &mut batch, 2, HEADROOM_BYTES, 10, "127.0.0.1:0".parse().unwrap());
    queue(&mut arena, &mut batch, 3, HEADROOM_BYTES, 10, target.local_addr());
    io.send_batch(&mut arena, &mut batch).unwrap();
    assert!(batch.is_empty());
    assert_eq!(arena.free_frames(), 8);
    assert_eq!(io.counters().send_failed, 3);
    assert_eq!(io.dropped(), 3);

    let mut target = target;
    let mut seqs = Vec::new();
    receive(&mut target, &mut arena, 2, |arena, packet| {
        let seq = usize::from(arena.frame(&packet.frame)[HEADROOM_BYTES + 1]);
        check(arena, packet, seq, 10);
        seqs.push(seq);
    });
    assert_eq!(seqs, [1, 3]);
}

#[test]
fn bind_errors_say_what_to_do() {
    let first = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let err = UdpIo::bind(first.local_addr(), UdpConfig::default()).unwrap_err();
    assert!(matches!(err, UdpIoError::AddrInUse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("already listening") && message.contains("--listen"), "{message}");

    let err = UdpIo::bind("192.0.2.1:0".parse().unwrap(), UdpConfig::default()).unwrap_err();
    assert!(matches!(err, UdpIoError::AddrNotAvailable { .. }), "{err:?}");

    let config = UdpConfig { datagram_bytes_max: 0, ..UdpConfig::default() };
    assert!(matches!(UdpIo::bind(loopback_v4(), config), Err(UdpIoError::InvalidConfig(_))));

    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        crate::testkit::skip("bind_errors_say_what_to_do (the privileged-port check)", "running as root");
    } else {
        match UdpIo::bind("127.0.0.1:1".parse().unwrap(), UdpConfig::default()) {
            Err(err @ UdpIoError::PermissionDenied { .. }) => {
                assert!(err.to_string().contains("CAP_NET_BIND_SERVICE"));
            }
            Err(err) => panic!("unexpected error: {err}"),
            // net.ipv4.ip_unprivileged_port_start may allow it.
            Ok(_) => crate::testkit::skip(
                "bind_errors_say_what_to_do (the privileged-port check)",
                "low ports are open to all",
            ),
        }
    }
}

#[test]
fn capped_socket_buffers_produce_advice() {
    let config = UdpConfig::default();
    let asked = DEFAULT_SOCKET_BUFFER_BYTES;
    assert_eq!(buffer_warning(&config, 2 * asked, 2 * asked), None);
    // Capped by net.core.rmem_max = 4 MiB: the kernel reports 8 MiB.
    let warning = buffer_warning(&config, asked, 2 * asked).unwrap();
    assert!(warning.contains("net.core.rmem_max=8388608"), "{warning}");
    assert!(!warning.contains("wmem_max"), "{warning}");
    let warning = buffer_warning(&config, asked, asked).unwrap();
    assert!(warning.contains("rmem_max") && warning.contains("wmem_max"), "{warning}");
    let default_buffers = UdpConfig { recv_buffer_bytes: 0, send_buffer_bytes: 0, ..config };
    assert_eq!(buffer_warning(&default_buffers, 4096, 4096), None);
    // Whatever this machine grants, the backend says so consistently.
    let io = UdpIo::bind(loopback_v4(), config).unwrap();
    let capped = io.recv_buffer_bytes() < 2 * asked || io.send_buffer_bytes() < 2 * asked;
    assert_eq!(io.buffer_warning().is_some(), capped);
}

#[test]
fn socket_addresses_round_trip() {
    // SAFETY: all-zero bytes is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let v4: SocketAddr = "192.0.2.7:4242".parse().unwrap();
    let len = write_sockaddr(v4, false, &mut storage).unwrap();
    assert_eq!(read_sockaddr(&storage, len, false), Some(v4));
    assert_eq!(read_sockaddr(&storage, len - 1, false), None);

    let v6 = SocketAddr::V6(SocketAddrV6::new("fe80::1:2".parse().unwrap(), 65535, 7, 3));
    let len = write_sockaddr(v6, true, &mut storage).unwrap();
    assert_eq!(read_sockaddr(&storage, len, true), Some(v6));
    assert_eq!(write_sockaddr(v6, false, &mut storage), None);

    // IPv4 on an IPv6 socket: mapped on the way out, canonical on the way in.
    let len = write_sockaddr(v4, true, &mut storage).unwrap();
    assert_eq!(c_int::from(storage.ss_family), libc::AF_INET6);
    let mapped = SocketAddr::V6(SocketAddrV6::new("::ffff:192.0.2.7".parse().unwrap(), 4242, 0, 0));
    assert_eq!(read_sockaddr(&storage, len, false), Some(mapped));
    assert_eq!(read_sockaddr(&storage, len, true), Some(v4));

    storage.ss_family = libc::AF_UNIX as libc::sa_family_t;
    assert_eq!(read_sockaddr(&storage, len, true), None);
}

#[test]
fn backend_moves_to_another_thread() {
    let io = UdpIo::bind(loopback_v4(), UdpConfig::default()).unwrap();
    let addr = io.local_addr();
    let io = std::thread::spawn(move || io).join().unwrap();
    assert_eq!(io.local_addr(), addr);
}
