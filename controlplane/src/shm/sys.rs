//! The system calls around the shared region: memfd, eventfd, file descriptors passed over
//! a Unix socket (`SCM_RIGHTS`), the peer's credentials (`SO_PEERCRED`) and `ppoll`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one hello carries: the region, the two doorbells.
pub const FDS_MAX: usize = 3;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// An anonymous shared file of `len` bytes; on hugepages when `huge` (fails when none are
/// free, and the caller falls back). Sealed at that size: the client it is handed to cannot
/// shrink it under the node's mapping, where the node's next access would die of SIGBUS.
pub fn memfd(len: usize, huge: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if huge {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: a NUL-terminated name and plain flags; the returned fd is checked.
    let fd = check(unsafe { libc::memfd_create(c"beeline-shm".as_ptr(), flags) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on the descriptor we own.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) })?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on the descriptor we own, with an integer argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// Sets the length of the file behind `fd`.
pub fn truncate(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    // SAFETY: ftruncate on a descriptor borrowed for the call; it takes no pointers.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }).map(|_| ())
}

/// A non-blocking eventfd: the doorbell of one ring.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain flags; the returned fd is checked.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Rings a doorbell. A full counter (EAGAIN) already means "wake up".
pub fn ring(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local u64 to an eventfd we hold.
    unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// Clears a doorbell (non-blocking).
pub fn drain(fd: BorrowedFd<'_>) {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a local u64 from a non-blocking eventfd we hold.
    unsafe { libc::read(fd.as_raw_fd(), (&raw mut value).cast(), 8) };
}

/// Waits until one of `fds` is readable (or hung up) or `timeout_us` passes; returns
/// the poll entries with their `revents`.
pub fn poll(fds: &mut [libc::pollfd], timeout_us: u32) -> usize {
    let timeout = libc::timespec {
        tv_sec: (timeout_us / 1_000_000) as libc::time_t,
        tv_nsec: ((timeout_us % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: `fds` is a valid writable slice of pollfds and `timeout` a valid timespec,
    // both alive across the call; a null mask leaves the signal mask alone.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &timeout, std::ptr::null()) };
    rc.max(0) as usize
}

/// The peer's pid, uid and gid.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<(i32, u32, u32)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the local `cred`.
    check(unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len)
    })?;
    Ok((cred.pid, cred.uid, cred.gid))
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`).
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= FDS_MAX);
    let mut control = [0u64; 8]; // CMSG_SPACE(3 * 4) = 32 bytes, u64 for alignment
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        assert!(msg.msg_controllen <= std::mem::size_of_val(&control));
        // SAFETY: msg_control points at `control`, large enough for one header of
        // `data_len` bytes (asserted), so CMSG_FIRSTHDR is non-null and CMSG_DATA in bounds.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast::<RawFd>(), fds.len());
        }
    }
    // SAFETY: `msg` points at `iov` (over `bytes`) and `control`, all alive across the call.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send of the shared-memory hello"));
    }
    Ok(())
}

/// Receives up to `buffer.len()` bytes and the descriptors attached to them (blocking).
pub fn recv_with_fds(stream: &UnixStream, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `iov` (over `buffer`) and `control`, alive across the call;
    // MSG_CMSG_CLOEXEC marks received descriptors close-on-exec.
    let received = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control buffer the kernel filled, with the kernel's lengths; every
    // descriptor in an SCM_RIGHTS message is a new one this process now owns.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data_len = (*header).cmsg_len - libc::CMSG_LEN(0) as usize;
                let count = data_len / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                for index in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(index).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many descriptors in the shared-memory hello"));
    }
    Ok((received as usize, fds))
}

/// Whether the peer closed its end (or the socket failed); never blocks.
pub fn peer_closed(stream: &UnixStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into a local, without consuming it, without blocking.
    let rc = unsafe { libc::recv(stream.as_raw_fd(), (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if rc == 0 {
        return true;
    }
    rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
}
