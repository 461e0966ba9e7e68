//! The two rtnetlink requests the loader needs that aya does not expose: which XDP
//! programs an interface runs (and in which mode), and detaching a netlink-attached one.
//!
//! Messages are built and parsed as plain bytes with checked reads; only the socket calls
//! are `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = 0x3fff;

const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;

const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// Where an XDP program runs on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// In the driver (native XDP).
    Driver,
    /// In the kernel's generic path (skb mode).
    Generic,
    /// Offloaded to the NIC.
    Hardware,
}

impl XdpAttachMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpAttachMode::Driver => "native",
            XdpAttachMode::Generic => "generic",
            XdpAttachMode::Hardware => "offload",
        }
    }

    fn flags(self) -> u32 {
        match self {
            XdpAttachMode::Driver => XDP_FLAGS_DRV_MODE,
            XdpAttachMode::Generic => XDP_FLAGS_SKB_MODE,
            XdpAttachMode::Hardware => XDP_FLAGS_HW_MODE,
        }
    }
}

/// One XDP program attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachedXdp {
    pub program_id: u32,
    pub mode: XdpAttachMode,
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) takes no pointers; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns; `OwnedFd` closes it.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero is a valid sockaddr_nl (pid 0 = the kernel, no groups).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `message` is readable for its length and `kernel` is a valid sockaddr_nl
        // of the size passed; both outlive the call, which only reads them.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buffer` is writable for its length for the whole call; the kernel
        // writes at most that many bytes.
        let rc = unsafe { libc::recv(self.0.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
    }
}

