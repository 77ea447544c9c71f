//! The one table from MySQL/MariaDB column types to canonical types, and the
//! conversion of each value to its canonical text.
//!
//! Result columns are looked up by wire type and character set (`by_wire`),
//! `information_schema` columns by `DATA_TYPE` name (`by_name`); both read the same
//! rows of [`TYPES`], so `discover` and a read never disagree.
//!
//! Values arrive through the binary protocol (prepared statements): integers as
//! `Int`/`UInt`, DECIMAL as its ASCII text (kept digit for digit, never a float),
//! dates and times as `Date(..)` in the session's `time_zone` (`+00:00`), strings as
//! bytes in the result character set.

use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use ledgersync_schemas::time_text;
use mysql_async::consts::ColumnType::{self, *};
use mysql_async::Value;

use crate::source::CanonicalType;

/// Which character sets a row of the table applies to (string types only: the
/// wire type is the same for TEXT and BLOB, CHAR and BINARY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Any,
    /// Any but `binary` (63).
    Text,
    /// `binary` (63): bytes, not characters.
    Binary,
}

/// How a value of the row is turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    Integer,
    /// BIT(n): big-endian bytes, read as an unsigned integer.
    Bits,
    Decimal,
    Text,
    Date,
    /// DATETIME: a wall-clock time.
    Naive,
    /// TIMESTAMP: an instant, sent in the session time zone (`+00:00`).
    Utc,
    /// No canonical reading.
    Refuse,
}

#[derive(Debug)]
pub struct TypeRow {
    pub wire: &'static [ColumnType],
    /// `information_schema.COLUMNS.DATA_TYPE` names.
    pub names: &'static [&'static str],
    pub charset: Charset,
    pub canonical: Option<CanonicalType>,
    pub decode: Decode,
    /// What to do about a refused column, as a query the user can write.
    pub advice: &'static str,
}

macro_rules! types {
    ($( [$($wire:ident)|*] [$($name:literal),*] $charset:ident => $canonical:ident : $decode:ident $(, $advice:literal)? ;)*) => {
        /// The only place a MySQL type is given a canonical reading.
        pub static TYPES: &[TypeRow] = &[$(
            TypeRow {
                wire: &[$($wire),*],
                names: &[$($name),*],
                charset: Charset::$charset,
                canonical: types!(@canonical $canonical),
                decode: Decode::$decode,
                advice: concat!("" $(, $advice)?),
            },
        )*];
    };
    (@canonical None) => { None };
    (@canonical $c:ident) => { Some(CanonicalType::$c) };
}

// TINYINT(1) stays an integer: MySQL has no boolean type, and 0/1 flags are
// mapped by the stream mapping like any other integer.
types! {
    [MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR]
        ["tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"] Any => Integer : Integer;
    [MYSQL_TYPE_BIT] ["bit"] Any => Integer : Bits;
    [MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL] ["decimal", "numeric", "fixed"] Any => Decimal : Decimal;
    [MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE] ["float", "double", "real"] Any => None : Refuse,
        "FLOAT and DOUBLE are approximate; read the stream from a query that casts the column, e.g. CAST(col AS DECIMAL(20,4))";
    // JSON is utf8mb4 text whatever charset MySQL reports for it (MariaDB's JSON is LONGTEXT).
    [MYSQL_TYPE_JSON] ["json"] Any => Text : Text;
    // One wire type serves TEXT and BLOB, CHAR and BINARY: the charset tells them apart.
    [MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_STRING | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_ENUM | MYSQL_TYPE_SET]
        ["char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"] Text => Text : Text;
    [MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING | MYSQL_TYPE_STRING | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB]
        ["binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"] Binary => None : Refuse,
        "binary strings have no text reading; read the stream from a query with HEX(col) or CONVERT(col USING utf8mb4)";
    [MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE] ["date"] Any => Date : Date;
    [MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2] ["datetime"] Any => Timestamp : Naive;
    [MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2] ["timestamp"] Any => TimestampTz : Utc;
    [MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2] ["time"] Any => None : Refuse,
        "TIME is a duration, not a date; read the stream from a query that combines it with a date, e.g. TIMESTAMP(date_col, time_col), or CAST(col AS CHAR)";
    // `SELECT NULL AS x` in a query: a column that is always NULL.
    [MYSQL_TYPE_NULL] [] Any => Text : Text;
}

/// The charset id MySQL gives binary strings (and numbers).
pub const BINARY_CHARSET: u16 = 63;

/// The latin1 collations (latin1 is Windows-1252 in MySQL).
const LATIN1: &[u16] = &[5, 8, 15, 31, 47, 48, 49, 94];

