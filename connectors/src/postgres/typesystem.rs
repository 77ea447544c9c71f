//! Postgres types and their canonical readings: ONE table from a type name
//! (`pg_type.typname`, a domain resolved to its base type) to how its values are
//! read, and the decoders of the binary wire forms into canonical text.
//!
//! Values are decoded from the binary forms sqlx receives (`PgValueRef::as_bytes`),
//! never through sqlx's own decoders: NUMERIC holds up to 131072 integer digits,
//! which no fixed-size decimal holds, so it is written digit by digit.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use ledgersync_schemas::time_text;
use std::fmt::Write as _;

use crate::source::CanonicalType;

/// How values of a Postgres type are read from their binary wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    Int2,
    Int4,
    Int8,
    Oid,
    Numeric,
    /// MONEY is selected as `money::numeric` and decoded as NUMERIC. Its binary
    /// form is an i64 in units of the session's `lc_monetary` currency (cents for
    /// most, whole yen for ja_JP, thousandths for ar_BH), so assuming a scale of 2
    /// would be wrong by powers of ten; the cast applies the server's own scale.
    MoneyAsNumeric,
    /// text, varchar, bpchar, name, citext, json: the bytes are the text itself
    /// (sqlx sets `client_encoding` to UTF8).
    Utf8,
    /// A version byte (1), then the JSON text.
    Jsonb,
    Uuid,
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    /// No exact canonical reading; the advice says what to do instead.
    Refused(&'static str),
}

const FLOAT_ADVICE: &str = "floating point is not exact; read the stream through a `query` \
     that casts the column to numeric (e.g. SELECT amount::numeric(18,4) AS amount, …)";
const OTHER_ADVICE: &str =
    "read the stream through a `query` that casts the column to text or numeric, or omits it";

/// The one place a Postgres type is given a reading; names not listed are refused
/// with [`OTHER_ADVICE`] (bytea, arrays, intervals, geometry, enums, …).
const TYPES: &[(&str, Reading)] = &[
    ("int2", Reading::Int2),
    ("int4", Reading::Int4),
    ("int8", Reading::Int8),
    ("oid", Reading::Oid),
    ("numeric", Reading::Numeric),
    ("money", Reading::MoneyAsNumeric),
    ("float4", Reading::Refused(FLOAT_ADVICE)),
    ("float8", Reading::Refused(FLOAT_ADVICE)),
    ("text", Reading::Utf8),
    ("varchar", Reading::Utf8),
    ("bpchar", Reading::Utf8),
    ("name", Reading::Utf8),
    ("citext", Reading::Utf8),
    ("json", Reading::Utf8),
    ("jsonb", Reading::Jsonb),
    ("uuid", Reading::Uuid),
    ("bool", Reading::Bool),
    ("date", Reading::Date),
    ("timestamp", Reading::Timestamp),
    ("timestamptz", Reading::TimestampTz),
];

/// The reading of the type named `typname` (as in `pg_type`).
pub(crate) fn reading(typname: &str) -> Reading {
    TYPES
        .iter()
        .find(|(name, _)| *name == typname)
        .map_or(Reading::Refused(OTHER_ADVICE), |(_, reading)| *reading)
}

impl Reading {
    pub(crate) fn canonical(self) -> Option<CanonicalType> {
        Some(match self {
            Reading::Int2 | Reading::Int4 | Reading::Int8 | Reading::Oid => CanonicalType::Integer,
            Reading::Numeric | Reading::MoneyAsNumeric => CanonicalType::Decimal,
            Reading::Utf8 | Reading::Jsonb | Reading::Uuid => CanonicalType::Text,
            Reading::Bool => CanonicalType::Boolean,
            Reading::Date => CanonicalType::Date,
            Reading::Timestamp => CanonicalType::Timestamp,
            Reading::TimestampTz => CanonicalType::TimestampTz,
            Reading::Refused(_) => return None,
        })
    }