fn push_attr(message: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    message.extend_from_slice(&(len as u16).to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(payload);
    while !message.len().is_multiple_of(4) {
        message.push(0);
    }
}

fn request(kind: u16, flags: u16, ifindex: u32, attrs: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut message = Vec::with_capacity(128);
    message.extend_from_slice(&[0; NLMSG_HDR_LEN]);
    // struct ifinfomsg: family, pad, type, index, flags, change
    message.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    message.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    message.extend_from_slice(&[0; 8]);
    attrs(&mut message);
    let len = message.len() as u32;
    message[0..4].copy_from_slice(&len.to_ne_bytes());
    message[4..6].copy_from_slice(&kind.to_ne_bytes());
    message[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    message[8..12].copy_from_slice(&1u32.to_ne_bytes());
    message
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Iterates the `(type, payload)` attributes in `bytes`; stops at the first malformed one.
fn attrs(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::from(read_u16(bytes, at)?);
        let kind = read_u16(bytes, at + 2)?;
        let payload = bytes.get(at + 4..at + len.max(4))?;
        at += len.max(4).next_multiple_of(4);
        Some((kind & NLA_TYPE_MASK, payload))
    })
}

/// Walks the messages of one reply; returns the payload of the first message of `kind`,
/// or the error an `NLMSG_ERROR` carries (`Ok(None)` for an acknowledgement).
fn find_reply(reply: &[u8], kind: u16) -> io::Result<Option<&[u8]>> {
    let mut at = 0;
    while let (Some(len), Some(message_kind)) = (read_u32(reply, at), read_u16(reply, at + 4)) {
        let len = len as usize;
        let Some(message) = reply.get(at..at + len).filter(|_| len >= NLMSG_HDR_LEN) else { break };
        let payload = &message[NLMSG_HDR_LEN..];
        match message_kind {
            NLMSG_ERROR => {
                let errno = read_u32(payload, 0).map(|e| e as i32).unwrap_or(-libc::EPROTO);
                return if errno == 0 { Ok(None) } else { Err(io::Error::from_raw_os_error(-errno)) };
            }
            NLMSG_DONE => break,
            k if k == kind => return Ok(Some(payload)),
            _ => {}
        }
        at += len.next_multiple_of(4);
    }
    Ok(None)
}

/// The XDP programs attached to interface `ifindex`, in every mode.
pub fn attached_programs(ifindex: u32) -> io::Result<Vec<AttachedXdp>> {
    let socket = Socket::open()?;
    let message = request(RTM_GETLINK, 0, ifindex, |message| {
        push_attr(message, IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    });
    socket.send(&message)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let len = socket.recv(&mut buffer)?;
    let Some(payload) = find_reply(&buffer[..len], RTM_NEWLINK)? else {
        return Err(io::Error::other("the kernel sent no link description"));
    };
    let Some(link_attrs) = payload.get(IFINFOMSG_LEN..) else {
        return Err(io::Error::other("short link description"));
    };
    let mut found = Vec::new();
    let Some((_, xdp)) = attrs(link_attrs).find(|(kind, _)| *kind == IFLA_XDP) else {
        return Ok(found);
    };
    let mut attached = 0u8;
    let mut single = None;
    for (kind, value) in attrs(xdp) {
        let id = read_u32(value, 0);
        match (kind, id) {
            (IFLA_XDP_ATTACHED, _) => attached = value.first().copied().unwrap_or(0),
            (IFLA_XDP_PROG_ID, Some(id)) => single = Some(id),
            (IFLA_XDP_DRV_PROG_ID, Some(id)) => found.push(AttachedXdp { program_id: id, mode: XdpAttachMode::Driver }),
            (IFLA_XDP_SKB_PROG_ID, Some(id)) => {
                found.push(AttachedXdp { program_id: id, mode: XdpAttachMode::Generic })
            }
            (IFLA_XDP_HW_PROG_ID, Some(id)) => {
                found.push(AttachedXdp { program_id: id, mode: XdpAttachMode::Hardware })
            }
            _ => {}
        }
    }
    if attached != XDP_ATTACHED_MULTI {
        found.clear();
        let mode = match attached {
            XDP_ATTACHED_DRV => Some(XdpAttachMode::Driver),
            XDP_ATTACHED_SKB => Some(XdpAttachMode::Generic),
            XDP_ATTACHED_HW => Some(XdpAttachMode::Hardware),
            _ => None,
        };
        if let (Some(mode), Some(program_id)) = (mode, single) {
            found.push(AttachedXdp { program_id, mode });
        }
    }
    Ok(found)
}

/// Detaches the netlink-attached XDP program of `mode` from `ifindex`. Fails with EBUSY
/// when the program is held by a bpf link (which only closing or unpinning the link ends).
pub fn detach(ifindex: u32, mode: XdpAttachMode) -> io::Result<()> {
    let socket = Socket::open()?;
    let message = request(RTM_SETLINK, NLM_F_ACK, ifindex, |message| {
        let mut nested = Vec::new();
        push_attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        push_attr(&mut nested, IFLA_XDP_FLAGS, &mode.flags().to_ne_bytes());
        push_attr(message, IFLA_XDP | NLA_F_NESTED, &nested);
    });
    socket.send(&message)?;
    let mut buffer = vec![0u8; 8192];
    let len = socket.recv(&mut buffer)?;
    find_reply(&buffer[..len], NLMSG_ERROR).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_stop_on_garbage() {
        let mut message = Vec::new();
        push_attr(&mut message, 7, &[1, 2, 3]);
        push_attr(&mut message, 9 | NLA_F_NESTED, &5u32.to_ne_bytes());
        message.extend_from_slice(&[200, 0]);
        let parsed: Vec<_> = attrs(&message).collect();
        assert_eq!(parsed, vec![(7, &[1u8, 2, 3][..]), (9, &5u32.to_ne_bytes()[..])]);
        assert_eq!(attrs(&[0xff, 0xff, 1, 0]).count(), 0);
    }

    #[test]
    fn loopback_has_no_xdp_program() {
        // Needs no privileges: RTM_GETLINK is open to everyone.
        let attached = attached_programs(1).expect("query lo");
        assert!(attached.is_empty(), "{attached:?}");
    }
}
