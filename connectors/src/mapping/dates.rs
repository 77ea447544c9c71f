//! Turning source date and timestamp text into a tenant-local calendar date.
//!
//! A timestamp is first placed on the UTC timeline (by its own offset, or by the
//! timezone the source writes naive times in) and only then given a date in the
//! tenant's timezone: 2025-01-31 17:30 UTC is 1 February in Jakarta.

use std::sync::LazyLock;

use chrono::format::{parse, Item, Parsed as Fields, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use ledgersync_schemas::excerpt;

const NAIVE_FORMATS: [&str; 4] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
];

/// Formats read once: chrono's `parse_from_str` reads its format string again for
/// every value, and a sync parses millions.
static DATE_ITEMS: LazyLock<Vec<Item<'static>>> =
    LazyLock::new(|| StrftimeItems::new("%Y-%m-%d").collect());
static NAIVE_ITEMS: LazyLock<Vec<Vec<Item<'static>>>> = LazyLock::new(|| {
    NAIVE_FORMATS
        .iter()
        .map(|format| StrftimeItems::new(format).collect())
        .collect()
});

/// `text` read by `items` into its fields, as `parse_from_str` does.
fn fields(text: &str, items: &[Item<'_>]) -> Option<Fields> {
    let mut fields = Fields::new();
    parse(&mut fields, text, items.iter()).ok()?;
    Some(fields)
}

pub(crate) struct DateParser {
    format: Option<String>,
    /// `format` read once; `None` if it is not a format chrono reads (no text
    /// matches it then).
    items: Option<Vec<Item<'static>>>,
    source_tz: Tz,
    tenant_tz: Tz,
}

/// A calendar date in the tenant's timezone, and the instant it came from if the
/// source gave one.
pub(crate) type LocalDate = (NaiveDate, Option<DateTime<Utc>>);

/// Text read as a date or instant, or as a local time still to be placed in the
/// source's timezone.
enum Parsed {
    Placed(LocalDate),
    Naive(NaiveDateTime),
}

impl DateParser {
    pub(crate) fn new(format: Option<String>, source_tz: Tz, tenant_tz: Tz) -> DateParser {
        let items = format
            .as_deref()
            .and_then(|format| StrftimeItems::new(format).parse_to_owned().ok());
        DateParser {
            format,
            items,
            source_tz,
            tenant_tz,
        }
    }

    pub(crate) fn parse(&self, text: &str) -> Result<LocalDate, String> {
        let parsed = match (&self.format, &self.items) {
            (Some(_), Some(items)) => self.parse_with(text, items),
            (Some(_), None) => None,
            (None, _) => self.parse_guessing(text),
        };
        let naive = match parsed {
            Some(Parsed::Placed(date)) => return Ok(date),
            Some(Parsed::Naive(naive)) => naive,
            None => return Err(self.unreadable(text)),
        };
        // A time skipped by a daylight-saving jump has no instant: refuse it rather
        // than guess.
        match self.source_tz.from_local_datetime(&naive).earliest() {
            Some(instant) => Ok(self.localize(instant.with_timezone(&Utc))),
            None => Err(format!(
                "local time '{}' does not exist in {}: the clocks jumped forward over it \
                 (daylight saving); correct the time in the source, or export times with \
                 their UTC offset (RFC 3339)",
                excerpt(text),
                self.source_tz
            )),
        }
    }

    fn unreadable(&self, text: &str) -> String {
        match &self.format {
            Some(format) => format!("bad date '{}': expected the format {format}", excerpt(text)),
            None => {
                format!(
                    "bad date '{}': expected YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or RFC 3339",
                    excerpt(text)
                )
            }
        }
    }

    /// As `DateTime`, `NaiveDateTime` and then `NaiveDate::parse_from_str` read
    /// `text` by the format of `items`.
    fn parse_with(&self, text: &str, items: &[Item<'_>]) -> Option<Parsed> {
        let fields = fields(text, items)?;
        if let Ok(instant) = fields.to_datetime() {
            return Some(Parsed::Placed(
                self.localize(DateTime::<FixedOffset>::with_timezone(&instant, &Utc)),
            ));
        }
        if let Ok(naive) = fields.to_naive_datetime_with_offset(0) {
            return Some(Parsed::Naive(naive));
        }
        fields
            .to_naive_date()
            .ok()
            .map(|d| Parsed::Placed((d, None)))
    }

    fn parse_guessing(&self, text: &str) -> Option<Parsed> {
        // Plain dates first: they are what most exports hold, and a date followed by
        // a time does not read as one (the text must end with the date).
        if let Some(date) = fields(text, &DATE_ITEMS).and_then(|f| f.to_naive_date().ok()) {
            return Some(Parsed::Placed((date, None)));
        }
        if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
            return Some(Parsed::Placed(self.localize(instant.with_timezone(&Utc))));
        }
        NAIVE_ITEMS
            .iter()
            .find_map(|items| fields(text, items)?.to_naive_datetime_with_offset(0).ok())
            .map(Parsed::Naive)
    }

    /// An instant's date in the tenant's timezone.
    pub(crate) fn localize(&self, instant: DateTime<Utc>) -> LocalDate {
        (
            instant.with_timezone(&self.tenant_tz).date_naive(),
            Some(instant),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jakarta_from_utc() -> DateParser {
        DateParser::new(None, chrono_tz::UTC, chrono_tz::Asia::Jakarta)
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn utc_evening_is_next_day_in_jakarta() {
        let (local, instant) = jakarta_from_utc().parse("2025-01-31 17:30:00").unwrap();
        assert_eq!(local, date("2025-02-01"));
        assert_eq!(instant.unwrap().to_rfc3339(), "2025-01-31T17:30:00+00:00");
    }

    #[test]
    fn offsets_in_the_text_win() {
        let (local, _) = jakarta_from_utc()
            .parse("2025-02-01T00:30:00+07:00")
            .unwrap();
        assert_eq!(local, date("2025-02-01"));
        let (local, _) = jakarta_from_utc().parse("2025-01-31T16:59:59Z").unwrap();
        assert_eq!(local, date("2025-01-31"));
    }

    #[test]
    fn plain_dates_stay_as_written() {
        let (local, instant) = jakarta_from_utc().parse("2025-01-31").unwrap();
        assert_eq!((local, instant), (date("2025-01-31"), None));
    }

    /// Formats read once read every text as chrono's `parse_from_str` does.
    #[test]
    fn formats_read_once_read_as_chrono_does() {
        let texts = [
            "2025-01-31",
            "2025-01-31 17:30:05",
            "2025-01-31T17:30:05.25",
            "2025-01-31 17:30",
            "2025-01-31T17:30",
            "2025-01-31 17:30:05+07:00",
            "31/01/2025",
            "2025-13-01",
            "2025-01-31 25:00",
            "2025-01-31 17:30:05 trailing",
            "",
        ];
        for text in texts {
            let date = fields(text, &DATE_ITEMS).and_then(|f| f.to_naive_date().ok());
            assert_eq!(
                date,
                NaiveDate::parse_from_str(text, "%Y-%m-%d").ok(),
                "{text}"
            );
            for (format, items) in NAIVE_FORMATS.iter().zip(NAIVE_ITEMS.iter()) {
                let naive =
                    fields(text, items).and_then(|f| f.to_naive_datetime_with_offset(0).ok());
                let chronos = NaiveDateTime::parse_from_str(text, format).ok();
                assert_eq!(naive, chronos, "{text} by {format}");
            }
        }
        // An explicit format with an offset places the time by it.
        let parser = DateParser::new(
            Some("%Y-%m-%d %H:%M:%S%z".into()),
            chrono_tz::Asia::Tokyo,
            chrono_tz::Asia::Jakarta,
        );
        let (local, instant) = parser.parse("2025-01-31 17:30:00+0000").unwrap();
        assert_eq!(local, date("2025-02-01"));
        assert_eq!(instant.unwrap().to_rfc3339(), "2025-01-31T17:30:00+00:00");
    }

    #[test]
    fn explicit_formats_and_bad_text() {
        let parser = DateParser::new(
            Some("%d/%m/%Y".into()),
            chrono_tz::UTC,
            chrono_tz::Asia::Jakarta,
        );
        assert_eq!(parser.parse("01/02/2025").unwrap().0, date("2025-02-01"));
        assert!(parser.parse("2025-02-01").unwrap_err().contains("%d/%m/%Y"));
        assert!(jakarta_from_utc().parse("31-01-2025").is_err());
    }

    /// 02:30 on 9 March 2025 never happened in New York (02:00 became 03:00): the
    /// error says so instead of calling the text a bad date.
    #[test]
    fn a_local_time_skipped_by_daylight_saving_is_named() {
        let parser = DateParser::new(
            None,
            chrono_tz::America::New_York,
            chrono_tz::America::New_York,
        );
        let err = parser.parse("2025-03-09 02:30:00").unwrap_err();
        assert!(
            err.contains("local time '2025-03-09 02:30:00' does not exist in America/New_York"),
            "{err}"
        );
        assert!(!err.contains("bad date"), "{err}");
        let (local, _) = parser.parse("2025-03-09 03:30:00").unwrap();
        assert_eq!(local, date("2025-03-09"));
        let with_format = DateParser::new(
            Some("%d/%m/%Y %H:%M".into()),
            chrono_tz::America::New_York,
            chrono_tz::UTC,
        );
        let err = with_format.parse("09/03/2025 02:15").unwrap_err();
        assert!(err.contains("does not exist in America/New_York"), "{err}");
    }
}