    /// The type the column is cast to in the SELECT list, if not read as it is.
    pub(crate) fn select_cast(self) -> Option<&'static str> {
        matches!(self, Reading::MoneyAsNumeric).then_some("numeric")
    }

    /// The type a cursor's lower bound (a text parameter) is cast to in SQL.
    pub(crate) fn bound_cast(self) -> &'static str {
        match self {
            Reading::Int2 | Reading::Int4 | Reading::Int8 => "int8",
            Reading::Oid => "oid",
            Reading::Numeric => "numeric",
            Reading::MoneyAsNumeric => "money",
            Reading::Bool => "bool",
            Reading::Date => "date",
            Reading::Timestamp => "timestamp",
            Reading::TimestampTz => "timestamptz",
            Reading::Utf8 | Reading::Jsonb | Reading::Uuid | Reading::Refused(_) => "text",
        }
    }

    /// Whether values are instants: `timestamptz`, or `timestamp` read in the
    /// connector's source timezone. A read may hand these over as microseconds.
    pub(crate) fn is_instant(self, timezone: Option<Tz>) -> bool {
        match self {
            Reading::TimestampTz => true,
            Reading::Timestamp => timezone.is_some(),
            _ => false,
        }
    }

    /// An instant's microseconds since 1970 (UTC), the instant [`Reading::write_text`]
    /// writes.
    pub(crate) fn instant_micros(
        self,
        bytes: &[u8],
        timezone: Option<Tz>,
    ) -> Result<i64, CellError> {
        let what = match self {
            Reading::TimestampTz => "timestamptz",
            _ => "timestamp",
        };
        let naive = timestamp(i64::from_be_bytes(fixed(bytes)?), what)?;
        let instant = match (self, timezone) {
            (Reading::Timestamp, Some(tz)) => place(naive, tz)?,
            (Reading::TimestampTz, _) => naive.and_utc(),
            _ => return Err(CellError::Malformed("not an instant")),
        };
        // As the text of a placed time past 9999 is refused.
        if !in_range(chrono::Datelike::year(&instant)) {
            return Err(CellError::OutOfRange("timestamptz"));
        }
        Ok(instant.timestamp_micros())
    }

    /// The canonical text of a non-NULL value. A naive timestamp is placed in
    /// `timezone` (and written as `TimestampTz`) when there is one.
    pub(crate) fn to_text(self, bytes: &[u8], timezone: Option<Tz>) -> Result<String, CellError> {
        let mut text = String::new();
        self.write_text(bytes, timezone, &mut text)?;
        Ok(text)
    }

    /// [`Reading::to_text`], appended to `out` (a reader reuses one buffer for
    /// every cell rather than allocating each).
    pub(crate) fn write_text(
        self,
        bytes: &[u8],
        timezone: Option<Tz>,
        out: &mut String,
    ) -> Result<(), CellError> {
        let written = |result: std::fmt::Result| result.map_err(|_| CellError::Malformed("text"));
        match self {
            Reading::Int2 => written(write!(out, "{}", i16::from_be_bytes(fixed(bytes)?))),
            Reading::Int4 => written(write!(out, "{}", i32::from_be_bytes(fixed(bytes)?))),
            Reading::Int8 => written(write!(out, "{}", i64::from_be_bytes(fixed(bytes)?))),
            Reading::Oid => written(write!(out, "{}", u32::from_be_bytes(fixed(bytes)?))),
            Reading::Numeric | Reading::MoneyAsNumeric => push_numeric(bytes, out),
            Reading::Utf8 => {
                out.push_str(utf8(bytes)?);
                Ok(())
            }
            Reading::Jsonb => match bytes.split_first() {
                Some((1, json)) => {
                    out.push_str(utf8(json)?);
                    Ok(())
                }
                _ => Err(CellError::Malformed("jsonb")),
            },
            Reading::Uuid => {
                let b: [u8; 16] = fixed(bytes)?;
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        out.push('-');
                    }
                    written(write!(out, "{byte:02x}"))?;
                }
                Ok(())
            }
            Reading::Bool => match bytes {
                [0] => {
                    out.push_str("false");
                    Ok(())
                }
                [1] => {
                    out.push_str("true");
                    Ok(())
                }
                _ => Err(CellError::Malformed("bool")),
            },
            Reading::Date => {
                let date = date(i32::from_be_bytes(fixed(bytes)?))?;
                time_text::push_date(out, date).ok_or(CellError::OutOfRange("date"))
            }
            Reading::Timestamp => {
                let naive = timestamp(i64::from_be_bytes(fixed(bytes)?), "timestamp")?;
                match timezone {
                    None => push_naive(out, naive),
                    Some(tz) => push_instant(out, place(naive, tz)?),
                }
            }
            Reading::TimestampTz => {
                let naive = timestamp(i64::from_be_bytes(fixed(bytes)?), "timestamptz")?;
                push_instant(out, naive.and_utc())
            }
            Reading::Refused(_) => Err(CellError::Malformed("unsupported type")),
        }
    }
}

