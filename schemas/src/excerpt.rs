//! Values quoted in messages, bounded: an error about a 5 MB cell names its first
//! characters, not the whole cell, so answers, logs and load records stay small.

use std::borrow::Cow;

/// Characters of a value quoted in a message before it is cut.
pub const EXCERPT_CHARS: usize = 80;

/// `text` as a message quotes it: whole if short, else its first
/// [`EXCERPT_CHARS`] characters and "…".
pub fn excerpt(text: &str) -> Cow<'_, str> {
    bounded(text, EXCERPT_CHARS)
}

/// `text` cut to its first `max_chars` characters and "…" if it is longer.
pub fn bounded(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_stay_whole_and_long_ones_are_cut_on_a_character() {
        assert_eq!(excerpt("12.5x"), "12.5x");
        let exact = "a".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact.as_str());
        let long = "é".repeat(5_000_000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with("é…"));
        assert_eq!(bounded("abcdef", 3), "abc…");
    }
}
