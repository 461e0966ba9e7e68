//! AES-128-GCM for one direction of a session, sealing and opening datagrams in place in
//! their arena frames, over `ring` (BoringSSL's assembly: AES-NI + CLMUL, and the stitched
//! VAES/VPCLMULQDQ + AVX2 path where the CPU has it, picked at run time). See
//! `docs/benchmarks.md`, "AEAD candidates for protocol v2", for why `ring`.
//!
//! The nonce is 4 zero bytes followed by the packet number, big-endian:
//!
//! ```text
//! nonce = 00 00 00 00 ‖ pn (u64, big-endian)
//! ```
//!
//! It is unique only as long as a key seals each packet number at most once: a session
//! has **one key per direction** (issue #10's handshake derives them), each direction
//! counts its packet numbers up from 0 and never reuses or wraps one. Sealing two
//! different payloads under one key and one packet number gives away their XOR and the
//! GHASH key: [`SessionCipher`] can't check this, its caller's packet counter must.
//!
//! There is no authenticate-only (GMAC) variant: with `ring`, GCM over header and payload
//! as AAD alone measured about four times slower than sealing the payload (its AAD path
//! is not the stitched one), so `wire_encryption = false` would cost more, not less.

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

/// AES-128 key bytes.
pub const KEY_LEN: usize = 16;
/// GCM tag bytes carried with each datagram.
pub const TAG_LEN: usize = 16;
/// GCM nonce bytes: 4 zero bytes and the 8-byte packet number.
pub const NONCE_LEN: usize = 12;

/// The tag did not verify: wrong key, wrong packet number, or altered AAD, payload or tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AeadError;

impl core::fmt::Display for AeadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AEAD tag did not verify")
    }
}

/// One direction's AES-128-GCM key, expanded once (round keys and GHASH table).
pub struct SessionCipher {
    key: LessSafeKey,
}

impl core::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionCipher(..)")
    }
}

/// The nonce for packet number `pn`.
pub fn nonce(pn: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[4..].copy_from_slice(&pn.to_be_bytes());
    nonce
}

impl SessionCipher {
    pub fn new(key: [u8; KEY_LEN]) -> Self {
        // `UnboundKey::new` fails only on a key of the wrong length, and this one is 16.
        let key = UnboundKey::new(&AES_128_GCM, &key).expect("16 bytes is an AES-128 key");
        Self { key: LessSafeKey::new(key) }
    }

    /// Encrypts `payload` in place and returns the tag over `aad` and the ciphertext.
    /// `pn` must never have been sealed under this key before (see the module doc).
    ///
    /// # Panics
    ///
    /// If `payload` is longer than GCM's limit of 2^36 - 32 bytes, which no datagram is.
    pub fn seal_in_place(&self, pn: u64, aad: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        self.seal_with_nonce(nonce(pn), aad, payload)
    }

    /// Checks `tag` over `aad` and the ciphertext in `payload`, then decrypts `payload` in
    /// place. On error `payload` holds unspecified bytes: drop the datagram.
    pub fn open_in_place(&self, pn: u64, aad: &[u8], payload: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        self.open_with_nonce(nonce(pn), aad, payload, tag)
    }

