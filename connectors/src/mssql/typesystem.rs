//! The one table from SQL Server column types to canonical types, and the
//! conversion of each tiberius value to its canonical text.
//!
//! Result columns are looked up by tiberius's [`ColumnType`] (`by_wire`),
//! `INFORMATION_SCHEMA.COLUMNS` by `DATA_TYPE` name (`by_name`); both read the
//! same rows of [`TYPES`], so `discover` and a read never disagree.
//!
//! Traps of tiberius 0.13 this module steps around:
//! - MONEY and SMALLMONEY arrive as `F64` (the exact scaled integer divided by
//!   10⁴ in floating point). The integer is recovered exactly while it is below
//!   2⁵¹ and checked by redoing tiberius's division; beyond that the value is
//!   refused with the cast that reads it exactly.
//! - DECIMAL/NUMERIC are read from `Numeric` (an `i128` and a scale) and written
//!   digit for digit; tiberius's `rust_decimal` conversion panics above 28 digits.
//! - DATETIMEOFFSET goes through `DateTime<FixedOffset>`: its `DateTime<Utc>`
//!   conversion subtracts the offset from a wire value that is already UTC.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use tiberius::{ColumnData, ColumnType, FromSql};

use crate::source::CanonicalType;

/// How a value of the row is turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    Integer,
    Boolean,
    /// DECIMAL/NUMERIC: `Numeric` (mantissa and scale).
    Numeric,
    /// MONEY/SMALLMONEY: `F64`, exact below 2⁵¹ ten-thousandths.
    Money,
    Date,
    /// DATETIME, DATETIME2, SMALLDATETIME: a wall-clock time.
    Naive,
    /// DATETIMEOFFSET: an instant.
    Offset,
    Text,
    /// No canonical reading.
    Refuse,
}

#[derive(Debug)]
pub struct TypeRow {
    pub wire: &'static [ColumnType],
    /// `INFORMATION_SCHEMA.COLUMNS.DATA_TYPE` names.
    pub names: &'static [&'static str],
    pub canonical: Option<CanonicalType>,
    pub decode: Decode,
    /// What to do about a refused column, as a query the user can write.
    pub advice: &'static str,
}

macro_rules! types {
    ($( [$($wire:ident)|*] [$($name:literal),*] => $canonical:ident : $decode:ident $(, $advice:literal)? ;)*) => {
        /// The only place a SQL Server type is given a canonical reading.
        pub static TYPES: &[TypeRow] = &[$(
            TypeRow {
                wire: &[$(ColumnType::$wire),*],
                names: &[$($name),*],
                canonical: types!(@canonical $canonical),
                decode: Decode::$decode,
                advice: concat!("" $(, $advice)?),
            },
        )*];
    };
    (@canonical None) => { None };
    (@canonical $c:ident) => { Some(CanonicalType::$c) };
}

// Nullable integers report Int1..Int8 from their length (Intn only for odd
// lengths); a nullable SMALLMONEY reports Money, not Money4.
types! {
    [Int1 | Int2 | Int4 | Int8 | Intn] ["tinyint", "smallint", "int", "bigint"] => Integer : Integer;
    [Bit | Bitn] ["bit"] => Boolean : Boolean;
    [Decimaln | Numericn] ["decimal", "numeric"] => Decimal : Numeric;
    [Money | Money4] ["money", "smallmoney"] => Decimal : Money;
    [Daten] ["date"] => Date : Date;
    [Datetime | Datetimen | Datetime4 | Datetime2] ["datetime", "datetime2", "smalldatetime"] => Timestamp : Naive;
    [DatetimeOffsetn] ["datetimeoffset"] => TimestampTz : Offset;
    [BigVarChar | BigChar | NVarchar | NChar | Text | NText | Guid | Xml]
        ["char", "varchar", "nchar", "nvarchar", "text", "ntext", "sysname", "uniqueidentifier", "xml"] => Text : Text;
    [Float4 | Float8 | Floatn] ["float", "real"] => None : Refuse,
        "FLOAT and REAL are approximate; read the stream from a query that casts the column, e.g. CAST(col AS DECIMAL(19,4))";
    [Timen] ["time"] => None : Refuse,
        "TIME is a time of day without a date; read the stream from a query that adds it to a date, e.g. CAST(date_col AS DATETIME2) + CAST(time_col AS DATETIME2), or CONVERT(VARCHAR(16), col, 114)";
    // ROWVERSION (DATA_TYPE `timestamp`) is binary(8); as a cursor, CAST(col AS BIGINT).
    [BigVarBin | BigBinary | Image] ["binary", "varbinary", "image", "timestamp", "rowversion"] => None : Refuse,
        "binary values have no text reading; read the stream from a query with CONVERT(VARCHAR(MAX), col, 2) (hex), or CAST(col AS BIGINT) for a ROWVERSION";
    // `SELECT NULL AS x` in a query: a column that is always NULL.
    [Null] [] => Text : Text;
}

