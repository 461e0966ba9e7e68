//! The in-run baselines beside Beeline's numbers: raw kernel UDP without the protocol,
//! and plain file writes with and without `fdatasync`.

use super::*;

pub(super) fn measure_baselines(
    args: &BenchArgs,
    workdir: &WorkDir,
    pool: &Pool,
    fragment: u16,
    report: &mut Report,
) -> Result<(), String> {
    let total = u64::from(args.chunks) * u64::from(CHUNK_BYTES);
    for batch in [UDP_BATCH, 1] {
        eprintln!("beeline bench: raw UDP on loopback, {total} bytes in batches of {batch}");
        let mut outcome = None;
        let mut phase = timed(&mut (), total, None, |_| {
            outcome = Some(raw_udp(usize::from(fragment), total, batch)?);
            Ok(None)
        })?;
        let outcome = outcome.expect("set by the phase");
        phase.name = if batch == 1 {
            "Baseline: raw UDP loopback, send → recv, one datagram per syscall".into()
        } else {
            format!("Baseline: raw UDP loopback, sendmmsg → recvmmsg, {batch} per syscall")
        };
        phase.fragment_bytes = fragment;
        phase.cpu.threads.insert("udp receiver".into(), outcome.receiver_cpu);
        // Throughput is what arrived, over the time until the last datagram arrived.
        phase.bytes = outcome.received_bytes;
        phase.wall = outcome.receive_seconds;
        let loss = 1.0 - outcome.received_datagrams as f64 / outcome.sent_datagrams.max(1) as f64;
        phase.notes.push(format!(
            "sender {:.2} GB/s, {:.1}% lost (receiver overrun)",
            outcome.sent_bytes as f64 / outcome.send_seconds / GB,
            loss * 100.0
        ));
        report.phases.push(phase);
    }
    for sync_each_chunk in [false, true] {
        eprintln!("beeline bench: file write of {total} bytes");
        let path = workdir.path.join("baseline-write.dat");
        let mut phase = timed(&mut (), total, None, |_| {
            file_write(&path, pool, total, sync_each_chunk)?;
            Ok(None)
        })?;
        let _ = std::fs::remove_file(&path);
        phase.name = if sync_each_chunk {
            "Baseline: file write + fdatasync per 4 MiB".into()
        } else {
            "Baseline: file write + one fdatasync (disk floor)".into()
        };
        phase.notes.push(format!("in {}", workdir.path.display()));
        report.phases.push(phase);
    }
    Ok(())
}

pub(super) struct UdpOutcome {
    pub(super) sent_datagrams: u64,
    pub(super) sent_bytes: u64,
    pub(super) send_seconds: f64,
    pub(super) received_datagrams: u64,
    pub(super) received_bytes: u64,
    pub(super) receive_seconds: f64,
    /// CPU-seconds of the receiver thread (gone before the phase's thread snapshot).
    pub(super) receiver_cpu: f64,
}