    fn seal_with_nonce(&self, nonce: [u8; NONCE_LEN], aad: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), payload)
            .expect("a datagram is far below GCM's length limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        payload: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                Tag::from(*tag),
                payload,
                0..,
            )
            .map(|_| ())
            .map_err(|_| AeadError)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const KEY: [u8; 16] = [0x42; 16];

    fn sample() -> (Vec<u8>, Vec<u8>) {
        let aad = (0..64u8).collect::<Vec<_>>();
        let payload = (0..300u32).map(|i| (i * 7 + 1) as u8).collect::<Vec<_>>();
        (aad, payload)
    }

    #[test]
    fn round_trip() {
        let cipher = SessionCipher::new(KEY);
        let (aad, plain) = sample();
        for len in [0, 1, 15, 16, 17, 64, 300] {
            let mut buf = plain[..len].to_vec();
            let tag = cipher.seal_in_place(9, &aad, &mut buf);
            if len > 0 {
                assert_ne!(buf, plain[..len]);
            }
            cipher.open_in_place(9, &aad, &mut buf, &tag).unwrap();
            assert_eq!(buf, plain[..len]);
        }
    }

    #[test]
    fn any_flipped_bit_fails() {
        let cipher = SessionCipher::new(KEY);
        let (aad, plain) = sample();
        let mut sealed = plain.clone();
        let tag = cipher.seal_in_place(3, &aad, &mut sealed);
        for bit in 0..aad.len() * 8 {
            let mut aad2 = aad.clone();
            aad2[bit / 8] ^= 1 << (bit % 8);
            let mut buf = sealed.clone();
            assert_eq!(cipher.open_in_place(3, &aad2, &mut buf, &tag), Err(AeadError));
        }
        for bit in 0..sealed.len() * 8 {
            let mut buf = sealed.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(cipher.open_in_place(3, &aad, &mut buf, &tag), Err(AeadError));
        }
        for bit in 0..TAG_LEN * 8 {
            let mut tag2 = tag;
            tag2[bit / 8] ^= 1 << (bit % 8);
            let mut buf = sealed.clone();
            assert_eq!(cipher.open_in_place(3, &aad, &mut buf, &tag2), Err(AeadError));
        }
        let mut buf = sealed.clone();
        cipher.open_in_place(3, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn wrong_packet_number_or_key_fails() {
        let cipher = SessionCipher::new(KEY);
        let (aad, plain) = sample();
        let mut sealed = plain.clone();
        let tag = cipher.seal_in_place(1 << 40, &aad, &mut sealed);
        for pn in [0, 1, (1 << 40) - 1, (1 << 40) + 1, 1 << 41, u64::MAX] {
            let mut buf = sealed.clone();
            assert_eq!(cipher.open_in_place(pn, &aad, &mut buf, &tag), Err(AeadError));
        }
        let other = SessionCipher::new([0x43; 16]);
        let mut buf = sealed.clone();
        assert_eq!(other.open_in_place(1 << 40, &aad, &mut buf, &tag), Err(AeadError));
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(nonce(0), [0; 12]);
        assert_eq!(nonce(0x0102_0304_0506_0708), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    /// McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)", test case 4
    /// (AES-128, 60-byte plaintext, 20-byte AAD, 96-bit IV); checked against Python's
    /// `cryptography` 48.0. Its IV has no zero prefix, so it goes through the inner call.
    #[test]
    fn known_answer_gcm_spec_test_case_4() {
        let key: [u8; 16] = hex("feffe9928665731c6d6a8f9467308308").try_into().unwrap();
        let iv: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plain = hex(concat!(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
        ));
        let cipher_text = hex(concat!(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e",
            "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
        ));
        let tag = hex("5bc94fbc3221a5db94fae95ae7121a47");

        let cipher = SessionCipher::new(key);
        let mut buf = plain.clone();
        let got = cipher.seal_with_nonce(iv, &aad, &mut buf);
        assert_eq!(buf, cipher_text);
        assert_eq!(got[..], tag[..]);
        cipher.open_with_nonce(iv, &aad, &mut buf, &got).unwrap();
        assert_eq!(buf, plain);
    }

    /// The same spec's test case 2 (zero key, zero IV, one zero block, no AAD): its IV is
    /// this module's nonce for packet number 0, so it runs through the public API.
    #[test]
    fn known_answer_gcm_spec_test_case_2_is_packet_zero() {
        let cipher = SessionCipher::new([0; 16]);
        let mut buf = [0u8; 16];
        let tag = cipher.seal_in_place(0, &[], &mut buf);
        assert_eq!(buf[..], hex("0388dace60b6a392f328c2b971b2fe78")[..]);
        assert_eq!(tag[..], hex("ab6e47d42cec13bdf53a67b21257bddf")[..]);
        cipher.open_in_place(0, &[], &mut buf, &tag).unwrap();
        assert_eq!(buf, [0; 16]);
    }

    /// Not a published vector: packet number 0x0102030405060708 with a 64-byte header as
    /// AAD, computed with Python's `cryptography` 48.0 (`AESGCM(key).encrypt(00000000 ‖
    /// pn, payload, aad)`), to pin the nonce's byte order end to end.
    #[test]
    fn cross_check_with_python_cryptography() {
        let cipher = SessionCipher::new([0x42; 16]);
        let aad = (0..64u8).collect::<Vec<_>>();
        let mut buf = (0..32u8).collect::<Vec<_>>();
        let tag = cipher.seal_in_place(0x0102_0304_0506_0708, &aad, &mut buf);
        assert_eq!(buf, hex("880b911ac14e597b9583f87d349af23f94297ffe6a3115e56fada8223ff39099"));
        assert_eq!(tag[..], hex("4a10251e66b09b444645c926416b0bd7")[..]);
    }
}
