//! Where an incremental read starts: the committed cursor minus the look-back,
//! as a parameter of the cursor column's own kind, so the server compares
//! like with like (and can seek an index on the column).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeDelta};
use ledgersync_config::Lookback;
use tiberius::ToSql;

use super::typesystem::{ColumnReading, Decode};

/// The bound `@P1`.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// BIGINT.
    Integer(i64),
    /// DATE.
    Date(NaiveDate),
    /// DATETIME2(7): a DATETIME or SMALLDATETIME column is widened to it.
    Naive(NaiveDateTime),
    /// DATETIMEOFFSET at +00:00.
    Instant(DateTime<FixedOffset>),
    /// NVARCHAR, converted by the server to the column's type.
    Text(String),
}

impl Bound {
    pub fn as_sql(&self) -> &dyn ToSql {
        match self {
            Bound::Integer(v) => v,
            Bound::Date(v) => v,
            Bound::Naive(v) => v,
            Bound::Instant(v) => v,
            Bound::Text(v) => v,
        }
    }
}

/// The lower bound of the cursor column; the error says what is wrong with the
/// committed cursor or the look-back.
pub fn lower_bound(
    reading: &ColumnReading,
    committed: &str,
    lookback: Option<Lookback>,
) -> Result<Bound, String> {
    let committed = committed.trim();
    let unreadable = |what: &str| {
        format!("the committed cursor '{committed}' is not {what}; reset the stream's cursor")
    };
    let seconds = || match lookback {
        None | Some(Lookback::Count(0)) => Ok(0),
        Some(Lookback::Seconds(s)) => Ok(s),
        Some(Lookback::Count(_)) => Err(
            "a look-back count is for integer cursors; give a duration (90s, 10m, 2h, 1d)"
                .to_owned(),
        ),
    };
    let too_far = || "the look-back reaches beyond the representable range".to_owned();
    match reading.decode {
        Decode::Integer => {
            let value: i64 = committed.parse().map_err(|_| unreadable("an integer"))?;
            let back = match lookback {
                None | Some(Lookback::Seconds(0)) => 0,
                Some(Lookback::Count(n)) => n,
                Some(Lookback::Seconds(_)) => {
                    return Err("a look-back duration is for time cursors; give a count of values (e.g. lookback = \"500\")".to_owned())
                }
            };
            value
                .checked_sub(back)
                .map(Bound::Integer)
                .ok_or_else(too_far)
        }
        Decode::Date => {
            let value = NaiveDate::parse_from_str(committed, "%Y-%m-%d")
                .map_err(|_| unreadable("a date"))?;
            // Whole days, rounded up so the look-back is never shorter than asked.
            let days = seconds()?.saturating_add(86_399) / 86_400;
            value
                .checked_sub_signed(TimeDelta::days(days))
                .map(Bound::Date)
                .ok_or_else(too_far)
        }
        Decode::Naive => {
            let local = NaiveDateTime::parse_from_str(committed, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                // Written as an instant when the connector has a source_timezone:
                // back to the column's wall-clock time.
                .or_else(|| {
                    let instant = DateTime::parse_from_rfc3339(committed).ok()?;
                    Some(instant.with_timezone(&reading.zone?).naive_local())
                })
                .ok_or_else(|| unreadable("a date and time"))?;
            local
                .checked_sub_signed(TimeDelta::seconds(seconds()?))
                .map(Bound::Naive)
                .ok_or_else(too_far)
        }
        Decode::Offset => {
            let instant = DateTime::parse_from_rfc3339(committed)
                .map_err(|_| unreadable("an RFC 3339 time"))?;
            let utc = FixedOffset::east_opt(0).ok_or_else(too_far)?;
            instant
                .checked_sub_signed(TimeDelta::seconds(seconds()?))
                .map(|t| t.with_timezone(&utc))
                .map(Bound::Instant)
                .ok_or_else(too_far)
        }
        Decode::Boolean | Decode::Numeric | Decode::Money | Decode::Text | Decode::Refuse => {
            match lookback {
                None | Some(Lookback::Count(0)) | Some(Lookback::Seconds(0)) => {
                    Ok(Bound::Text(committed.to_owned()))
                }
                Some(_) => Err(
                    "a look-back needs an integer, date or time cursor column; remove `lookback`"
                        .to_owned(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod unit {
    use chrono_tz::Tz;

    use super::*;
    use crate::mssql::typesystem::by_name;

    fn reading(data_type: &str, zone: Option<Tz>) -> ColumnReading {
        ColumnReading::of(by_name(data_type), zone)
    }

    fn naive(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn look_backs_are_subtracted_in_the_columns_terms() {
        assert_eq!(
            lower_bound(&reading("bigint", None), "1000", Some(Lookback::Count(10))),
            Ok(Bound::Integer(990))
        );
        assert_eq!(
            lower_bound(&reading("int", None), "1000", None),
            Ok(Bound::Integer(1000))
        );
        assert_eq!(
            lower_bound(
                &reading("datetime2", None),
                "2024-03-01 00:05:00.250000",
                Some(Lookback::Seconds(600))
            ),
            Ok(Bound::Naive(naive("2024-02-29 23:55:00.25")))
        );
        // With a source_timezone the cursor is an instant; the bound is the
        // column's wall-clock time again (Jakarta is UTC+7).
        assert_eq!(
            lower_bound(
                &reading("datetime", Some(chrono_tz::Asia::Jakarta)),
                "2024-01-31T03:00:00Z",
                Some(Lookback::Seconds(60))
            ),
            Ok(Bound::Naive(naive("2024-01-31 09:59:00")))
        );
        let Ok(Bound::Instant(instant)) = lower_bound(
            &reading("datetimeoffset", None),
            "2024-03-01T00:30:00.250000Z",
            Some(Lookback::Seconds(1800)),
        ) else {
            panic!("an instant bound")
        };
        assert_eq!(instant.to_rfc3339(), "2024-03-01T00:00:00.250+00:00");
        assert_eq!(
            lower_bound(
                &reading("date", None),
                "2024-03-01",
                Some(Lookback::Seconds(3600))
            ),
            Ok(Bound::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()))
        );
        assert_eq!(
            lower_bound(&reading("nvarchar", None), "S-0042", None),
            Ok(Bound::Text("S-0042".into()))
        );
    }

    #[test]
    fn wrong_look_backs_and_cursors_are_explained() {
        assert!(
            lower_bound(&reading("int", None), "10", Some(Lookback::Seconds(60)))
                .unwrap_err()
                .contains("count")
        );
        assert!(lower_bound(
            &reading("datetime2", None),
            "2024-01-01 00:00:00",
            Some(Lookback::Count(3))
        )
        .unwrap_err()
        .contains("duration"));
        assert!(lower_bound(&reading("varchar", None), "b", Some(Lookback::Count(2))).is_err());
        assert!(lower_bound(&reading("datetime2", None), "yesterday", None)
            .unwrap_err()
            .contains("reset the stream's cursor"));
        assert!(lower_bound(
            &reading("bigint", None),
            &i64::MIN.to_string(),
            Some(Lookback::Count(1))
        )
        .is_err());
    }
}
