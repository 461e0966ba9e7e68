//! The order-independent payload checksum.
//!
//! The payload checksum is the standard crc32c of the whole payload, which is what the
//! restart scan recomputes while streaming the payload. Fragments reach `write_at` in any
//! order, so the writer cannot simply feed them to a running crc. Instead it uses the
//! linearity of the CRC over GF(2): with `raw(m)` the CRC register after feeding `m` into
//! a zero register,
//!
//! ```text
//! raw(payload) = XOR over fragments f of shift(raw(f), bytes of payload after f)
//! crc32c(payload) = !(shift(0xFFFF_FFFF, payload_len) ^ raw(payload))
//! ```
//!
//! where `shift(r, n)` (feeding `n` zero bytes) is a multiplication by `x^(8n)` modulo the
//! Castagnoli polynomial (a few hundred shift-and-xor steps). A fragment that starts where
//! the previous one ended simply continues a running register at plain crc32c speed; only
//! a fragment that starts elsewhere closes the run and pays for one shift, so in-order
//! arrival costs two shifts per chunk. The writer reads each fragment exactly once, from
//! the caller's slice; no payload is copied or read back, and the result does not depend
//! on how the payload was split or ordered.
//! Bytes that were never written read back as zeros (the space is `fallocate`d) and count
//! as zeros in the checksum too, so the checksum always matches what is on disk.

/// The Castagnoli polynomial, bit-reflected (as the crc32c register uses it).
const POLY: u32 = 0x82F6_3B78;

/// `a * b mod P` over GF(2), both in reflected order (bit 31 is the `x^0` term).
const fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut product = 0u32;
    let mut bit = 0;
    while bit < 32 {
        if a & (1u32 << (31 - bit)) != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        bit += 1;
    }
    product
}

/// `X_POW_2K[k]` is `x^(2^k) mod P`.
const X_POW_2K: [u32; 64] = {
    let mut table = [0u32; 64];
    let mut power = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 64 {
        table[k] = power;
        power = mul_mod_p(power, power);
        k += 1;
    }
    table
};

/// `x^(8 * len_bytes) mod P`: the operator that feeds `len_bytes` zero bytes.
fn x_pow_8n(len_bytes: u64) -> u32 {
    let mut result = 1u32 << 31; // x^0
    let mut rest = len_bytes;
    let mut k = 3; // 8 = 2^3
    while rest != 0 && k < 64 {
        if rest & 1 != 0 {
            result = mul_mod_p(X_POW_2K[k], result);
        }
        rest >>= 1;
        k += 1;
    }
    result
}

/// The register after feeding `len_bytes` zero bytes into `register`.
pub(super) fn shift(register: u32, len_bytes: u64) -> u32 {
    mul_mod_p(x_pow_8n(len_bytes), register)
}

/// The CRC register after feeding `data` into a zero register (no pre/post inversion).
#[cfg(test)]
pub(super) fn raw(data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!0, data)
}

/// The crc32c of a payload whose fragments arrive in any order.
///
/// Fragments that continue the current run (start where the previous one ended) are
/// folded into the run's raw CRC at plain crc32c speed; a fragment anywhere else
/// closes the run, which is shifted into place once and XORed into `acc`. In-order
/// arrival therefore costs two shifts per chunk, fully scrambled arrival one per
/// fragment.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PayloadCrc {
    /// XOR of the closed runs, each shifted by the payload bytes after it.
    acc: u32,
    /// Raw CRC of the open run.
    run_raw: u32,
    /// Payload offset just past the open run.
    run_end: u64,
}

impl PayloadCrc {
    /// Adds `data`, written at `offset` of a `len_bytes` payload. Byte ranges must not
    /// overlap.
    pub(super) fn add(&mut self, offset: u64, data: &[u8], len_bytes: u64) {
        assert!(offset + data.len() as u64 <= len_bytes, "fragment past the payload");
        if offset != self.run_end {
            self.acc ^= shift(self.run_raw, len_bytes - self.run_end);
            self.run_raw = 0;
        }
        // Continue the raw register: crc32c_append inverts on the way in and out.
        self.run_raw = !crc32c::crc32c_append(!self.run_raw, data);
        self.run_end = offset + data.len() as u64;
    }

    /// The raw register of bytes `0..end` when every fragment so far continued one run
    /// from offset 0, which the caller asserts by naming where it ends; `None` otherwise.
    pub(super) fn prefix_raw(&self, end: u64) -> Option<u32> {
        (self.acc == 0 && self.run_end == end).then_some(self.run_raw)
    }

    /// The standard crc32c of the `len_bytes` payload (unwritten bytes count as zeros).
    pub(super) fn finish(&self, len_bytes: u64) -> u32 {
        assert!(self.run_end <= len_bytes, "payload shorter than its fragments");
        let raw = self.acc ^ shift(self.run_raw, len_bytes - self.run_end);
        // Standard crc32c starts from an all-ones register and inverts the result.
        !(shift(!0, len_bytes) ^ raw)
    }
}

/// The standard crc32c of a `len_bytes` piece of the payload from the raw registers of the
/// prefix before it (`raw_before`) and the prefix through it (`raw_through`): the CRC's
/// linearity gives `raw(piece) = raw_through ^ shift(raw_before, len_bytes)`.
pub(super) fn piece_crc(raw_before: u32, raw_through: u32, len_bytes: u64) -> u32 {
    let raw = raw_through ^ shift(raw_before, len_bytes);
    !(shift(!0, len_bytes) ^ raw)
}