/// One thread blasts datagrams of Beeline's size (`fragment` + header) at another over
/// loopback; no protocol, no MAC, no flow control. Bytes count the fragment payload, as
/// for Beeline. Both sockets get the node's buffer sizes.
pub(super) fn raw_udp(fragment: usize, total: u64, batch: usize) -> Result<UdpOutcome, String> {
    let datagram_len = fragment + HEADER_LEN;
    let count = total.div_ceil(fragment as u64);
    let socket_error = |what: &str, e: std::io::Error| format!("raw UDP baseline: {what}: {e}");
    let receiver = UdpSocket::bind("127.0.0.1:0").map_err(|e| socket_error("bind", e))?;
    let sender = UdpSocket::bind("127.0.0.1:0").map_err(|e| socket_error("bind", e))?;
    sender
        .connect(receiver.local_addr().map_err(|e| socket_error("local_addr", e))?)
        .map_err(|e| socket_error("connect", e))?;
    set_buffer(&receiver, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
    set_buffer(&sender, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
    receiver.set_read_timeout(Some(UDP_RECV_TIMEOUT)).map_err(|e| socket_error("set_read_timeout", e))?;
    let sender_done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let receiving = {
        let sender_done = sender_done.clone();
        std::thread::Builder::new()
            .name("bench-udp-rx".into())
            .spawn(move || receive_all(&receiver, datagram_len, count, batch, &sender_done, start))
            .map_err(|e| socket_error("spawn", e))?
    };
    let sent = send_all(&sender, datagram_len, count, batch);
    let send_seconds = start.elapsed().as_secs_f64();
    sender_done.store(true, Ordering::Release);
    let received = receiving.join().map_err(|_| "raw UDP baseline: the receiver thread panicked".to_string())?;
    let sent = sent.map_err(|e| socket_error("send", e))?;
    let (received_datagrams, received_bytes, receive_seconds, receiver_cpu) =
        received.map_err(|e| socket_error("receive", e))?;
    let payload_per_byte = fragment as f64 / datagram_len as f64;
    Ok(UdpOutcome {
        sent_datagrams: sent,
        sent_bytes: sent * fragment as u64,
        send_seconds,
        received_datagrams,
        received_bytes: (received_bytes as f64 * payload_per_byte) as u64,
        receive_seconds,
        receiver_cpu,
    })
}

pub(super) fn set_buffer(socket: &UdpSocket, force: libc::c_int, plain: libc::c_int) {
    let value = DEFAULT_SOCKET_BUFFER_BYTES as libc::c_int;
    for option in [force, plain] {
        // SAFETY: the fd is a live socket owned by `socket`; `value` is a c_int that
        // outlives the call and its size is passed exactly. Failure leaves the default.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// `count` datagrams of `len` bytes (all from one buffer) in `sendmmsg` batches.
pub(super) fn send_all(socket: &UdpSocket, len: usize, count: u64, batch: usize) -> std::io::Result<u64> {
    let buffer = vec![0xa5u8; len];
    if batch == 1 {
        for _ in 0..count {
            socket.send(&buffer)?;
        }
        return Ok(count);
    }
    let mut iov = libc::iovec { iov_base: buffer.as_ptr().cast_mut().cast(), iov_len: len };
    // SAFETY: all-zero bytes are a valid `mmsghdr` (null pointers, zero lengths).
    let mut headers: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for header in &mut headers {
        header.msg_hdr.msg_iov = &raw mut iov;
        header.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u64;
    while sent < count {
        let want = (count - sent).min(batch as u64) as libc::c_uint;
        // SAFETY: the first `want` headers each point at the one iovec, which points at
        // `len` readable bytes of `buffer`; all outlive the call, the kernel only reads them
        // (and writes `msg_len` into the headers). The socket is connected: no address.
        let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), want, 0) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        sent += rc as u64;
    }
    Ok(sent)
}

/// Receives until `count` datagrams arrived, or the sender is done and the socket is
/// empty, or `UDP_DEADLINE` passed. Returns datagrams, bytes, and seconds from `start`
/// to the last arrival.
pub(super) fn receive_all(
    socket: &UdpSocket,
    len: usize,
    count: u64,
    batch: usize,
    sender_done: &AtomicBool,
    start: Instant,
) -> std::io::Result<(u64, u64, f64, f64)> {
    let mut buffers = vec![0u8; len * batch];
    let mut iovs: Vec<libc::iovec> =
        buffers.chunks_mut(len).map(|slot| libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: len }).collect();
    // SAFETY: all-zero bytes are a valid `mmsghdr` (null pointers, zero lengths).
    let mut headers: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (header, iov) in headers.iter_mut().zip(iovs.iter_mut()) {
        header.msg_hdr.msg_iov = iov;
        header.msg_hdr.msg_iovlen = 1;
    }
    let (mut datagrams, mut bytes, mut last) = (0u64, 0u64, start);
    let mut draining = false;
    while datagrams < count && start.elapsed() < UDP_DEADLINE {
        if !draining && sender_done.load(Ordering::Acquire) {
            // Loopback delivery happens inside the sender's syscall: all that will ever
            // arrive is queued now, so drain without blocking and stop.
            draining = true;
            socket.set_nonblocking(true)?;
        }
        let received: std::io::Result<(u64, u64)> = if batch == 1 {
            socket.recv(&mut buffers[..len]).map(|n| (1, n as u64))
        } else {
            let flags = if draining { libc::MSG_DONTWAIT } else { libc::MSG_WAITFORONE };
            // SAFETY: the `batch` headers each point at their own iovec, and each iovec at
            // its own `len`-byte slot of `buffers`; all live across the call and nothing
            // else touches them. No addresses are asked for; the timeout pointer is null.
            let rc = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    batch as libc::c_uint,
                    flags as _,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok((rc as u64, headers[..rc as usize].iter().map(|h| u64::from(h.msg_len)).sum()))
            }
        };
        match received {
            Ok((n, b)) => {
                datagrams += n;
                bytes += b;
                last = Instant::now();
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                if draining {
                    break;
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok((datagrams, bytes, last.duration_since(start).as_secs_f64(), own_thread_cpu()))
}

/// CPU time of the calling thread so far.
pub(super) fn own_thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map(|nanos| nanos as f64 / 1e9)
        .unwrap_or(0.0)
}

/// Writes `total` bytes in 4 MiB writes to a new file, then `fdatasync`s it (after every
/// chunk when `sync_each_chunk`).
pub(super) fn file_write(path: &Path, pool: &Pool, total: u64, sync_each_chunk: bool) -> Result<(), String> {
    let error = |e: std::io::Error| format!("file-write baseline in {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(error)?;
    let mut written = 0u64;
    while written < total {
        let len = (total - written).min(u64::from(CHUNK_BYTES)) as usize;
        file.write_all(pool.at(written, len)).map_err(error)?;
        written += len as u64;
        if sync_each_chunk {
            file.sync_data().map_err(error)?;
        }
    }
    file.sync_data().map_err(error)
}
