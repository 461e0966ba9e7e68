//! Fixed-capacity bitmap of received fragments.

/// Most fragments one chunk may be cut into (4 MiB at 512-byte fragments).
pub const FRAGMENTS_MAX: u32 = 8192;
const WORDS: usize = (FRAGMENTS_MAX as usize).div_ceil(64);

/// One bit per fragment index, `0..FRAGMENTS_MAX`.
#[derive(Clone)]
pub struct FragmentBitmap {
    words: [u64; WORDS],
    set_count: u32,
}

impl Default for FragmentBitmap {
    fn default() -> Self {
        Self::new()
    }
}

impl FragmentBitmap {
    pub const fn new() -> Self {
        Self { words: [0; WORDS], set_count: 0 }
    }

    pub fn clear(&mut self) {
        self.words = [0; WORDS];
        self.set_count = 0;
    }

    pub fn get(&self, index: u32) -> bool {
        assert!(index < FRAGMENTS_MAX);
        self.words[index as usize / 64] & (1 << (index % 64)) != 0
    }

    /// Sets a bit; returns `false` when it was already set (a duplicate).
    pub fn set(&mut self, index: u32) -> bool {
        assert!(index < FRAGMENTS_MAX);
        let word = &mut self.words[index as usize / 64];
        let bit = 1 << (index % 64);
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        self.set_count += 1;
        true
    }

    pub fn count(&self) -> u32 {
        self.set_count
    }

    /// Lowest index below `limit` whose bit is clear, or `limit` when all are set.
    pub fn first_clear(&self, limit: u32) -> u32 {
        assert!(limit <= FRAGMENTS_MAX);
        for (word_index, word) in self.words.iter().enumerate() {
            let base = word_index as u32 * 64;
            if base >= limit {
                break;
            }
            if *word != u64::MAX {
                return (base + (!*word).trailing_zeros()).min(limit);
            }
        }
        limit
    }

    /// Writes bits `start .. start + out.len() * 8` (LSB first within each byte) into `out`.
    pub fn export(&self, start: u32, limit: u32, out: &mut [u8]) {
        for (byte_index, byte) in out.iter_mut().enumerate() {
            let mut value = 0u8;
            for bit in 0..8 {
                let index = start + byte_index as u32 * 8 + bit;
                if index < limit && self.get(index) {
                    value |= 1 << bit;
                }
            }
            *byte = value;
        }
    }
}

/// Reads bit `offset` of an exported bitmap; bits beyond the slice read as clear.
pub fn exported_bit(bytes: &[u8], offset: u32) -> bool {
    bytes.get(offset as usize / 8).is_some_and(|byte| byte & (1 << (offset % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_clear_and_export() {
        let mut bitmap = FragmentBitmap::new();
        for i in 0..70 {
            assert!(bitmap.set(i));
        }
        assert!(!bitmap.set(3));
        bitmap.set(72);
        assert_eq!(bitmap.first_clear(100), 70);
        assert_eq!(bitmap.first_clear(70), 70);
        let mut out = [0u8; 2];
        bitmap.export(70, 100, &mut out);
        assert!(!exported_bit(&out, 0));
        assert!(exported_bit(&out, 2));
        assert_eq!(bitmap.count(), 71);
    }
}