/// Why a single value has no canonical text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CellError {
    #[error("{0} is not a number (NaN or infinity); the ledger holds exact amounts only")]
    NotFinite(&'static str),
    #[error("the {0} is infinite or outside the years 0001-9999")]
    OutOfRange(&'static str),
    #[error("the local time {time} does not exist in {timezone} (a daylight-saving gap); correct the value or the connector's source_timezone")]
    LocalTimeGap { time: String, timezone: String },
    #[error("malformed {0} value from the server")]
    Malformed(&'static str),
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], CellError> {
    bytes
        .try_into()
        .map_err(|_| CellError::Malformed("fixed-size"))
}

fn utf8(bytes: &[u8]) -> Result<&str, CellError> {
    std::str::from_utf8(bytes).map_err(|_| CellError::Malformed("text (not UTF-8)"))
}

/// NUMERIC's binary form: u16 ndigits, i16 weight, u16 sign, u16 dscale, then
/// ndigits base-10000 digits, most significant first; the value is
/// Σ dᵢ·10000^(weight−i). Written as a plain decimal with exactly dscale
/// fractional digits, as Postgres itself prints it.
#[cfg(test)]
pub(crate) fn numeric_text(bytes: &[u8]) -> Result<String, CellError> {
    let mut text = String::new();
    push_numeric(bytes, &mut text)?;
    Ok(text)
}

/// A digit group (below 10,000) as its four figures, or without leading zeros.
fn push_group(text: &mut String, value: u16, padded: bool) {
    let figures = [value / 1000, value / 100 % 10, value / 10 % 10, value % 10];
    let skip = match padded {
        true => 0,
        false => figures[..3].iter().take_while(|&&f| f == 0).count(),
    };
    text.extend(figures[skip..].iter().map(|&f| char::from(b'0' + f as u8)));
}

/// [`numeric_text`], appended to `text`.
fn push_numeric(bytes: &[u8], text: &mut String) -> Result<(), CellError> {
    let malformed = CellError::Malformed("numeric");
    let word = |at: usize| -> Result<u16, CellError> {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(malformed.clone())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 | 0xD000 | 0xF000 => return Err(CellError::NotFinite("numeric")),
        _ => return Err(malformed),
    }
    if bytes.len() != 8 + 2 * ndigits {
        return Err(malformed);
    }
    let digit = |i: usize| u16::from_be_bytes([bytes[8 + 2 * i], bytes[9 + 2 * i]]);
    if (0..ndigits).any(|i| digit(i) >= 10_000) {
        return Err(malformed);
    }
    // The digit group worth 10000^exponent, 0 where the form leaves it out.
    let group = |exponent: i64| -> u16 {
        usize::try_from(weight - exponent)
            .ok()
            .filter(|&i| i < ndigits)
            .map_or(0, digit)
    };
    if sign == 0x4000 && (0..ndigits).any(|i| digit(i) != 0) {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        push_group(text, group(weight), false);
        for exponent in (0..weight).rev() {
            push_group(text, group(exponent), true);
        }
    }
    // Every fractional group the form holds, then at least dscale digits: those
    // beyond dscale must be zeros (the server rounds to dscale before sending).
    let lowest = weight - ndigits as i64 + 1;
    if dscale > 0 {
        text.push('.');
    }
    let mut position = 0;
    let mut exponent = -1;
    while position < dscale || exponent >= lowest {
        let value = group(exponent);
        for power in [1000, 100, 10, 1] {
            let figure = (value / power) % 10;
            if position < dscale {
                text.push(char::from(b'0' + figure as u8));
            } else if figure != 0 {
                return Err(CellError::Malformed("numeric (digits beyond its scale)"));
            }
            position += 1;
        }
        exponent -= 1;
    }
    Ok(())
}

const POSTGRES_EPOCH_DAYS_FROM_CE: i32 = 730_120; // 2000-01-01

fn postgres_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

fn in_range(year: i32) -> bool {
    (1..=9999).contains(&year)
}

fn date(days: i32) -> Result<NaiveDate, CellError> {
    days.checked_add(POSTGRES_EPOCH_DAYS_FROM_CE)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .filter(|d| in_range(chrono::Datelike::year(d)))
        .ok_or(CellError::OutOfRange("date"))
}

/// Microseconds since 2000-01-01 00:00:00; i64::MAX / i64::MIN are ±infinity.
fn timestamp(micros: i64, what: &'static str) -> Result<NaiveDateTime, CellError> {
    postgres_epoch()
        .checked_add_signed(TimeDelta::microseconds(micros))
        .filter(|t| in_range(chrono::Datelike::year(t)))
        .ok_or(CellError::OutOfRange(what))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`.
pub(crate) fn naive_text(time: NaiveDateTime) -> String {
    let mut text = String::with_capacity(26);
    match push_naive(&mut text, time) {
        Ok(()) => text,
        Err(_) => time.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
    }
}

fn push_naive(out: &mut String, time: NaiveDateTime) -> Result<(), CellError> {
    time_text::push_naive_micros(out, time, ' ').ok_or(CellError::OutOfRange("timestamp"))
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
pub(crate) fn instant_text(time: DateTime<Utc>) -> String {
    let mut text = String::with_capacity(27);
    match push_instant(&mut text, time) {
        Ok(()) => text,
        Err(_) => time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    }
}

fn push_instant(out: &mut String, time: DateTime<Utc>) -> Result<(), CellError> {
    time_text::push_naive_micros(out, time.naive_utc(), 'T')
        .ok_or(CellError::OutOfRange("timestamptz"))?;
    out.push('Z');
    Ok(())
}

/// A local time of `tz` as an instant; the repeated hour of a fall-back is read
/// as its first occurrence, a spring-forward gap is an error.
pub(crate) fn place(naive: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, CellError> {
    // UTC has no gaps or repeated hours: its wall clock is the instant.
    if tz == Tz::UTC {
        return Ok(naive.and_utc());
    }
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.with_timezone(&Utc)),
        LocalResult::None => Err(CellError::LocalTimeGap {
            time: naive_text(naive),
            timezone: tz.name().to_owned(),
        }),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numeric_forms_become_plain_decimals() {
        let cases: &[(Vec<u8>, &str)] = &[
            (numeric(2, 0, 0x4000, 4, &[755, 125]), "-755.0125"),
            (numeric(2, 0, 0, 1, &[1, 5000]), "1.5"),
            (numeric(0, 0, 0, 2, &[]), "0.00"),
            (numeric(0, 0, 0, 0, &[]), "0"),
            (numeric(1, 1, 0, 0, &[1]), "10000"),
            (numeric(1, -1, 0, 4, &[1]), "0.0001"),
            (numeric(1, -2, 0, 6, &[1200]), "0.000012"),
            (numeric(1, -2, 0, 8, &[12]), "0.00000012"),
            (numeric(2, 1, 0, 0, &[1234, 5678]), "12345678"),
        ];
        for (bytes, text) in cases {
            assert_eq!(numeric_text(bytes).as_deref(), Ok(*text));
        }
        assert_eq!(
            numeric_text(&numeric(0, 0, 0xC000, 0, &[])),
            Err(CellError::NotFinite("numeric"))
        );
        assert!(
            numeric_text(&numeric(1, -1, 0, 2, &[1])).is_err(),
            "0.0001 at scale 2"
        );
        assert!(numeric_text(&numeric(2, 0, 0, 0, &[1])).is_err(), "short");
    }

    #[test]
    fn the_table_refuses_floats_with_advice() {
        assert_eq!(reading("numeric").canonical(), Some(CanonicalType::Decimal));
        assert_eq!(reading("float8"), Reading::Refused(FLOAT_ADVICE));
        assert_eq!(reading("bytea"), Reading::Refused(OTHER_ADVICE));
        assert_eq!(reading("_int4").canonical(), None);
    }

    #[test]
    fn times_are_written_canonically() {
        let micros: i64 = 86_400_000_000 + 1_500_000; // 2000-01-02 00:00:01.5
        let bytes = micros.to_be_bytes();
        assert_eq!(
            Reading::Timestamp.to_text(&bytes, None).as_deref(),
            Ok("2000-01-02 00:00:01.500000")
        );
        assert_eq!(
            Reading::TimestampTz.to_text(&bytes, None).as_deref(),
            Ok("2000-01-02T00:00:01.500000Z")
        );
        assert_eq!(
            Reading::Timestamp.to_text(&i64::MAX.to_be_bytes(), None),
            Err(CellError::OutOfRange("timestamp"))
        );
        assert_eq!(
            Reading::Date
                .to_text(&(-1i32).to_be_bytes(), None)
                .as_deref(),
            Ok("1999-12-31")
        );
    }
}