const REFUSED_UNKNOWN: TypeRow = TypeRow {
    wire: &[],
    names: &[],
    canonical: None,
    decode: Decode::Refuse,
    advice: "this type has no canonical reading; read the stream from a query that casts the column to NVARCHAR, DECIMAL or DATETIME2",
};

/// The row for a result column; other types (sql_variant, geography,
/// hierarchyid and other CLR types) are refused.
pub fn by_wire(wire: ColumnType) -> &'static TypeRow {
    TYPES
        .iter()
        .find(|row| row.wire.contains(&wire))
        .unwrap_or(&REFUSED_UNKNOWN)
}

/// The row for an `INFORMATION_SCHEMA.COLUMNS.DATA_TYPE` name.
pub fn by_name(data_type: &str) -> &'static TypeRow {
    let data_type = data_type.to_ascii_lowercase();
    TYPES
        .iter()
        .find(|row| row.names.contains(&data_type.as_str()))
        .unwrap_or(&REFUSED_UNKNOWN)
}

/// What one column's values are read as.
#[derive(Debug, Clone, Copy)]
pub struct ColumnReading {
    pub decode: Decode,
    /// The table's canonical type for the column.
    row_canonical: Option<CanonicalType>,
    /// For naive times: the connector's `source_timezone`, which makes the value
    /// an instant written as `TimestampTz`.
    pub zone: Option<Tz>,
}

impl ColumnReading {
    pub fn of(row: &TypeRow, zone: Option<Tz>) -> ColumnReading {
        ColumnReading {
            decode: row.decode,
            row_canonical: row.canonical,
            zone: (row.decode == Decode::Naive).then_some(zone).flatten(),
        }
    }

    /// The canonical type the text is in.
    pub fn canonical(&self) -> Option<CanonicalType> {
        match (self.decode, self.zone) {
            (Decode::Naive, Some(_)) => Some(CanonicalType::TimestampTz),
            _ => self.row_canonical,
        }
    }
}

/// Why a single value has no canonical text.
#[derive(Debug, Clone, PartialEq)]
pub enum CellError {
    /// A MONEY value too large to recover exactly from tiberius's float.
    MoneyTooLarge(f64),
    /// A local time that does not exist in the source timezone (DST gap).
    NoSuchLocalTime(String),
    Unexpected(String),
}

/// |units| below this are recovered exactly from `units / 1e4` in f64.
const MONEY_EXACT_LIMIT: f64 = (1u64 << 51) as f64;