const REFUSED_UNKNOWN: TypeRow = TypeRow {
    wire: &[],
    names: &[],
    charset: Charset::Any,
    canonical: None,
    decode: Decode::Refuse,
    advice: "this type has no canonical reading; read the stream from a query that casts the column to CHAR, DECIMAL or DATETIME",
};

fn charset_matches(rule: Charset, charset: u16) -> bool {
    match rule {
        Charset::Any => true,
        Charset::Text => charset != BINARY_CHARSET,
        Charset::Binary => charset == BINARY_CHARSET,
    }
}

/// The row for a result column; unknown types (GEOMETRY, VECTOR, …) are refused.
pub fn by_wire(wire: ColumnType, charset: u16) -> &'static TypeRow {
    TYPES
        .iter()
        .find(|row| row.wire.contains(&wire) && charset_matches(row.charset, charset))
        .unwrap_or(&REFUSED_UNKNOWN)
}

/// The row for an `information_schema.COLUMNS.DATA_TYPE` name.
pub fn by_name(data_type: &str) -> &'static TypeRow {
    let data_type = data_type.to_ascii_lowercase();
    TYPES
        .iter()
        .find(|row| row.names.contains(&data_type.as_str()))
        .unwrap_or(&REFUSED_UNKNOWN)
}

/// What one column's values are read as.
#[derive(Debug, Clone)]
pub struct ColumnReading {
    pub decode: Decode,
    pub charset: u16,
    /// For DATETIME: the connector's `source_timezone`, which makes the value an
    /// instant written as `TimestampTz`.
    pub zone: Option<Tz>,
}

impl ColumnReading {
    /// The canonical type the text is in.
    pub fn canonical(&self, row: &TypeRow) -> Option<CanonicalType> {
        match (row.decode, self.zone) {
            (Decode::Naive, Some(_)) => Some(CanonicalType::TimestampTz),
            _ => row.canonical,
        }
    }
}

/// Why a single value has no canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellError {
    /// `0000-00-00`, or a date with a zero month or day (allowed by lax `sql_mode`).
    ZeroDate(String),
    /// A local time that does not exist in the source timezone (DST gap).
    NoSuchLocalTime(String),
    NotText,
    Unexpected(String),
}

/// A value's canonical text, or `None` for NULL.
pub fn to_text(reading: &ColumnReading, value: &Value) -> Result<Option<String>, CellError> {
    let mut out = String::new();
    Ok(write_text(reading, value, &mut out)?.then_some(out))
}

/// Appends a value's canonical text to `out`; false (and nothing written) for NULL.
/// A read writes every cell into one reused buffer this way.
pub fn write_text(
    reading: &ColumnReading,
    value: &Value,
    out: &mut String,
) -> Result<bool, CellError> {
    use std::fmt::Write as _;
    match (reading.decode, value) {
        (_, Value::NULL) => return Ok(false),
        (Decode::Integer, Value::Int(v)) => write!(out, "{v}").expect("writing to a String"),
        (Decode::Integer, Value::UInt(v)) => write!(out, "{v}").expect("writing to a String"),
        // DECIMAL comes as its digits; the text protocol (never used for reads, but
        // harmless) sends integers so too.
        (Decode::Integer | Decode::Decimal, Value::Bytes(b)) if is_plain_number(b) => {
            // Plain numbers are ASCII.
            out.push_str(std::str::from_utf8(b).map_err(|_| CellError::NotText)?)
        }
        (Decode::Bits, Value::Bytes(b)) if b.len() <= 8 => {
            let bits = b
                .iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
            write!(out, "{bits}").expect("writing to a String")
        }
        (Decode::Bits, Value::Int(v)) => write!(out, "{v}").expect("writing to a String"),
        (Decode::Bits, Value::UInt(v)) => write!(out, "{v}").expect("writing to a String"),
        (Decode::Text, Value::Bytes(b)) => push_text(out, b, reading.charset)?,
        (Decode::Date, Value::Date(y, m, d, ..)) => {
            let day = date(*y, *m, *d)?;
            if time_text::push_date(out, day).is_none() {
                out.push_str(&day.format("%Y-%m-%d").to_string());
            }
        }
        (Decode::Naive, Value::Date(..)) if reading.zone.is_none() => {
            push_naive(out, &date_time(value)?)
        }
        (Decode::Naive | Decode::Utc, Value::Date(..)) => push_utc(out, &instant(reading, value)?),
        (decode, value) => {
            return Err(CellError::Unexpected(format!(
                "a {decode:?} column sent {value:?}"
            )))
        }
    }
    Ok(true)
}

/// Whether the column's values are instants: TIMESTAMP, or DATETIME read in the
/// connector's `source_timezone`. A read hands these over as UTC microseconds.
pub fn is_instant(reading: &ColumnReading) -> bool {
    matches!(
        (reading.decode, reading.zone),
        (Decode::Utc, _) | (Decode::Naive, Some(_))
    )
}

