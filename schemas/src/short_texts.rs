//! Values derived from text cells (account and branch numbers, parsed dates),
//! remembered per distinct short text.

use polars::prelude::*;

/// Bytes of text an Arrow string view holds whole; longer texts are in buffers.
pub const INLINE_TEXT: u32 = 12;

/// A text column's one chunk, as polars keeps it.
pub type TextArray = <StringType as PolarsDataType>::Array;

/// The text at `row` as one integer if it is short: a text of up to
/// [`INLINE_TEXT`] bytes is held whole in its 16-byte view, so equal views are equal
/// texts. None for a longer text, whose view points into a buffer.
#[inline]
pub fn short_text_key(texts: &TextArray, row: usize) -> Option<u128> {
    let view = texts.views()[row];
    (view.length <= INLINE_TEXT).then(|| view.as_u128())
}

/// Values looked up once per distinct short text, by its view (one integer to hash
/// and compare). Longer texts are looked up every time: their views differ from one
/// batch to the next.
pub struct ShortTexts<V> {
    known: PlHashMap<u128, V>,
    /// The texts seen last, by a few bits of their view: the few distinct texts of a
    /// column (branches, accounts, days) are found here with one multiplication
    /// instead of a hash map lookup a row.
    recent: Box<[Option<(u128, V)>; RECENT]>,
}

const RECENT: usize = 256;

impl<V: Copy> Default for ShortTexts<V> {
    fn default() -> Self {
        ShortTexts {
            known: PlHashMap::default(),
            recent: Box::new([None; RECENT]),
        }
    }
}

/// The [`ShortTexts::recent`] slot of a view: the top bits of a multiplicative hash
/// of its two halves.
#[inline]
fn recent_slot(key: u128) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT.trailing_zeros())) as usize
}

impl<V: Copy> ShortTexts<V> {
    /// The value of the text at `row`; `look_up` gives it the first time. A value
    /// `look_up` refuses is not remembered.
    #[inline]
    pub fn try_get<E>(
        &mut self,
        texts: &TextArray,
        row: usize,
        look_up: impl FnOnce(&str) -> Result<V, E>,
    ) -> Result<V, E> {
        let Some(key) = short_text_key(texts, row) else {
            return look_up(texts.value(row));
        };
        let slot = &mut self.recent[recent_slot(key)];
        if let Some((recent, value)) = *slot {
            if recent == key {
                return Ok(value);
            }
        }
        let value = match self.known.get(&key) {
            Some(&value) => value,
            None => {
                let value = look_up(texts.value(row))?;
                self.known.insert(key, value);
                value
            }
        };
        *slot = Some((key, value));
        Ok(value)
    }

    /// The value of the text at `row`; `look_up` gives it the first time.
    #[inline]
    pub fn get(&mut self, texts: &TextArray, row: usize, look_up: impl FnOnce(&str) -> V) -> V {
        match self.try_get(texts, row, |text| {
            Ok::<V, std::convert::Infallible>(look_up(text))
        }) {
            Ok(value) => value,
        }
    }

    /// The value of each row's text (of `""` for an empty one), in row order.
    pub fn values(&mut self, column: &StringChunked, mut look_up: impl FnMut(&str) -> V) -> Vec<V> {
        if column.null_count() > 0 {
            return column
                .iter()
                .map(|text| look_up(text.unwrap_or_default()))
                .collect();
        }
        let mut values = Vec::with_capacity(column.len());
        for texts in column.downcast_iter() {
            values.extend((0..texts.len()).map(|row| self.get(texts, row, &mut look_up)));
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short texts are looked up once each, long ones every time, and every row
    /// gets its own text's value.
    #[test]
    fn short_texts_are_looked_up_once() {
        let texts = [
            "1010",
            "4000",
            "1010",
            "a text longer than twelve",
            "a text longer than twelve",
            "4000",
            "",
        ];
        let column = StringChunked::from_slice("account".into(), &texts);
        let mut looked_up = Vec::new();
        let values = ShortTexts::default().values(&column, |text| {
            looked_up.push(text.to_string());
            text.len()
        });
        assert_eq!(values, texts.map(str::len));
        assert_eq!(
            looked_up,
            [
                "1010",
                "4000",
                "a text longer than twelve",
                "a text longer than twelve",
                ""
            ]
        );
    }

    #[test]
    fn refused_values_are_not_remembered() {
        let column = StringChunked::from_slice("date".into(), &["bad", "bad"]);
        let texts = column.downcast_as_array();
        let mut short = ShortTexts::<u32>::default();
        let mut tries = 0;
        for row in 0..2 {
            let got = short.try_get(texts, row, |_| {
                tries += 1;
                Err("bad date")
            });
            assert_eq!(got, Err("bad date"));
        }
        assert_eq!(tries, 2);
    }
}
