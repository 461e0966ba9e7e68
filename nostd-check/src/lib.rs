//! Links the data plane core into a `no_std` static library with its own panic handler.
//! If anything in the core's dependency tree pulled in `std`, this crate would fail to
//! build with a duplicate `panic_impl` lang item. CI builds it (`ci/test.sh`).
#![no_std]

use beeline_dataplane::session::SessionCipher;
use beeline_dataplane::session::peer::{SessionRx, SessionTx};
use beeline_dataplane::wire::{HEADER_LEN, Opcode, Packet, Repr};

/// Parses a datagram the way the poll loop does, so the checked path is linked in.
#[unsafe(no_mangle)]
pub extern "C" fn beeline_nostd_parse(len: usize) -> u32 {
    let buffer = [0u8; HEADER_LEN];
    match Packet::new_checked(&buffer[..len.min(HEADER_LEN)]) {
        Ok(packet) => Repr::parse(&packet).count,
        Err(_) => 0,
    }
}

/// Seals a datagram with a session's sending half and opens it with the receiving half,
/// replay window included, as node and client do, so the session code and `ring`'s
/// AES-GCM are linked in too.
#[unsafe(no_mangle)]
pub extern "C" fn beeline_nostd_session(key_byte: u8) -> u32 {
    let mut tx = SessionTx::new(3, SessionCipher::new([key_byte; 16]));
    let mut rx = SessionRx::new(3, SessionCipher::new([key_byte; 16]));
    let repr = Repr { payload_len: 32, ..Repr::new(Opcode::PutFrag) };
    let mut datagram = [0u8; HEADER_LEN + 32];
    repr.emit_with_payload(&mut datagram, &[1; 32]);
    let sealed = tx.seal(&mut datagram).is_ok();
    let opened = rx.open(&mut datagram).is_ok();
    let replayed = rx.open(&mut datagram).is_err();
    u32::from(sealed) + u32::from(opened) + u32::from(replayed)
}

/// `ring` (the session AEAD) declares `extern crate alloc` for a test-support module even
/// without its `alloc` feature, so a global allocator must exist for this library to
/// build. This one allocates nothing: it calls a function that is defined nowhere, so
/// `ci/test.sh`, which links this library into a program with `--gc-sections`, fails to
/// link if any allocation is reachable from the entry points above.
struct NoAlloc;

unsafe extern "C" {
    fn beeline_core_must_not_allocate() -> !;
}

// SAFETY: never returns memory; every call diverges into the undefined (link-time) guard.
unsafe impl core::alloc::GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _: core::alloc::Layout) -> *mut u8 {
        // SAFETY: a link-time guard; a program that can reach this does not link.
        unsafe { beeline_core_must_not_allocate() }
    }
    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {
        // SAFETY: as above.
        unsafe { beeline_core_must_not_allocate() }
    }
}

#[global_allocator]
static ALLOCATOR: NoAlloc = NoAlloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
