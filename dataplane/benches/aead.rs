//! AEAD candidates for protocol v2 (issue #10): what sealing and opening a datagram in
//! place costs with RustCrypto's `aes-gcm` and with `ring`, both AES-128-GCM, against the
//! keyed BLAKE3 MAC that protocol v1 computed (`wire::v1`: a 16-byte tag read
//! from the XOF over header and payload).
//!
//! Every row works on one message of `SIZE` payload bytes behind a 64-byte header used as
//! AAD, the way a datagram lies in its arena frame:
//!
//! - `aes-gcm/seal`, `ring/seal`: encrypt the payload in place, return the 16-byte tag.
//! - `aes-gcm/open`, `ring/open`: check the tag and decrypt in place (every open succeeds:
//!   each iteration gets a fresh copy of the sealed message, copied outside the timing).
//! - `aes-gcm/gmac-seal`, `ring/gmac-seal`, `.../gmac-open`: authenticate only, i.e. GCM
//!   with header and payload both as AAD and nothing encrypted (GMAC), to see whether
//!   `wire_encryption = false` would be measurably cheaper.
//! - `blake3-mac/seal`, `blake3-mac/verify`: the v1 MAC over the same 64 + `SIZE` bytes.
//!
//! Two clocks: the group `aead` is wall time (criterion's default), the group `aead-cpu`
//! is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), which leaves out the time the
//! thread was preempted on a busy machine. Throughput is reported in decimal GB/s of
//! payload; CPU-seconds per GB is 1 / (GB/s) of the `aead-cpu` rows. See
//! `docs/benchmarks.md`, "AEAD candidates for protocol v2".
//!
//! ```text
//! cargo bench -p beeline-dataplane --bench aead -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce as AesGcmNonce, Tag as AesGcmTag};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce as RingNonce, Tag as RingTag, UnboundKey};

const SIZES: [usize; 2] = [1400, 8192];
const AAD_LEN: usize = 64;
const KEY: [u8; 16] = [0x42; 16];

/// The nonce layout the session module uses: 4 zero bytes, then the packet number.
fn nonce(pn: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_be_bytes());
    n
}

/// A frame: `AAD_LEN` header bytes, then `size` payload bytes.
fn frame(size: usize) -> Vec<u8> {
    (0..AAD_LEN + size).map(|i| (i * 7 + 3) as u8).collect()
}

fn blake3_mac(key: &[u8; 32], header: &[u8], payload: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(header);
    hasher.update(payload);
    let mut mac = [0u8; 16];
    hasher.finalize_xof().fill(&mut mac);
    mac
}

