//! Where an incremental read starts: the committed cursor minus the look-back,
//! computed here (not in SQL) so the bound is one text parameter whatever the
//! column's type.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use ledgersync_config::Lookback;

use super::typesystem::{instant_text, naive_text, Reading};
use crate::source::CanonicalType;

/// The lower bound of the cursor column, in the canonical text of its type;
/// the error says what is wrong with the committed cursor or the look-back.
pub(crate) fn lower_bound(
    reading: Reading,
    committed: &str,
    lookback: Option<Lookback>,
    timezone: Option<Tz>,
) -> Result<String, String> {
    let unreadable = |what: &str| format!("the committed cursor '{committed}' is not {what}");
    let seconds = |lookback: Option<Lookback>| match lookback {
        None => Ok(0),
        Some(Lookback::Seconds(s)) => Ok(s),
        Some(Lookback::Count(_)) => Err(
            "a look-back count is for integer cursors; give a duration (90s, 10m, 2h, 1d)"
                .to_owned(),
        ),
    };
    let too_far = || "the look-back reaches beyond the representable range".to_owned();
    match reading.canonical() {
        Some(CanonicalType::Integer) => {
            let value: i64 = committed
                .trim()
                .parse()
                .map_err(|_| unreadable("an integer"))?;
            let back = match lookback {
                None => 0,
                Some(Lookback::Count(n)) => n,
                Some(Lookback::Seconds(_)) => {
                    return Err("a look-back duration is for time cursors; give a count of values (e.g. lookback = \"500\")".to_owned())
                }
            };
            value
                .checked_sub(back)
                .map(|v| v.to_string())
                .ok_or_else(too_far)
        }
        Some(CanonicalType::TimestampTz) => {
            let value = DateTime::parse_from_rfc3339(committed.trim())
                .map_err(|_| unreadable("an RFC 3339 time"))?
                .with_timezone(&Utc);
            value
                .checked_sub_signed(TimeDelta::seconds(seconds(lookback)?))
                .map(instant_text)
                .ok_or_else(too_far)
        }
        Some(CanonicalType::Timestamp) => {
            let text = committed.trim();
            let value = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
                .ok()
                // A cursor written as an instant (a source_timezone was set): back
                // to the column's local time.
                .or_else(|| {
                    let instant = DateTime::parse_from_rfc3339(text).ok()?;
                    Some(instant.with_timezone(&timezone?).naive_local())
                })
                .ok_or_else(|| unreadable("a timestamp"))?;
            value
                .checked_sub_signed(TimeDelta::seconds(seconds(lookback)?))
                .map(naive_text)
                .ok_or_else(too_far)
        }
        Some(CanonicalType::Date) => {
            let value = NaiveDate::parse_from_str(committed.trim(), "%Y-%m-%d")
                .map_err(|_| unreadable("a date"))?;
            // Whole days, rounded up so the look-back is never shorter than asked.
            let days = seconds(lookback)?.saturating_add(86_399) / 86_400;
            value
                .checked_sub_signed(TimeDelta::days(days))
                .map(|d| d.format("%Y-%m-%d").to_string())
                .ok_or_else(too_far)
        }
        _ => match lookback {
            None | Some(Lookback::Count(0)) | Some(Lookback::Seconds(0)) => {
                Ok(committed.to_owned())
            }
            Some(_) => Err(
                "a look-back needs an integer, date or time cursor column; remove `lookback`"
                    .to_owned(),
            ),
        },
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn look_backs_are_subtracted_by_type() {
        assert_eq!(
            lower_bound(Reading::Int8, "1000", Some(Lookback::Count(10)), None).as_deref(),
            Ok("990")
        );
        assert_eq!(
            lower_bound(
                Reading::TimestampTz,
                "2024-03-01T00:05:00.250000Z",
                Some(Lookback::Seconds(600)),
                None
            )
            .as_deref(),
            Ok("2024-02-29T23:55:00.250000Z")
        );
        assert_eq!(
            lower_bound(
                Reading::Timestamp,
                "2024-03-01 00:05:00",
                Some(Lookback::Seconds(60)),
                None
            )
            .as_deref(),
            Ok("2024-03-01 00:04:00")
        );
        assert_eq!(
            lower_bound(
                Reading::Date,
                "2024-03-01",
                Some(Lookback::Seconds(3600)),
                None
            )
            .as_deref(),
            Ok("2024-02-29")
        );
        assert!(lower_bound(Reading::Int8, "10", Some(Lookback::Seconds(60)), None).is_err());
        assert!(lower_bound(Reading::Utf8, "b", Some(Lookback::Count(2)), None).is_err());
        assert!(lower_bound(Reading::TimestampTz, "yesterday", None, None).is_err());
    }
}
