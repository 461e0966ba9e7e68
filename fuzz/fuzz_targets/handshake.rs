//! One untrusted datagram as a protocol v2 handshake message (Initiate, Challenge,
//! Confirm, Accept): the checked view, its accessors, `mac1` and the seal. The logic lives
//! in `beeline_dataplane::testkit::fuzzing` so that the corpus replay test runs exactly the
//! same checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| beeline_dataplane::testkit::fuzzing::fuzz_handshake(data));
