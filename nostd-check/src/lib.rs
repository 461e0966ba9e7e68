//! Links the data plane core into a `no_std` static library with its own panic handler.
//! If anything in the core's dependency tree pulled in `std`, this crate would fail to
//! build with a duplicate `panic_impl` lang item. CI builds it (`ci/test.sh`).
#![no_std]

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

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
