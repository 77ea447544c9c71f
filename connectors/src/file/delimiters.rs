//! Positions of the delimiters of plain CSV text (`,` and `\n`, or line ends alone),
//! found 64 bytes at a time.
//!
//! `memchr2_iter` is made for sparse matches: each call sets up a vector search anew
//! from the last match, which for cells of a few bytes cost more than reading the
//! cells (a tenth of a journal import's instructions). Here each 64-byte block is
//! compared once into a bit mask, and its delimiters are read off the mask.

/// An iterator over the positions of the bytes `a` and `b` in a text, in order: the
/// same positions as `memchr::memchr2_iter(a, b, bytes)`.
pub(crate) struct Delimiters<'a> {
    bytes: &'a [u8],
    a: u8,
    b: u8,
    /// Where the block that `mask` describes starts.
    block: usize,
    /// Delimiters of the block not yet returned, a bit per byte.
    mask: u64,
}

const BLOCK: usize = 64;

impl<'a> Delimiters<'a> {
    pub(crate) fn new(a: u8, b: u8, bytes: &'a [u8]) -> Delimiters<'a> {
        let mut delimiters = Delimiters {
            bytes,
            a,
            b,
            block: 0,
            mask: 0,
        };
        delimiters.mask = delimiters.mask_at(0);
        delimiters
    }

    fn mask_at(&self, start: usize) -> u64 {
        match self.bytes.get(start..start + BLOCK) {
            Some(block) => block_mask(block.try_into().expect("64 bytes"), self.a, self.b),
            None => scalar_mask(self.bytes.get(start..).unwrap_or_default(), self.a, self.b),
        }
    }
}

impl Iterator for Delimiters<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            if self.block + BLOCK >= self.bytes.len() {
                return None;
            }
            self.block += BLOCK;
            self.mask = self.mask_at(self.block);
        }
        let at = self.block + self.mask.trailing_zeros() as usize;
        // Clears the lowest set bit.
        self.mask &= self.mask - 1;
        Some(at)
    }
}

/// Bit `i` set where byte `i` of the block is `a` or `b`. SSE2 is part of every
/// x86-64 processor: four 16-byte compares.
#[cfg(target_arch = "x86_64")]
#[inline]
fn block_mask(block: &[u8; BLOCK], a: u8, b: u8) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut mask = 0u64;
    // SAFETY: SSE2 is part of x86-64, so these instructions exist on every processor
    // this target runs on; each load reads the 16 bytes of `part`, unaligned.
    unsafe {
        let (a, b) = (_mm_set1_epi8(a as i8), _mm_set1_epi8(b as i8));
        for (i, part) in block.chunks_exact(16).enumerate() {
            let bytes = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
            let found = _mm_or_si128(_mm_cmpeq_epi8(bytes, a), _mm_cmpeq_epi8(bytes, b));
            mask |= u64::from(_mm_movemask_epi8(found) as u16) << (i * 16);
        }
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn block_mask(block: &[u8; BLOCK], a: u8, b: u8) -> u64 {
    scalar_mask(block, a, b)
}

/// [`block_mask`] a byte at a time, for the last bytes of a text (up to 64).
fn scalar_mask(bytes: &[u8], a: u8, b: u8) -> u64 {
    bytes.iter().enumerate().fold(0, |mask, (i, &byte)| {
        mask | u64::from(byte == a || byte == b) << i
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same positions as memchr's, for texts of every length around the block size
    /// and delimiters anywhere, including at both ends of blocks.
    #[test]
    fn finds_what_memchr_finds() {
        let alphabet = b"ab,\n\r\"x\xc3\xa9 ";
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for length in (0..300).chain([1000, 4096, 4097]) {
            for _ in 0..4 {
                let text: Vec<u8> = (0..length)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let ours: Vec<usize> = Delimiters::new(b',', b'\n', &text).collect();
                let theirs: Vec<usize> = memchr::memchr2_iter(b',', b'\n', &text).collect();
                assert_eq!(ours, theirs, "length {length}");
            }
        }
        let all = vec![b','; 130];
        assert_eq!(Delimiters::new(b',', b'\n', &all).count(), 130);
        assert_eq!(Delimiters::new(b',', b'\n', b"").next(), None);
    }
}
