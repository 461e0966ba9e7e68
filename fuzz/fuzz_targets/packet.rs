//! One untrusted datagram: the wire checks and round trip, then a storage node receiving
//! it as-is and re-sealed. The logic lives in `beeline_dataplane::testkit::fuzzing` so that the
//! corpus replay test runs exactly the same checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| beeline_dataplane::testkit::fuzzing::fuzz_packet(data));
