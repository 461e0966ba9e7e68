//! The rings against a model: two mappings of one memfd (a producer's and a consumer's)
//! driven by a seeded random schedule, checked against a `VecDeque`.

use std::collections::VecDeque;
use std::os::fd::AsFd;

use super::ring::{Layout, Region};
use super::{Hello, HelloStatus, sys};

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn ring_matches_a_vecdeque_model() {
    let layout = Layout::new(8, 4096, 0, 0).unwrap();
    let fd = sys::memfd(layout.bytes, false).expect("memfd");
    let producer = Region::map(fd.as_fd(), layout.bytes, layout).unwrap();
    let consumer = Region::map(fd.as_fd(), layout.bytes, layout).unwrap();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    // Indices start near the wrap point so that wrapping arithmetic is exercised.
    let start = u32::MAX - 20;
    producer.request_ring().publish(start);
    consumer.request_ring().release(start);
    let mut head = start;
    for seed in 1..=20u64 {
        let mut state = seed;
        for _ in 0..2000 {
            let ring = producer.request_ring();
            if xorshift(&mut state).is_multiple_of(2) {
                let free = layout.slots - head.wrapping_sub(ring.consumer_tail());
                if free == 0 {
                    assert_eq!(model.len(), layout.slots as usize, "ring full only when the model is");
                    continue;
                }
                let len = (xorshift(&mut state) % 4096) as usize;
                let byte = xorshift(&mut state) as u8;
                let message = vec![byte; len];
                let at = layout.request_frame(head);
                producer.write(at, &message);
                ring.set_descriptor(head, at as u32, len as u32);
                head = head.wrapping_add(1);
                ring.publish(head);
                model.push_back(message);
            } else {
                let ring = consumer.request_ring();
                let available = ring.producer_head().wrapping_sub(ring.own_tail());
                assert_eq!(available as usize, model.len());
                let take = (xorshift(&mut state) % 4) as u32;
                let mut tail = ring.own_tail();
                for _ in 0..take.min(available) {
                    let (offset, len) = ring.descriptor(tail);
                    let mut got = vec![0u8; len as usize];
                    consumer.read(offset as usize, &mut got);
                    assert_eq!(Some(got), model.pop_front());
                    tail = tail.wrapping_add(1);
                }
                ring.release(tail);
            }
        }
    }
}

#[test]
fn sleeping_consumer_is_seen_by_the_producer() {
    let layout = Layout::new(8, 4096, 0, 0).unwrap();
    let fd = sys::memfd(layout.bytes, false).expect("memfd");
    let region = Region::map(fd.as_fd(), layout.bytes, layout).unwrap();
    let ring = region.request_ring();
    assert!(!ring.consumer_sleeps());
    assert!(!ring.prepare_sleep(), "nothing queued: may sleep");
    assert!(ring.consumer_sleeps());
    ring.publish(1);
    assert!(ring.prepare_sleep(), "queued: must not sleep");
    ring.end_sleep();
    assert!(!ring.consumer_sleeps());
}

#[test]
fn hello_round_trips_and_rejects_garbage() {
    let hello = Hello {
        status: HelloStatus::Accepted,
        client_id: 7,
        node_port: 7777,
        slots: 2048,
        frame_bytes: 4096,
        bulk_slots: 4,
        bulk_slot_bytes: 4 << 20,
        huge: true,
        region_bytes: 1 << 24,
    };
    assert_eq!(Hello::decode(&hello.encode()), Some(hello));
    let mut bad = hello.encode();
    bad[0] ^= 1;
    assert_eq!(Hello::decode(&bad), None);
    assert_eq!(Hello::decode(&bad[..10]), None);
}

#[test]
fn slot_bytes_read_what_the_peer_wrote_and_outlive_their_region() {
    let layout = Layout::new(8, 4096, 2, 8192).unwrap();
    let fd = sys::memfd(layout.bytes, false).expect("memfd");
    let mut node = Region::map(fd.as_fd(), layout.bytes, layout).unwrap();
    let client = Region::map(fd.as_fd(), layout.bytes, layout).unwrap();
    let at = layout.bulk_slot(1).unwrap();
    node.bulk_mut(at, 8192).iter_mut().enumerate().for_each(|(i, byte)| *byte = i as u8);
    let bytes = client.slot_bytes(at, 8192);
    // The client reconnects: its old region goes, and a get still holding bytes of it reads on.
    drop(client);
    drop(node);
    drop(fd);
    assert_eq!(bytes.as_ref().len(), 8192);
    assert!(bytes.as_ref().iter().enumerate().all(|(i, byte)| *byte == i as u8));
}

#[test]
fn slot_bytes_are_only_the_bulk_area() {
    let layout = Layout::new(8, 4096, 2, 8192).unwrap();
    let fd = sys::memfd(layout.bytes, false).expect("memfd");
    let client = Region::map(fd.as_fd(), layout.bytes, layout).unwrap();
    let ring_frame = std::panic::catch_unwind(|| client.slot_bytes(layout.request_frame(0), 16));
    assert!(ring_frame.is_err(), "a request frame is not a bulk slot");
    let past_the_end = std::panic::catch_unwind(|| client.slot_bytes(layout.bulk_slot(1).unwrap(), 8193 + 4096));
    assert!(past_the_end.is_err(), "past the region's end");
}