/// An instant column's value as microseconds since 1970 (UTC); `None` for NULL.
pub fn instant_micros(reading: &ColumnReading, value: &Value) -> Result<Option<i64>, CellError> {
    match value {
        Value::NULL => Ok(None),
        _ => Ok(Some(instant(reading, value)?.and_utc().timestamp_micros())),
    }
}

/// Whether every value of a DECIMAL result column is a [`decimal_mantissa`]: at
/// most 8 decimals and 30 digits before the point (its display length counts the
/// digits, the point and a sign).
pub fn decimals_fit(column: &mysql_async::Column) -> bool {
    usize::from(column.decimals()) <= crate::batch::DECIMAL_SCALE && column.column_length() <= 30
}

/// A DECIMAL value (its digits, as MySQL sends them) as a mantissa at the
/// mapping's scale; `None` for NULL.
pub fn decimal_mantissa(value: &Value) -> Result<Option<i128>, CellError> {
    use crate::mapping::{decimals, SOURCE_PRECISION, SOURCE_SCALE};
    match value {
        Value::NULL => Ok(None),
        Value::Bytes(digits) => decimals::parse(digits, SOURCE_PRECISION, SOURCE_SCALE)
            .map(Some)
            .ok_or_else(|| {
                CellError::Unexpected(format!(
                    "DECIMAL '{}' is not a number of at most 30 digits and 8 decimals",
                    String::from_utf8_lossy(digits)
                ))
            }),
        other => Err(CellError::Unexpected(format!(
            "a DECIMAL column sent {other:?}"
        ))),
    }
}

/// An instant column's value as the text [`write_text`] gives it.
pub fn instant_text(micros: i64) -> String {
    let mut out = String::with_capacity(27);
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => push_utc(&mut out, &t.naive_utc()),
        None => out.push_str(&micros.to_string()),
    }
    out
}

/// A TIMESTAMP (sent in UTC), or a DATETIME placed in the source zone, as UTC.
fn instant(reading: &ColumnReading, value: &Value) -> Result<NaiveDateTime, CellError> {
    let naive = date_time(value)?;
    // UTC has no gaps or repeated hours: its wall clock is the instant.
    let Some(zone) = reading
        .zone
        .filter(|zone| reading.decode == Decode::Naive && *zone != Tz::UTC)
    else {
        return Ok(naive);
    };
    match zone.from_local_datetime(&naive) {
        // At a DST fall-back hour the earlier instant is taken.
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => Ok(t.naive_utc()),
        chrono::LocalResult::None => Err(CellError::NoSuchLocalTime(format!(
            "{} does not exist in {zone} (clocks were moved forward)",
            naive_text(&naive)
        ))),
    }
}

/// Digits with an optional sign and point: MySQL writes DECIMAL without exponent.
fn is_plain_number(b: &[u8]) -> bool {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let mut parts = digits.splitn(2, |c| *c == b'.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or_default();
    !whole.is_empty()
        && whole.iter().all(u8::is_ascii_digit)
        && fraction.iter().all(u8::is_ascii_digit)
}

/// Windows-1252's characters for 0x80..=0x9F (MySQL's latin1); the five bytes
/// Windows-1252 leaves undefined stay the C1 controls, as MySQL converts them.
const CP1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž', '\u{8F}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}', 'ž', 'Ÿ',
];

/// Appends text in the result's character set to `out`. The handshake asks for
/// utf8mb4 results, so the server converts latin1 and other columns itself; latin1
/// is decoded here too for servers whose `character_set_results` says otherwise.
fn push_text(out: &mut String, bytes: &[u8], charset: u16) -> Result<(), CellError> {
    if LATIN1.contains(&charset) {
        out.extend(bytes.iter().map(|&b| match b {
            0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        }));
        return Ok(());
    }
    out.push_str(simdutf8::basic::from_utf8(bytes).map_err(|_| CellError::NotText)?);
    Ok(())
}

fn date(y: u16, m: u8, d: u8) -> Result<NaiveDate, CellError> {
    NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
        .ok_or_else(|| CellError::ZeroDate(format!("{y:04}-{m:02}-{d:02}")))
}

