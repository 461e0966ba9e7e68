//! Links the data plane core into a `no_std` static library with its own panic handler.
//! If anything in the core's dependency tree pulled in `std`, this crate would fail to
//! build with a duplicate `panic_impl` lang item. CI builds it (`ci/test.sh`).
#![no_std]

use beeline_dataplane::session::{ReplayWindow, SessionCipher};
use beeline_dataplane::wire::{HEADER_LEN, Packet, Repr};

/// Parses a datagram the way the poll loop does, so the checked path is linked in.
#[unsafe(no_mangle)]
pub extern "C" fn beeline_nostd_parse(len: usize) -> u32 {
    let buffer = [0u8; HEADER_LEN];
    match Packet::new_checked(&buffer[..len.min(HEADER_LEN)]) {
        Ok(packet) => Repr::parse(&packet).count,
        Err(_) => 0,
    }
}

/// Seals, opens and replay-checks a datagram the way protocol v2 will, so the session
/// code and `ring`'s AES-GCM are linked in too.
#[unsafe(no_mangle)]
pub extern "C" fn beeline_nostd_session(pn: u64) -> u32 {
    let cipher = SessionCipher::new([7; 16]);
    let header = [0u8; HEADER_LEN];
    let mut payload = [1u8; 32];
    let tag = cipher.seal_in_place(pn, &header, &mut payload);
    let opened = cipher.open_in_place(pn, &header, &mut payload, &tag).is_ok();
    let mut window = ReplayWindow::new();
    u32::from(opened) + u32::from(window.check_and_update(pn).is_ok())
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
