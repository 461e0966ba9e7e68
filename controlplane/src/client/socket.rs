//! The client's UDP socket, connected to its node, with the kernel's offloads where it
//! has them: runs of same-size datagrams leave as one segmented send (`UDP_SEGMENT`), and
//! datagrams from the node arrive coalesced (`UDP_GRO`), so a 4 MiB put or get pays the
//! kernel's per-call cost once per run of up to 64 datagrams instead of once per datagram.
//! Either offload turns itself off when the kernel refuses it, and everything still works
//! one datagram per call.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use beeline_dataplane::io::udp::{
    GSO_BYTES_MAX as SEGMENTED_BYTES_MAX, GSO_SEGMENTS_MAX as SEGMENTS_MAX, SOL_UDP, UDP_GRO, UDP_SEGMENT,
};

/// Most bytes one coalesced receive can hold: one IP datagram's worth.
pub(super) const COALESCED_BYTES_MAX: usize = 65_535;
/// Bytes of ancillary data room: one `cmsghdr` and an int, twice over.
const CONTROL_WORDS: usize = 8;

/// Datagrams queued for one segmented send: all of `segment_bytes` but the last.
pub(super) struct SendBatch {
    buffer: Vec<u8>,
    segment_bytes: usize,
    segments: usize,
    /// The last datagram was shorter than `segment_bytes`: the run cannot grow.
    closed: bool,
    offload: bool,
    /// Segmented sends of more than one datagram the kernel took.
    pub(super) segmented_sends: u64,
    /// The largest datagram the kernel refused as too long for the path (EMSGSIZE): the
    /// fragment size does not fit the MTU, and retrying cannot help.
    pub(super) too_large_bytes: Option<usize>,
}

impl SendBatch {
    pub(super) fn new() -> Self {
        Self {
            buffer: Vec::with_capacity(SEGMENTED_BYTES_MAX),
            segment_bytes: 0,
            segments: 0,
            closed: false,
            offload: true,
            segmented_sends: 0,
            too_large_bytes: None,
        }
    }

    /// Queues the datagram `header` ‖ `payload`, sending what is queued first when it cannot
    /// join the run. `seal` finishes it in place where it lies in the batch (the session's
    /// encryption: no second copy); a datagram it refuses is dropped.
    pub(super) fn push(
        &mut self,
        socket: &UdpSocket,
        header: &[u8],
        payload: &[u8],
        seal: impl FnOnce(&mut [u8]) -> bool,
    ) {
        let datagram_len = header.len() + payload.len();
        let joins = self.segments > 0
            && self.offload
            && !self.closed
            && datagram_len != 0
            && datagram_len <= self.segment_bytes
            && self.segments < SEGMENTS_MAX
            && self.buffer.len() + datagram_len <= SEGMENTED_BYTES_MAX;
        if !joins {
            self.flush(socket);
            self.segment_bytes = datagram_len;
        }
        let start = self.buffer.len();
        self.buffer.extend_from_slice(header);
        self.buffer.extend_from_slice(payload);
        if !seal(&mut self.buffer[start..]) {
            self.buffer.truncate(start);
            return;
        }
        self.segments += 1;
        self.closed = datagram_len < self.segment_bytes;
        if !self.offload || datagram_len == 0 {
            self.flush(socket);
        }
    }

    /// Sends what is queued. A failed send is lost datagrams: the protocol resends them.
    pub(super) fn flush(&mut self, socket: &UdpSocket) {
        if self.segments > 1 {
            match send_segmented(socket, &self.buffer, self.segment_bytes) {
                Ok(()) => self.segmented_sends += 1,
                // The path cannot take segmented sends (no checksum offload: EIO; a
                // segment over the MTU: EINVAL): stop for good, send these one by one.
                Err(error) if matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                    self.offload = false;
                    let mut refused = None;
                    for datagram in self.buffer.chunks(self.segment_bytes) {
                        if is_too_large(&socket.send(datagram)) {
                            refused = Some(datagram.len());
                        }
                    }
                    if let Some(bytes) = refused {
                        self.note_too_large(bytes);
                    }
                }
                Err(error) => {
                    if is_too_large(&Err::<(), _>(error)) {
                        self.note_too_large(self.segment_bytes);
                    }
                }
            }
        } else if self.segments == 1 && is_too_large(&socket.send(&self.buffer)) {
            self.note_too_large(self.buffer.len());
        }
        self.buffer.clear();
        self.segments = 0;
        self.closed = false;
    }
}

impl SendBatch {
    fn note_too_large(&mut self, bytes: usize) {
        self.too_large_bytes = Some(self.too_large_bytes.unwrap_or(0).max(bytes));
    }
}

/// Whether the kernel refused a send as longer than the path allows (EMSGSIZE).
fn is_too_large<T>(sent: &io::Result<T>) -> bool {
    sent.as_ref().is_err_and(|error| error.raw_os_error() == Some(libc::EMSGSIZE))
}

fn send_segmented(socket: &UdpSocket, bytes: &[u8], segment_bytes: usize) -> io::Result<()> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
    // SAFETY: `msg` points at `control`, 8-byte aligned and larger than CMSG_SPACE(2), so
    // the first header and its data lie inside it; the segment size is written unaligned.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = SOL_UDP;
        (*header).cmsg_type = UDP_SEGMENT;
        (*header).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        libc::CMSG_DATA(header).cast::<u16>().write_unaligned(segment_bytes as u16);
    }
    // SAFETY: the socket is open and connected (no address needed); `msg` points at
    // `iov` (covering `bytes`, only read) and at `control`, all alive for the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Receives datagrams from the node, coalesced by the kernel when it can.
pub(super) struct Receiver {
    buffer: Vec<u8>,
    offload: bool,
}

