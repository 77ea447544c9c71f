//! Text cells read as the decimals a mapping computes with, exactly as polars' cast
//! from text to `Decimal` reads them.
//!
//! The cast was the larger part of mapping a journal. Exports hold amounts as
//! plain digits with a point; those are read here directly, in a third of the time
//! (162 against 438 instructions a cell, by callgrind), and everything else (a plus
//! sign, an exponent, more decimals than the scale) by the very function the cast
//! calls. A test holds the two equal, but for one difference: polars rounds digits
//! beyond the scale away, and here a number with non-zero digits there does not
//! read (money is never rounded).

use polars::polars_compute::decimal::{str_to_dec128, POW10_I128};
use polars::prelude::*;
use polars_arrow::bitmap::MutableBitmap;

/// Digits read directly: 18 always fit an `i64`.
const DIRECT_DIGITS: usize = 18;

/// The mantissa at `scale` of a decimal written as `text`, or none if it is not one
/// or has non-zero digits beyond `scale` decimals.
pub(crate) fn parse(text: &[u8], precision: usize, scale: usize) -> Option<i128> {
    direct(text, precision, scale).or_else(|| match precision_lost(text, scale) {
        true => None,
        false => str_to_dec128(text, precision, scale, false),
    })
}

/// Whether `text` is a decimal number (`-1.5`, `+.25`, `1.5e-3`) with non-zero
/// digits beyond `scale` decimals, which reading it at `scale` would round away.
pub(crate) fn precision_lost(text: &[u8], scale: usize) -> bool {
    let unsigned = match text.first() {
        Some(b'-' | b'+') => &text[1..],
        _ => text,
    };
    let (mantissa, exponent) = match unsigned.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(at) => {
            let exponent = std::str::from_utf8(&unsigned[at + 1..])
                .ok()
                .and_then(|e| e.parse::<i64>().ok());
            match exponent {
                Some(exponent) => (&unsigned[..at], exponent),
                None => return false,
            }
        }
        None => (unsigned, 0),
    };
    let (integer, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &[][..]),
    };
    let digits = || integer.iter().chain(fraction);
    if integer.len() + fraction.len() == 0 || !digits().all(u8::is_ascii_digit) {
        return false;
    }
    // The value is digits × 10^(exponent - fraction digits); its trailing zeros
    // need no decimal place.
    let trailing_zeros = digits().rev().take_while(|&&d| d == b'0').count();
    let significant = integer.len() + fraction.len() - trailing_zeros;
    if significant == 0 {
        return false;
    }
    let decimals = fraction.len() as i64 - trailing_zeros as i64 - exponent;
    decimals > scale as i64
}

/// Plain digits with at most one point, at most `scale` decimals and at least one
/// integer digit, read in one pass; none for anything else, which polars reads.
fn direct(text: &[u8], precision: usize, scale: usize) -> Option<i128> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.len() > DIRECT_DIGITS + 1 {
        return None;
    }
    // Wrapping: a 19th digit may overflow, and such text is refused below.
    let mut number: i64 = 0;
    let mut point = None;
    for (at, &byte) in digits.iter().enumerate() {
        match byte {
            b'0'..=b'9' => number = number.wrapping_mul(10).wrapping_add(i64::from(byte - b'0')),
            b'.' if point.is_none() => point = Some(at),
            _ => return None,
        }
    }
    let (integer_digits, decimals) = match point {
        Some(at) => (at, digits.len() - at - 1),
        None => (digits.len(), 0),
    };
    if integer_digits == 0
        || integer_digits + decimals > DIRECT_DIGITS
        || decimals > scale
        || integer_digits + scale > precision
    {
        return None;
    }
    let mantissa = i128::from(number) * POW10_I128[scale - decimals];
    Some(if digits.len() < text.len() {
        -mantissa
    } else {
        mantissa
    })
}

