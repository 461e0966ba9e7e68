//! One untrusted Ethernet frame as a DPDK port receives it: the ARP/ICMP responder and
//! the UDP parser. The logic lives in `beeline_dataplane::testkit::fuzzing` so that the corpus
//! replay test runs exactly the same checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| beeline_dataplane::testkit::fuzzing::fuzz_frame(data));