impl Receiver {
    /// Asks the kernel to coalesce; without it every receive is one datagram.
    pub(super) fn new(socket: &UdpSocket) -> Self {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt(2) on an open socket with a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                SOL_UDP,
                UDP_GRO,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Self { buffer: vec![0; COALESCED_BYTES_MAX], offload: rc == 0 }
    }

    /// Whether the kernel coalesces received datagrams for this socket.
    #[cfg(test)]
    pub(super) fn coalescing(&self) -> bool {
        self.offload
    }

    /// The next receive without waiting: its bytes and the size of each datagram in them
    /// (all but the last are that long); `None` when nothing is waiting.
    pub(super) fn recv(&mut self, socket: &UdpSocket) -> Option<(&mut [u8], usize)> {
        if !self.offload {
            let len = socket.recv(&mut self.buffer).ok()?;
            return Some((&mut self.buffer[..len], len.max(1)));
        }
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = libc::iovec { iov_base: self.buffer.as_mut_ptr().cast(), iov_len: self.buffer.len() };
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: the socket is open; `msg` points at `iov` (covering `self.buffer`, which
        // the kernel writes at most `iov_len` bytes of) and at `control`, both alive.
        let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if received < 0 {
            return None;
        }
        let len = received as usize;
        let segment_bytes = coalesced_segment_bytes(&msg).unwrap_or(len).max(1);
        Some((&mut self.buffer[..len], segment_bytes))
    }
}

/// The datagram size the kernel reports for a coalesced receive (`UDP_GRO`), if any.
fn coalesced_segment_bytes(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: `msg` was filled by recvmsg(2): `msg_control`/`msg_controllen` describe the
    // control data it wrote into our aligned buffer, which CMSG_FIRSTHDR/CMSG_NXTHDR walk
    // without leaving it; the int behind a UDP_GRO header is read unaligned.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(msg);
        while !header.is_null() {
            if (*header).cmsg_level == SOL_UDP && (*header).cmsg_type == UDP_GRO {
                let segment = libc::CMSG_DATA(header).cast::<libc::c_int>().read_unaligned();
                return usize::try_from(segment).ok().filter(|segment| *segment > 0);
            }
            header = libc::CMSG_NXTHDR(msg, header);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(seq: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq * 31 + i * 7) as u8).collect()
    }

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        for socket in [&a, &b] {
            socket.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        }
        (a, b)
    }

    /// 30 datagrams of 1000 bytes and a 200-byte one, queued in one batch, arrive as the
    /// same 31 datagrams at a plain socket, after one segmented send.
    #[test]
    fn a_batch_leaves_as_one_segmented_send_and_arrives_datagram_by_datagram() {
        let (client, node) = pair();
        let mut batch = SendBatch::new();
        let sent: Vec<Vec<u8>> = (0..31).map(|seq| datagram(seq, if seq == 30 { 200 } else { 1000 })).collect();
        for bytes in &sent {
            batch.push(&client, &bytes[..0], bytes, |_| true);
        }
        batch.flush(&client);
        assert_eq!(batch.segmented_sends, 1);
        let mut buffer = vec![0; COALESCED_BYTES_MAX];
        for bytes in &sent {
            let len = node.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..len], &bytes[..]);
        }
    }

    /// A run never grows past one IP datagram's worth: 20 datagrams of 4681 bytes (14 of
    /// them would be 65,534 bytes, over IPv4's 65,507) leave as runs of 13 and 7.
    #[test]
    fn runs_stay_within_one_ip_datagram() {
        let (client, node) = pair();
        let mut batch = SendBatch::new();
        let sent: Vec<Vec<u8>> = (0..20).map(|seq| datagram(seq, 4681)).collect();
        for bytes in &sent {
            batch.push(&client, &bytes[..0], bytes, |_| true);
        }
        batch.flush(&client);
        assert_eq!(batch.segmented_sends, 2);
        assert!(batch.offload, "no send was refused");
        let mut buffer = vec![0; COALESCED_BYTES_MAX];
        for bytes in &sent {
            let len = node.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..len], &bytes[..]);
        }
    }

    /// A shorter datagram ends a run, a longer one starts the next: three sends for
    /// 10 x 1000, 1 x 500, 10 x 1200; every datagram arrives, in order, coalesced or not.
    #[test]
    fn runs_break_at_size_changes_and_a_coalescing_receiver_splits_them_back() {
        let (client, node) = pair();
        let mut receiver = Receiver::new(&client);
        assert!(receiver.coalescing(), "Linux >= 5.0 coalesces UDP for a socket that asks");
        let mut batch = SendBatch::new();
        let mut sent: Vec<Vec<u8>> = (0..10).map(|seq| datagram(seq, 1000)).collect();
        sent.push(datagram(10, 500));
        sent.extend((11..21).map(|seq| datagram(seq, 1200)));
        for bytes in &sent {
            batch.push(&node, &bytes[..0], bytes, |_| true);
        }
        batch.flush(&node);
        assert_eq!(batch.segmented_sends, 2, "the 500-byte datagram closes the first run");
        let mut received: Vec<Vec<u8>> = Vec::new();
        let mut coalesced_receives = 0;
        for _ in 0..1000 {
            if received.len() == sent.len() {
                break;
            }
            let Some((bytes, datagram_bytes)) = receiver.recv(&client) else {
                crate::client::wait_readable(&client, 100);
                continue;
            };
            coalesced_receives += usize::from(bytes.len() > datagram_bytes);
            received.extend(bytes.chunks(datagram_bytes).map(<[u8]>::to_vec));
        }
        assert_eq!(received, sent);
        assert!(coalesced_receives >= 1, "loopback hands a segmented send over whole");
    }
}