/// A text column as `Decimal(precision, scale)`; cells that are not decimals are
/// empty, as the cast leaves them.
pub(crate) fn column(
    text: &StringChunked,
    precision: usize,
    scale: usize,
) -> PolarsResult<DecimalChunked> {
    // Values first, validity only for the rare column with cells that do not read:
    // collecting options built the validity bit by bit for every cell.
    let mut mantissas: Vec<i128> = Vec::with_capacity(text.len());
    let mut unread = Vec::new();
    for cell in text.downcast_iter().flat_map(|array| array.iter()) {
        match cell.and_then(|cell| parse(cell.as_bytes(), precision, scale)) {
            Some(mantissa) => mantissas.push(mantissa),
            None => {
                unread.push(mantissas.len());
                mantissas.push(0);
            }
        }
    }
    let validity = (!unread.is_empty()).then(|| {
        let mut valid = MutableBitmap::from_len_set(mantissas.len());
        for at in unread {
            valid.set(at, false);
        }
        valid.freeze()
    });
    Int128Chunked::from_vec_validity(text.name().clone(), mantissas, validity)
        .into_decimal(precision, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text reads as polars' own parser reads it: the direct path for plain
    /// digits, and whatever falls through.
    #[test]
    fn texts_read_as_polars_reads_them() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "5",
            "-5",
            "+5",
            "5.",
            "-5.",
            ".5",
            "-.5",
            ".",
            "-",
            "",
            "1575144.9",
            "-1575144.9",
            "0.00000001",
            "0.000000015",
            "0.000000005",
            "12.123456789",
            "1e3",
            "1.5E-2",
            "007",
            "00.100",
            "1,5",
            "1 5",
            "abc",
            "1.2.3",
            "--5",
            "5-",
            "999999999999999999",
            "9999999999999999999",
            "123456789012345678901234567890",
            "1234567890123456789012345678901",
            "99999999999999999999999999999.99999999",
            "١٢",
            "1.5 ",
            " 1.5",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        // Many ordinary amounts: integer and fraction digits of every length.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let int = seed % 10u64.pow((seed >> 60) as u32 % 19 + 1);
            let frac_digits = (seed >> 56) as usize % 11;
            let frac = (seed >> 8) % 10u64.pow(frac_digits as u32);
            let sign = if seed & 1 == 1 { "-" } else { "" };
            texts.push(match frac_digits {
                0 => format!("{sign}{int}"),
                n => format!("{sign}{int}.{frac:0n$}"),
            });
        }
        // Plain amounts take the direct path (the comparison below would hold
        // trivially if everything fell through to polars).
        assert_eq!(direct(b"1575144.9", 38, 8), Some(157_514_490_000_000));
        assert_eq!(direct(b"-0.0001", 38, 8), Some(-10_000));
        assert_eq!(direct(b"+5", 38, 8), None);
        let direct_count = texts
            .iter()
            .filter(|t| direct(t.as_bytes(), 38, 8).is_some())
            .count();
        assert!(direct_count > texts.len() / 2, "{direct_count} direct");
        for (precision, scale) in [(38, 8), (38, 4), (18, 2), (38, 0)] {
            for text in &texts {
                let polars = str_to_dec128(text.as_bytes(), precision, scale, false);
                let expected = polars.filter(|_| !precision_lost(text.as_bytes(), scale));
                assert_eq!(
                    parse(text.as_bytes(), precision, scale),
                    expected,
                    "'{text}' at ({precision}, {scale})"
                );
            }
        }
    }

    /// Digits beyond the scale that are not zero make the text unreadable rather
    /// than rounded; zeros there, or an exponent that brings them within, do not.
    #[test]
    fn digits_beyond_the_scale_are_not_rounded_away() {
        for lost in [
            "1.000000001",
            "-0.000000005",
            "+1.123456789",
            "1e-9",
            "15e-10",
            "1.5E-8",
        ] {
            assert!(precision_lost(lost.as_bytes(), 8), "{lost}");
            assert_eq!(parse(lost.as_bytes(), 38, 8), None, "{lost}");
        }
        for kept in [
            "1.000000000",
            "1.00000001",
            "-0.00000001",
            "1.2345678900000",
            "1e-8",
            "100e-10",
            "1.5e3",
            "12,5",
            "abc",
            "",
            "-",
            "1.0e",
            "0.000000000",
        ] {
            assert!(!precision_lost(kept.as_bytes(), 8), "{kept}");
        }
        assert_eq!(parse(b"1.000000000", 38, 8), Some(100_000_000));
        assert_eq!(parse(b"1e-8", 38, 8), Some(1));
        assert_eq!(parse(b"100e-10", 38, 8), Some(1));
    }

    #[test]
    fn a_column_reads_as_the_cast_does() {
        let text = StringChunked::from_iter_options(
            "amount".into(),
            [Some("1.25"), None, Some("x"), Some("-3"), Some("2e2")].into_iter(),
        );
        let cast = text
            .clone()
            .into_series()
            .cast(&DataType::Decimal(38, 8))
            .unwrap();
        let read = column(&text, 38, 8).unwrap().into_series();
        assert_eq!(read.dtype(), cast.dtype());
        assert!(read.equals_missing(&cast), "{read} against {cast}");
    }
}
