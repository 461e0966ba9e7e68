//! One untrusted datagram as a reply to client put, get and ping machines in flight.
//! The logic lives in `beeline_dataplane::testkit::fuzzing` so that the corpus replay test runs
//! exactly the same checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| beeline_dataplane::testkit::fuzzing::fuzz_client(data));
