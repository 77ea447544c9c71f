//! A text column of a batch built from cells as Arrow string views, the layout
//! polars keeps text in.
//!
//! polars' own builder copies each short cell into its view through a copy of
//! variable length, and checks capacity and validity at every push; for a file of
//! short cells that was most of reading it. Here a cell of up to 12 bytes is taken
//! with one 16-byte load from the text around it, masked to its length, and empty
//! cells cost a validity bitmap only once there is one.

use polars::prelude::{IntoColumn, PlSmallStr, StringChunked};
use polars_arrow::array::{Utf8ViewArray, View};
use polars_arrow::bitmap::MutableBitmap;
use polars_arrow::datatypes::ArrowDataType;

/// Bytes of long cells a buffer holds at most (Arrow views address them with
/// 32-bit offsets).
const BUFFER_BYTES: usize = 1 << 30;

/// The low `n` bytes of a word, for each length a view holds inline: a load instead
/// of a 128-bit shift and subtraction per cell.
const INLINE_MASKS: [u128; View::MAX_INLINE_SIZE as usize + 1] = {
    let mut masks = [0; View::MAX_INLINE_SIZE as usize + 1];
    let mut length = 1;
    while length < masks.len() {
        masks[length] = (1 << (8 * length)) - 1;
        length += 1;
    }
    masks
};

pub(crate) struct TextColumn {
    name: PlSmallStr,
    views: Vec<View>,
    /// Bytes of cells longer than a view holds: buffers of at most
    /// [`BUFFER_BYTES`], the last one being filled.
    long: Vec<Vec<u8>>,
    /// [`BUFFER_BYTES`], but for tests.
    buffer_bytes: usize,
    /// Which cells are not empty, from the first empty one on.
    validity: Option<MutableBitmap>,
    total_bytes: usize,
}

impl TextColumn {
    pub(crate) fn new(name: &str, capacity: usize) -> TextColumn {
        TextColumn {
            name: name.into(),
            views: Vec::with_capacity(capacity),
            long: vec![Vec::new()],
            buffer_bytes: BUFFER_BYTES,
            validity: None,
            total_bytes: 0,
        }
    }

    /// Adds an empty cell.
    pub(crate) fn push_null(&mut self) {
        let validity = self.validity.get_or_insert_with(|| {
            let mut validity = MutableBitmap::with_capacity(self.views.capacity());
            validity.extend_constant(self.views.len(), true);
            validity
        });
        validity.push(false);
        self.views.push(View::default());
    }

    /// Adds a cell that lies within `text` (the chunk it was split from), which lets
    /// a short cell be read with one load when 16 bytes of `text` follow its start.
    #[inline]
    pub(crate) fn push_within(&mut self, cell: &str, text: &[u8]) {
        let start = cell.as_ptr() as usize - text.as_ptr() as usize;
        debug_assert!(
            start + cell.len() <= text.len(),
            "the cell lies in the text"
        );
        match text.get(start..start + 16) {
            Some(sixteen) if cell.len() <= View::MAX_INLINE_SIZE as usize => {
                let word = u128::from_le_bytes(sixteen.try_into().expect("16 bytes"));
                // A view holds the length in its low 32 bits and the bytes after it.
                let bytes = word & INLINE_MASKS[cell.len()];
                self.push_view(View::from(cell.len() as u128 | bytes << 32));
            }
            _ => self.push(cell),
        }
    }

    /// Adds a cell.
    pub(crate) fn push(&mut self, cell: &str) {
        let bytes = cell.as_bytes();
        let view = if bytes.len() <= View::MAX_INLINE_SIZE as usize {
            View::new_inline(bytes)
        } else {
            let limit = self.buffer_bytes;
            let full = |buffer: &Vec<u8>| buffer.len() + bytes.len() > limit;
            if self.long.last().is_some_and(full) {
                self.long.push(Vec::with_capacity(bytes.len()));
            }
            let index = self.long.len() - 1;
            let buffer = &mut self.long[index];
            // Both fit in 32 bits: a view's offset and buffer number are u32.
            let offset = buffer.len() as u32;
            buffer.extend_from_slice(bytes);
            View::new_from_bytes(bytes, index as u32, offset)
        };
        self.push_view(view);
    }

    #[inline]
    fn push_view(&mut self, view: View) {
        self.total_bytes += view.length as usize;
        self.views.push(view);
        if let Some(validity) = &mut self.validity {
            validity.push(true);
        }
    }

    pub(crate) fn finish(self) -> polars::prelude::Column {
        let total_buffer_len = self.long.iter().map(Vec::len).sum();
        let buffers: Vec<_> = match total_buffer_len {
            0 => Vec::new(),
            _ => self.long.into_iter().map(Into::into).collect(),
        };
        // SAFETY: every view is inline or points into its buffer at the offset its
        // bytes were written to, with their length and first four bytes; every
        // cell is a whole `str` (cells are split at ASCII delimiters), so the bytes
        // are UTF-8; the validity, if any, has a bit per view.
        let array = unsafe {
            Utf8ViewArray::new_unchecked(
                ArrowDataType::Utf8View,
                self.views.into(),
                buffers.into(),
                self.validity.map(Into::into),
                Some(self.total_bytes),
                total_buffer_len,
            )
        };
        StringChunked::with_chunk(self.name, array).into_column()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    /// Columns built from cells of every length, empty ones and non-ASCII text
    /// among them, equal polars' own builder's, whether the cells were read with
    /// one load or copied (near the end of their text).
    #[test]
    fn columns_equal_polars_own() {
        let cells = [
            "a",
            "",
            "2024-02-21",
            "T000000001",
            "exactly12byt",
            "thirteen byte",
            "Outlet Jakarta Selatan 01",
            "",
            "kopi susu ☕",
            "é",
            "1575144.9",
            "-1575144.9",
            "",
            "x",
        ];
        let text: String = cells.join(",");
        let mut within = TextColumn::new("c", 4);
        let mut copied = TextColumn::new("c", 4);
        // Long cells spread over several buffers.
        copied.buffer_bytes = 30;
        let mut expected = StringChunkedBuilder::new("c".into(), 4);
        for _ in 0..3 {
            let mut at = 0;
            for cell in cells {
                let slice = &text[at..at + cell.len()];
                at += cell.len() + 1;
                if cell.is_empty() {
                    within.push_null();
                    copied.push_null();
                    expected.append_null();
                } else {
                    within.push_within(slice, text.as_bytes());
                    copied.push(slice);
                    expected.append_value(slice);
                }
            }
        }
        let expected = expected.finish().into_column();
        assert!(copied.long.len() > 2, "{} buffers", copied.long.len());
        for built in [within.finish(), copied.finish()] {
            assert_eq!(built.len(), expected.len());
            assert!(
                built
                    .as_materialized_series()
                    .equals_missing(expected.as_materialized_series()),
                "{built:?} against {expected:?}"
            );
            let (built, expected) = (built.str().unwrap(), expected.str().unwrap());
            assert!(built.iter().eq(expected.iter()));
        }
    }
}