fn date_time(value: &Value) -> Result<NaiveDateTime, CellError> {
    let Value::Date(y, mo, d, h, mi, s, us) = *value else {
        return Err(CellError::Unexpected(format!("{value:?} is not a date")));
    };
    let day =
        NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d)).ok_or_else(|| {
            CellError::ZeroDate(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
        })?;
    day.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)
        .ok_or_else(|| CellError::Unexpected(format!("{value:?} is not a time of day")))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`: the fraction only when there is one.
pub fn naive_text(t: &NaiveDateTime) -> String {
    let mut out = String::with_capacity(26);
    push_naive(&mut out, t);
    out
}

fn push_naive(out: &mut String, t: &NaiveDateTime) {
    if time_text::push_naive_micros(out, *t, ' ').is_none() {
        out.push_str(&t.format("%Y-%m-%d %H:%M:%S%.f").to_string());
    }
}

/// RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
fn push_utc(out: &mut String, t: &NaiveDateTime) {
    if time_text::push_naive_micros(out, *t, 'T').is_none() {
        out.push_str(&t.format("%Y-%m-%dT%H:%M:%S%.f").to_string());
    }
    out.push('Z');
}

/// The value bound for a time cursor: the session's `time_zone` is `+00:00`, so a
/// TIMESTAMP compares with UTC wall-clock values and a DATETIME with its own.
pub fn date_value(t: &NaiveDateTime) -> Value {
    use chrono::{Datelike, Timelike};
    Value::Date(
        u16::try_from(t.year()).unwrap_or(0),
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.and_utc().timestamp_subsec_micros(),
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    fn reading(decode: Decode, charset: u16) -> ColumnReading {
        ColumnReading {
            decode,
            charset,
            zone: None,
        }
    }

    #[test]
    fn wire_and_name_lookups_read_the_same_rows() {
        assert_eq!(
            by_wire(MYSQL_TYPE_NEWDECIMAL, 63).canonical,
            Some(CanonicalType::Decimal)
        );
        assert_eq!(by_name("DECIMAL").canonical, Some(CanonicalType::Decimal));
        assert_eq!(
            by_wire(MYSQL_TYPE_BLOB, 45).canonical,
            Some(CanonicalType::Text)
        );
        assert_eq!(by_wire(MYSQL_TYPE_BLOB, 63).canonical, None);
        assert_eq!(by_name("longblob").canonical, None);
        assert_eq!(by_name("longtext").canonical, Some(CanonicalType::Text));
        assert_eq!(by_wire(MYSQL_TYPE_DOUBLE, 63).canonical, None);
        assert!(by_wire(MYSQL_TYPE_DOUBLE, 63).advice.contains("DECIMAL"));
        assert_eq!(by_wire(MYSQL_TYPE_GEOMETRY, 63).canonical, None);
        assert_eq!(by_name("point").canonical, None);
        assert_eq!(
            by_wire(MYSQL_TYPE_TIMESTAMP, 63).canonical,
            Some(CanonicalType::TimestampTz)
        );
        for row in TYPES {
            for name in row.names {
                assert!(std::ptr::eq(by_name(name), row), "{name}");
            }
        }
    }

    #[test]
    fn values_become_canonical_text() {
        let text = |decode, charset, value| to_text(&reading(decode, charset), &value).unwrap();
        assert_eq!(
            text(Decode::Integer, 63, Value::UInt(u64::MAX)).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(
            text(Decode::Decimal, 63, Value::Bytes(b"-0.0001".to_vec())).as_deref(),
            Some("-0.0001")
        );
        assert_eq!(
            text(Decode::Bits, 63, Value::Bytes(vec![1, 2])).as_deref(),
            Some("258")
        );
        assert_eq!(
            text(Decode::Text, 8, Value::Bytes(b"caf\xe9 \x80".to_vec())).as_deref(),
            Some("café €")
        );
        assert_eq!(
            text(Decode::Utc, 63, Value::Date(2024, 2, 29, 23, 59, 1, 5)).as_deref(),
            Some("2024-02-29T23:59:01.000005Z")
        );
        assert_eq!(text(Decode::Date, 63, Value::NULL), None);
        assert_eq!(
            to_text(
                &reading(Decode::Date, 63),
                &Value::Date(2024, 0, 10, 0, 0, 0, 0)
            ),
            Err(CellError::ZeroDate("2024-00-10".into()))
        );
        assert_eq!(
            to_text(&reading(Decode::Text, 45), &Value::Bytes(vec![0xff])),
            Err(CellError::NotText)
        );
        let jakarta = ColumnReading {
            decode: Decode::Naive,
            charset: 63,
            zone: Some(chrono_tz::Asia::Jakarta),
        };
        assert_eq!(
            to_text(&jakarta, &Value::Date(2024, 1, 31, 10, 0, 0, 0))
                .unwrap()
                .as_deref(),
            Some("2024-01-31T03:00:00Z")
        );
        let berlin = ColumnReading {
            zone: Some(chrono_tz::Europe::Berlin),
            ..jakarta
        };
        assert!(matches!(
            to_text(&berlin, &Value::Date(2024, 3, 31, 2, 30, 0, 0)),
            Err(CellError::NoSuchLocalTime(_))
        ));
    }
}