/// The canonical text of a value; `None` for NULL.
pub fn to_text(
    reading: &ColumnReading,
    value: &ColumnData<'static>,
) -> Result<Option<String>, CellError> {
    if is_null(value) {
        return Ok(None);
    }
    let unexpected = || {
        CellError::Unexpected(format!(
            "a {:?} column sent {}",
            reading.decode,
            value_kind(value)
        ))
    };
    let driver = |e: tiberius::error::Error| CellError::Unexpected(e.to_string());
    let text = match (reading.decode, value) {
        (Decode::Integer, ColumnData::U8(Some(v))) => v.to_string(),
        (Decode::Integer, ColumnData::I16(Some(v))) => v.to_string(),
        (Decode::Integer, ColumnData::I32(Some(v))) => v.to_string(),
        (Decode::Integer, ColumnData::I64(Some(v))) => v.to_string(),
        (Decode::Boolean, ColumnData::Bit(Some(b))) => b.to_string(),
        (Decode::Numeric, ColumnData::Numeric(Some(n))) => {
            scaled_text(n.value(), u32::from(n.scale()))
        }
        (Decode::Money, ColumnData::F64(Some(f))) => money_text(*f)?,
        (Decode::Date, ColumnData::Date(_)) => NaiveDate::from_sql(value)
            .map_err(driver)?
            .ok_or_else(unexpected)?
            .format("%Y-%m-%d")
            .to_string(),
        (
            Decode::Naive,
            ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_),
        ) => {
            let naive = NaiveDateTime::from_sql(value)
                .map_err(driver)?
                .ok_or_else(unexpected)?;
            match reading.zone {
                None => naive_text(&naive),
                Some(zone) => utc_text(&in_zone(&naive, zone)?),
            }
        }
        (Decode::Offset, ColumnData::DateTimeOffset(_)) => {
            let instant = DateTime::<FixedOffset>::from_sql(value)
                .map_err(driver)?
                .ok_or_else(unexpected)?;
            utc_text(&instant.naive_utc())
        }
        (Decode::Text, ColumnData::String(Some(s))) => s.to_string(),
        // SQL Server writes a uniqueidentifier in upper case (CAST(id AS
        // NVARCHAR(36))): keys read from the column and from such a cast agree.
        (Decode::Text, ColumnData::Guid(Some(g))) => g.to_string().to_ascii_uppercase(),
        (Decode::Text, ColumnData::Xml(Some(x))) => x.to_string(),
        _ => return Err(unexpected()),
    };
    Ok(Some(text))
}

fn is_null(value: &ColumnData<'_>) -> bool {
    match value {
        ColumnData::U8(v) => v.is_none(),
        ColumnData::I16(v) => v.is_none(),
        ColumnData::I32(v) => v.is_none(),
        ColumnData::I64(v) => v.is_none(),
        ColumnData::F32(v) => v.is_none(),
        ColumnData::F64(v) => v.is_none(),
        ColumnData::Bit(v) => v.is_none(),
        ColumnData::String(v) => v.is_none(),
        ColumnData::Guid(v) => v.is_none(),
        ColumnData::Binary(v) => v.is_none(),
        ColumnData::Numeric(v) => v.is_none(),
        ColumnData::Xml(v) => v.is_none(),
        ColumnData::DateTime(v) => v.is_none(),
        ColumnData::SmallDateTime(v) => v.is_none(),
        ColumnData::Time(v) => v.is_none(),
        ColumnData::Date(v) => v.is_none(),
        ColumnData::DateTime2(v) => v.is_none(),
        ColumnData::DateTimeOffset(v) => v.is_none(),
    }
}