fn bench_aead<M: Measurement>(c: &mut Criterion<M>, group_name: &str) {
    let rc = Aes128Gcm::new(&KEY.into());
    let rg = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).expect("AES-128 key"));
    let mac_key = [0x5a; 32];

    let mut group = c.benchmark_group(group_name);
    for size in SIZES {
        group.throughput(Throughput::BytesDecimal(size as u64));
        let pn = 7u64;

        // aes-gcm (RustCrypto)
        let mut buf = frame(size);
        group.bench_function(format!("aes-gcm/seal/{size}"), |b| {
            b.iter(|| {
                let (aad, payload) = buf.split_at_mut(AAD_LEN);
                let n = AesGcmNonce::from(nonce(pn));
                black_box(rc.encrypt_inout_detached(&n, black_box(aad), payload.into()).expect("seal"))
            })
        });
        let mut sealed = frame(size);
        let (aad, payload) = sealed.split_at_mut(AAD_LEN);
        let tag = rc.encrypt_inout_detached(&AesGcmNonce::from(nonce(pn)), aad, payload.into()).expect("seal");
        group.bench_function(format!("aes-gcm/open/{size}"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    let (aad, payload) = buf.split_at_mut(AAD_LEN);
                    let n = AesGcmNonce::from(nonce(pn));
                    rc.decrypt_inout_detached(&n, black_box(aad), payload.into(), &tag).expect("open");
                },
                BatchSize::SmallInput,
            )
        });
        let whole = frame(size);
        group.bench_function(format!("aes-gcm/gmac-seal/{size}"), |b| {
            b.iter(|| {
                let n = AesGcmNonce::from(nonce(pn));
                black_box(rc.encrypt_inout_detached(&n, black_box(&whole), (&mut [][..]).into()).expect("gmac"))
            })
        });
        let gmac_tag: AesGcmTag =
            rc.encrypt_inout_detached(&AesGcmNonce::from(nonce(pn)), &whole, (&mut [][..]).into()).expect("gmac");
        group.bench_function(format!("aes-gcm/gmac-open/{size}"), |b| {
            b.iter(|| {
                let n = AesGcmNonce::from(nonce(pn));
                rc.decrypt_inout_detached(&n, black_box(&whole), (&mut [][..]).into(), &gmac_tag).expect("gmac verify")
            })
        });

        // ring
        let mut buf = frame(size);
        group.bench_function(format!("ring/seal/{size}"), |b| {
            b.iter(|| {
                let (aad, payload) = buf.split_at_mut(AAD_LEN);
                let n = RingNonce::assume_unique_for_key(nonce(pn));
                black_box(rg.seal_in_place_separate_tag(n, Aad::from(black_box(&*aad)), payload).expect("seal"))
            })
        });
        let mut sealed = frame(size);
        let (aad, payload) = sealed.split_at_mut(AAD_LEN);
        let tag: [u8; 16] = rg
            .seal_in_place_separate_tag(RingNonce::assume_unique_for_key(nonce(pn)), Aad::from(&*aad), payload)
            .expect("seal")
            .as_ref()
            .try_into()
            .expect("16-byte tag");
        group.bench_function(format!("ring/open/{size}"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    let (aad, payload) = buf.split_at_mut(AAD_LEN);
                    let n = RingNonce::assume_unique_for_key(nonce(pn));
                    rg.open_in_place_separate_tag(n, Aad::from(black_box(&*aad)), RingTag::from(tag), payload, 0..)
                        .expect("open");
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("ring/gmac-seal/{size}"), |b| {
            b.iter(|| {
                let n = RingNonce::assume_unique_for_key(nonce(pn));
                black_box(rg.seal_in_place_separate_tag(n, Aad::from(black_box(&whole[..])), &mut []).expect("gmac"))
            })
        });
        let gmac_tag: [u8; 16] = rg
            .seal_in_place_separate_tag(RingNonce::assume_unique_for_key(nonce(pn)), Aad::from(&whole[..]), &mut [])
            .expect("gmac")
            .as_ref()
            .try_into()
            .expect("16-byte tag");
        group.bench_function(format!("ring/gmac-open/{size}"), |b| {
            b.iter(|| {
                let n = RingNonce::assume_unique_for_key(nonce(pn));
                black_box(
                    rg.open_in_place_separate_tag(
                        n,
                        Aad::from(black_box(&whole[..])),
                        RingTag::from(gmac_tag),
                        &mut [],
                        0..,
                    )
                    .expect("gmac verify")
                    .len(),
                )
            })
        });

        // keyed BLAKE3 MAC, as wire.rs computes it
        let mut buf = frame(size);
        group.bench_function(format!("blake3-mac/seal/{size}"), |b| {
            b.iter(|| {
                let (header, payload) = buf.split_at_mut(AAD_LEN);
                let mac = blake3_mac(&mac_key, black_box(header), black_box(payload));
                header[AAD_LEN - 16..].copy_from_slice(&mac);
            })
        });
        let (header, payload) = whole.split_at(AAD_LEN);
        let expected = blake3_mac(&mac_key, header, payload);
        group.bench_function(format!("blake3-mac/verify/{size}"), |b| {
            b.iter(|| {
                let mac = blake3_mac(&mac_key, black_box(header), black_box(payload));
                let mut difference = 0u8;
                for (a, b) in mac.iter().zip(&expected) {
                    difference |= a ^ b;
                }
                assert_eq!(difference, 0);
            })
        });
    }
    group.finish();
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; the clock id is a
    // constant Linux supports for the calling thread.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Criterion measurement: the benchmark thread's CPU time instead of wall time.
struct ThreadCpuTime;

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns(cpu)"
    }

    fn scale_throughputs(&self, _typical: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        let bytes = match *throughput {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => b as f64,
            _ => return "ns(cpu)",
        };
        for v in values {
            // bytes per CPU-nanosecond = GB per CPU-second
            *v = bytes / *v;
        }
        "GB/cpu-s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns(cpu)"
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

fn wall(c: &mut Criterion) {
    bench_aead(c, "aead");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    bench_aead(c, "aead-cpu");
}

criterion_group!(wall_clock, wall);
criterion_group! {
    name = cpu_clock;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_clock, cpu_clock);
