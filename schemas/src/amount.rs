//! Money as exact fixed-point: an `i64` count of ten-thousandths of the tenant's base
//! currency. Four fractional digits keep the fractional rupiah POS systems report
//! (`-755.0125`) exactly; an `i64` still holds 922 trillion whole units, far beyond a
//! chain's yearly turnover, and sums stay exact integers in every store.
//!
//! There is no `+`, `-` or `Sum` on amounts: a sum beyond the `i64` wraps silently in
//! a release build, so every sum goes through the `checked_*` methods and its caller
//! says, in its own terms, which figure would not fit.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::excerpt::excerpt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("'{}' is not a decimal number", excerpt(.0))]
    NotANumber(String),
    #[error("'{}' has more than {SCALE} decimal places; round it in the source or mapping", excerpt(.0))]
    TooPrecise(String),
    #[error("'{}' is too large for an amount", excerpt(.0))]
    Overflow(String),
}

/// Fractional digits kept exactly.
pub const SCALE: u32 = 4;

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// The largest amount, 922337203685477.5807.
    pub const MAX: Amount = Amount(i64::MAX);
    /// The smallest amount, -922337203685477.5808.
    pub const MIN: Amount = Amount(i64::MIN);

    /// From the stored representation (ten-thousandths).
    pub const fn from_units(units: i64) -> Self {
        Amount(units)
    }

    /// The stored representation (ten-thousandths).
    pub const fn units(self) -> i64 {
        self.0
    }

    pub fn from_decimal(value: Decimal) -> Result<Self, AmountError> {
        let normalized = value.normalize();
        if normalized.scale() > SCALE {
            return Err(AmountError::TooPrecise(normalized.to_string()));
        }
        let mut scaled = normalized;
        scaled.rescale(SCALE);
        let mantissa = scaled.mantissa();
        i64::try_from(mantissa)
            .map(Amount)
            .map_err(|_| AmountError::Overflow(value.to_string()))
    }

    /// From a mantissa and scale as produced by a decimal column (e.g. polars `Decimal`).
    pub fn from_scaled(mantissa: i128, scale: u32) -> Result<Self, AmountError> {
        let value = Decimal::try_from_i128_with_scale(mantissa, scale)
            .map_err(|_| AmountError::Overflow(format!("{mantissa}e-{scale}")))?;
        Self::from_decimal(value)
    }

    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, SCALE).normalize()
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `self / whole` as a percentage rounded to two places; `None` when `whole` is zero.
    pub fn percent_of(self, whole: Amount) -> Option<Decimal> {
        if whole.0 == 0 {
            return None;
        }
        let ratio = Decimal::from(self.0) * Decimal::ONE_HUNDRED / Decimal::from(whole.0);
        Some(ratio.round_dp(2).normalize())
    }

    /// `self + other`; none if the sum is beyond [`Amount::MIN`]..=[`Amount::MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`; none if the difference is out of range.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// `-self`; none for [`Amount::MIN`], whose opposite is out of range.
    pub fn checked_neg(self) -> Option<Amount> {
        self.0.checked_neg().map(Amount)
    }

    /// The sum of `amounts`; none if some partial sum is out of range.
    pub fn checked_sum(amounts: impl IntoIterator<Item = Amount>) -> Option<Amount> {
        amounts
            .into_iter()
            .try_fold(Amount::ZERO, |sum, amount| sum.checked_add(amount))
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses a plain decimal (`-755.0125`, `45900.9`, `1e3`), never through a float.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let value = Decimal::from_str_exact(trimmed)
            .or_else(|_| Decimal::from_scientific(trimmed))
            .map_err(|_| AmountError::NotANumber(s.to_string()))?;
        Self::from_decimal(value)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_decimal(), f)
    }
}

/// Amounts travel as JSON strings so that no client parses them into a float.
impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A decimal string such as `"-755.0125"`: never a JSON number, so no client reads it
/// into a float.
impl schemars::JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,4})?$",
            "description": "Exact decimal amount in the tenant's base currency, at most 4 fractional digits.",
            "examples": ["45900.9", "-755.0125"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This crate is built for tests without overflow checks, as a release build is
    /// (see the workspace Cargo.toml): a sum left unchecked wraps in the tests as in
    /// production, so they show the checks rather than a debug build's panic.
    #[test]
    fn tests_run_with_release_arithmetic() {
        let largest = std::hint::black_box(i64::MAX);
        assert_eq!(largest + 1, i64::MIN);
    }

    #[test]
    fn parses_fractional_rupiah_exactly() {
        assert_eq!("-755.0125".parse::<Amount>().unwrap().units(), -7_550_125);
        assert_eq!("45900.9".parse::<Amount>().unwrap().to_string(), "45900.9");
        assert_eq!("1e3".parse::<Amount>().unwrap().units(), 10_000_000);
    }

    #[test]
    fn refuses_what_it_cannot_keep() {
        assert!(matches!(
            "1.00001".parse::<Amount>(),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(
            "12,5".parse::<Amount>(),
            Err(AmountError::NotANumber(_))
        ));
        assert!(matches!(
            "1e20".parse::<Amount>(),
            Err(AmountError::Overflow(_))
        ));
    }

    #[test]
    fn sums_without_drift() {
        let tenth: Amount = "0.1".parse().unwrap();
        let total = Amount::checked_sum(std::iter::repeat_n(tenth, 10)).unwrap();
        assert_eq!(total.to_string(), "1");
    }

    /// Sums beyond the range are refused, not wrapped: two largest amounts and
    /// 0.0002 wrap to exactly zero in two's complement.
    #[test]
    fn sums_out_of_range_are_none() {
        let least = Amount::from_units(2);
        assert_eq!(Amount::checked_sum([Amount::MAX, Amount::MAX, least]), None);
        assert_eq!(
            Amount::MAX
                .units()
                .wrapping_add(Amount::MAX.units())
                .wrapping_add(2),
            0
        );
        assert_eq!(Amount::MAX.checked_add(least), None);
        assert_eq!(Amount::MIN.checked_sub(least), None);
        assert_eq!(Amount::MIN.checked_neg(), None);
        assert_eq!(
            Amount::MAX.checked_neg(),
            Some(Amount::from_units(-i64::MAX))
        );
        assert_eq!(
            Amount::checked_sum([Amount::MAX, Amount::MIN, least]),
            Some(Amount::from_units(1))
        );
        assert_eq!(Amount::MAX.to_string(), "922337203685477.5807");
    }

    #[test]
    fn percent_rounds_only_the_ratio() {
        let part: Amount = "1".parse().unwrap();
        let whole: Amount = "3".parse().unwrap();
        assert_eq!(part.percent_of(whole).unwrap().to_string(), "33.33");
        assert_eq!(part.percent_of(Amount::ZERO), None);
    }
}