/// The value's variant without its content (which may be long text).
fn value_kind(value: &ColumnData<'_>) -> &'static str {
    match value {
        ColumnData::U8(_) => "a tinyint",
        ColumnData::I16(_) => "a smallint",
        ColumnData::I32(_) => "an int",
        ColumnData::I64(_) => "a bigint",
        ColumnData::F32(_) | ColumnData::F64(_) => "a float",
        ColumnData::Bit(_) => "a bit",
        ColumnData::String(_) => "a string",
        ColumnData::Guid(_) => "a uniqueidentifier",
        ColumnData::Binary(_) => "binary data",
        ColumnData::Numeric(_) => "a decimal",
        ColumnData::Xml(_) => "xml",
        ColumnData::DateTime(_) => "a datetime",
        ColumnData::SmallDateTime(_) => "a smalldatetime",
        ColumnData::Time(_) => "a time",
        ColumnData::Date(_) => "a date",
        ColumnData::DateTime2(_) => "a datetime2",
        ColumnData::DateTimeOffset(_) => "a datetimeoffset",
    }
}

/// `value × 10^-scale` as plain decimal text with exactly `scale` digits after
/// the point (`-1234.5600`), never an exponent.
pub fn scaled_text(value: i128, scale: u32) -> String {
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let digits = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// MONEY from tiberius's `units / 1e4`: the units back, checked by redoing the
/// division, and written with MONEY's four decimals.
fn money_text(f: f64) -> Result<String, CellError> {
    let scaled = f * 1e4;
    if !scaled.is_finite() || scaled.abs() >= MONEY_EXACT_LIMIT {
        return Err(CellError::MoneyTooLarge(f));
    }
    let units = scaled.round() as i64;
    if units as f64 / 1e4 != f {
        return Err(CellError::MoneyTooLarge(f));
    }
    Ok(scaled_text(i128::from(units), 4))
}

/// The instant a wall-clock time of the source denotes. At a DST fall-back hour
/// the earlier instant is taken.
pub fn in_zone(naive: &NaiveDateTime, zone: Tz) -> Result<NaiveDateTime, CellError> {
    match zone.from_local_datetime(naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => Ok(t.naive_utc()),
        chrono::LocalResult::None => Err(CellError::NoSuchLocalTime(format!(
            "{} does not exist in {zone} (clocks were moved forward)",
            naive_text(naive)
        ))),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`: the fraction only when there is one. DATETIME2's
/// seventh digit and DATETIME's thirds of a millisecond are cut to microseconds
/// (down, so a cursor bound made from the text never passes the row it came from).
pub fn naive_text(t: &NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

/// RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
pub fn utc_text(t: &NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

#[cfg(test)]
mod unit {
    use std::borrow::Cow;

    use tiberius::numeric::Numeric;
    use tiberius::time::{Date, DateTime2, DateTimeOffset, SmallDateTime, Time};
    use tiberius::xml::XmlData;
    use tiberius::Uuid;

    use super::*;

    /// Days from 0001-01-01 (DATE, DATETIME2) to `day`.
    fn days_since_year_1(day: &str) -> u32 {
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
        let epoch = NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        u32::try_from((day - epoch).num_days()).unwrap()
    }

    fn text(wire: ColumnType, value: ColumnData<'static>) -> Result<Option<String>, CellError> {
        to_text(&ColumnReading::of(by_wire(wire), None), &value)
    }

    fn ok(wire: ColumnType, value: ColumnData<'static>) -> String {
        text(wire, value).unwrap().unwrap()
    }

    #[test]
    fn wire_and_name_lookups_read_the_same_rows() {
        let cases: &[(ColumnType, &str, Option<CanonicalType>)] = &[
            (ColumnType::Int4, "int", Some(CanonicalType::Integer)),
            (ColumnType::Intn, "bigint", Some(CanonicalType::Integer)),
            (ColumnType::Bitn, "bit", Some(CanonicalType::Boolean)),
            (
                ColumnType::Numericn,
                "numeric",
                Some(CanonicalType::Decimal),
            ),
            (
                ColumnType::Decimaln,
                "decimal",
                Some(CanonicalType::Decimal),
            ),
            (ColumnType::Money, "money", Some(CanonicalType::Decimal)),
            (
                ColumnType::Money4,
                "smallmoney",
                Some(CanonicalType::Decimal),
            ),
            (ColumnType::Daten, "date", Some(CanonicalType::Date)),
            (
                ColumnType::Datetime2,
                "datetime2",
                Some(CanonicalType::Timestamp),
            ),
            (
                ColumnType::Datetimen,
                "datetime",
                Some(CanonicalType::Timestamp),
            ),
            (
                ColumnType::Datetime4,
                "smalldatetime",
                Some(CanonicalType::Timestamp),
            ),
            (
                ColumnType::DatetimeOffsetn,
                "datetimeoffset",
                Some(CanonicalType::TimestampTz),
            ),
            (ColumnType::NVarchar, "nvarchar", Some(CanonicalType::Text)),
            (ColumnType::BigChar, "char", Some(CanonicalType::Text)),
            (ColumnType::NText, "ntext", Some(CanonicalType::Text)),
            (
                ColumnType::Guid,
                "uniqueidentifier",
                Some(CanonicalType::Text),
            ),
            (ColumnType::Xml, "xml", Some(CanonicalType::Text)),
            (ColumnType::Float8, "float", None),
            (ColumnType::Float4, "real", None),
            (ColumnType::Timen, "time", None),
            (ColumnType::BigVarBin, "varbinary", None),
            (ColumnType::BigBinary, "timestamp", None),
            (ColumnType::Image, "image", None),
            (ColumnType::SSVariant, "sql_variant", None),
            (ColumnType::Udt, "geography", None),
        ];
        for (wire, name, canonical) in cases {
            assert_eq!(by_wire(*wire).canonical, *canonical, "{wire:?}");
            assert_eq!(by_name(name).canonical, *canonical, "{name}");
            assert_eq!(
                ColumnReading::of(by_wire(*wire), None).canonical(),
                *canonical,
                "{wire:?}"
            );
        }
        assert!(by_wire(ColumnType::Float8).advice.contains("DECIMAL(19,4)"));
        assert!(by_name("varbinary").advice.contains("CONVERT"));
        assert!(by_name("geography").advice.contains("cast"));
        for row in TYPES {
            for name in row.names {
                assert!(std::ptr::eq(by_name(name), row), "{name}");
            }
            for wire in row.wire {
                assert!(std::ptr::eq(by_wire(*wire), row), "{wire:?}");
            }
        }
    }

    #[test]
    fn integers_and_bits() {
        assert_eq!(ok(ColumnType::Int1, ColumnData::U8(Some(255))), "255");
        assert_eq!(
            ok(ColumnType::Int2, ColumnData::I16(Some(-32768))),
            "-32768"
        );
        assert_eq!(ok(ColumnType::Int4, ColumnData::I32(Some(7))), "7");
        assert_eq!(
            ok(ColumnType::Int8, ColumnData::I64(Some(i64::MIN))),
            "-9223372036854775808"
        );
        assert_eq!(ok(ColumnType::Bitn, ColumnData::Bit(Some(true))), "true");
        assert_eq!(ok(ColumnType::Bit, ColumnData::Bit(Some(false))), "false");
        assert_eq!(text(ColumnType::Int4, ColumnData::I32(None)), Ok(None));
    }

    #[test]
    fn decimals_keep_every_digit() {
        let numeric = |value: i128, scale: u8| {
            ok(
                ColumnType::Numericn,
                ColumnData::Numeric(Some(Numeric::new_with_scale(value, scale))),
            )
        };
        assert_eq!(numeric(-12_345_600, 4), "-1234.5600");
        assert_eq!(numeric(5, 4), "0.0005");
        assert_eq!(numeric(-5, 2), "-0.05");
        assert_eq!(numeric(0, 2), "0.00");
        assert_eq!(numeric(42, 0), "42");
        // DECIMAL(38,0) and DECIMAL(38,38) extremes: no float, no 28-digit limit.
        let nines = 10i128.pow(38) - 1;
        assert_eq!(numeric(nines, 0), "9".repeat(38));
        assert_eq!(numeric(-nines, 38), format!("-0.{}", "9".repeat(38)));
        assert_eq!(
            numeric(12_345_678_901_234_567_890_123_456_789_012_345_678, 10),
            "1234567890123456789012345678.9012345678"
        );
        assert_eq!(
            text(ColumnType::Decimaln, ColumnData::Numeric(None)),
            Ok(None)
        );
    }

    /// What tiberius makes of a MONEY's scaled integer (column_data/money.rs).
    fn wire_money(units: i64) -> ColumnData<'static> {
        let high = units >> 32;
        let low = (units & 0xFFFF_FFFF) as u32;
        ColumnData::F64(Some(((high << 32) as f64 + f64::from(low)) / 1e4))
    }

    #[test]
    fn money_is_exact_or_refused() {
        assert_eq!(ok(ColumnType::Money, wire_money(-7_550_125)), "-755.0125");
        assert_eq!(ok(ColumnType::Money4, wire_money(1)), "0.0001");
        assert_eq!(ok(ColumnType::Money, wire_money(0)), "0.0000");
        assert_eq!(
            ok(ColumnType::Money4, ColumnData::F64(Some(-214_748.364_8))),
            "-214748.3648"
        );
        // The largest exact magnitude, and values near it, come back digit for digit.
        let limit = (1i64 << 51) - 1;
        for units in [
            limit,
            -limit,
            limit - 3,
            1_234_567_890_123_456,
            999_999_999_999_999,
        ] {
            assert_eq!(
                ok(ColumnType::Money, wire_money(units)),
                scaled_text(i128::from(units), 4),
                "{units}"
            );
        }
        // A spread of values below the limit, as the research simulated.
        let mut units: i64 = 1;
        while units < limit {
            for v in [units, units + 7, -units - 3] {
                assert_eq!(
                    ok(ColumnType::Money, wire_money(v)),
                    scaled_text(i128::from(v), 4),
                    "{v}"
                );
            }
            units = units * 3 + 1;
        }
        // MONEY's maximum is beyond what a float recovers: refused, not rounded.
        assert!(matches!(
            text(ColumnType::Money, wire_money(i64::MAX)),
            Err(CellError::MoneyTooLarge(_))
        ));
        assert!(matches!(
            text(ColumnType::Money, wire_money(1 << 51)),
            Err(CellError::MoneyTooLarge(_))
        ));
        // Not a value tiberius could have produced from an integer.
        assert!(matches!(
            text(ColumnType::Money, ColumnData::F64(Some(0.000_05))),
            Err(CellError::MoneyTooLarge(_))
        ));
        assert_eq!(text(ColumnType::Money, ColumnData::F64(None)), Ok(None));
    }

    #[test]
    fn dates_and_times() {
        let day = days_since_year_1("2024-02-29");
        assert_eq!(
            ok(ColumnType::Daten, ColumnData::Date(Some(Date::new(day)))),
            "2024-02-29"
        );
        // DATETIME2(7): 100 ns increments; the seventh digit is cut.
        let increments = ((23 * 3600 + 59 * 60 + 1) * 10_000_000) + 50_001;
        let dt2 = DateTime2::new(Date::new(day), Time::new(increments, 7));
        assert_eq!(
            ok(ColumnType::Datetime2, ColumnData::DateTime2(Some(dt2))),
            "2024-02-29 23:59:01.005000"
        );
        // DATETIME2(0): whole seconds, no fraction written.
        let dt2 = DateTime2::new(Date::new(day), Time::new(10 * 3600, 0));
        assert_eq!(
            ok(ColumnType::Datetime2, ColumnData::DateTime2(Some(dt2))),
            "2024-02-29 10:00:00"
        );
        // DATETIME: days since 1900 and 1/300 s ticks (1 tick = 3.333 ms).
        let days_1900 = i32::try_from(day - days_since_year_1("1900-01-01")).unwrap();
        let dt = tiberius::time::DateTime::new(days_1900, 300 * 3600 + 1);
        assert_eq!(
            ok(ColumnType::Datetimen, ColumnData::DateTime(Some(dt))),
            "2024-02-29 01:00:00.003333"
        );
        // SMALLDATETIME: days since 1900 and minutes.
        let sdt = SmallDateTime::new(u16::try_from(days_1900).unwrap(), 61);
        assert_eq!(
            ok(ColumnType::Datetime4, ColumnData::SmallDateTime(Some(sdt))),
            "2024-02-29 01:01:00"
        );
        assert_eq!(
            text(ColumnType::Datetime2, ColumnData::DateTime2(None)),
            Ok(None)
        );
    }

    #[test]
    fn datetimeoffset_is_the_instant_in_utc() {
        // 2024-03-01 07:30:00.25 +07:00 is 00:30:00.25 UTC, which is what the
        // wire holds (tiberius's DateTime<Utc> would say 2024-02-29T17:30).
        let utc = DateTime2::new(
            Date::new(days_since_year_1("2024-03-01")),
            Time::new((30 * 60) * 100 + 25, 2),
        );
        let dto = DateTimeOffset::new(utc, 7 * 60);
        assert_eq!(
            ok(
                ColumnType::DatetimeOffsetn,
                ColumnData::DateTimeOffset(Some(dto))
            ),
            "2024-03-01T00:30:00.250000Z"
        );
        let negative = DateTimeOffset::new(
            DateTime2::new(Date::new(days_since_year_1("2024-01-01")), Time::new(0, 0)),
            -5 * 60,
        );
        assert_eq!(
            ok(
                ColumnType::DatetimeOffsetn,
                ColumnData::DateTimeOffset(Some(negative))
            ),
            "2024-01-01T00:00:00Z"
        );
    }

    #[test]
    fn naive_times_in_the_source_timezone() {
        let reading = ColumnReading::of(by_name("datetime2"), Some(chrono_tz::Asia::Jakarta));
        assert_eq!(reading.canonical(), Some(CanonicalType::TimestampTz));
        let at = |day: &str, seconds: u64| {
            ColumnData::DateTime2(Some(DateTime2::new(
                Date::new(days_since_year_1(day)),
                Time::new(seconds, 0),
            )))
        };
        assert_eq!(
            to_text(&reading, &at("2024-01-31", 10 * 3600))
                .unwrap()
                .as_deref(),
            Some("2024-01-31T03:00:00Z")
        );
        let berlin = ColumnReading::of(by_name("datetime"), Some(chrono_tz::Europe::Berlin));
        assert!(matches!(
            to_text(&berlin, &at("2024-03-31", 2 * 3600 + 1800)),
            Err(CellError::NoSuchLocalTime(_))
        ));
        // The zone applies to naive times only.
        let date = ColumnReading::of(by_name("date"), Some(chrono_tz::Asia::Jakarta));
        assert_eq!(date.zone, None);
        assert_eq!(date.canonical(), Some(CanonicalType::Date));
    }

    #[test]
    fn texts() {
        assert_eq!(
            ok(
                ColumnType::NVarchar,
                ColumnData::String(Some(Cow::Borrowed("Kopi Susu ☕")))
            ),
            "Kopi Susu ☕"
        );
        let guid = Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
        assert_eq!(
            ok(ColumnType::Guid, ColumnData::Guid(Some(guid))),
            "6F9619FF-8B86-D011-B42D-00C04FC964FF"
        );
        assert_eq!(
            ok(
                ColumnType::Xml,
                ColumnData::Xml(Some(Cow::Owned(XmlData::new("<a>1</a>"))))
            ),
            "<a>1</a>"
        );
        assert_eq!(text(ColumnType::Null, ColumnData::I32(None)), Ok(None));
    }

    #[test]
    fn a_value_of_another_type_is_an_error_not_a_guess() {
        assert!(matches!(
            text(ColumnType::Int4, ColumnData::F64(Some(1.0))),
            Err(CellError::Unexpected(_))
        ));
        assert!(matches!(
            text(ColumnType::Numericn, ColumnData::F64(Some(1.5))),
            Err(CellError::Unexpected(_))
        ));
    }
}
