//! Dates and times written as text without chrono's `format`, which reads its
//! format string again for every value: a sync writes millions of them.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};

/// `YYYY-MM-DD`; `None` for a year outside 0000-9999, which has no such form.
pub fn push_date(out: &mut String, date: NaiveDate) -> Option<()> {
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    write!(out, "{year:04}-{:02}-{:02}", date.month(), date.day()).ok()
}

/// `YYYY-MM-DD HH:MM:SS`, then `.ffffff` when the time has microseconds;
/// `None` for a year outside 0000-9999.
pub fn push_naive_micros(out: &mut String, time: NaiveDateTime, separator: char) -> Option<()> {
    push_date(out, time.date())?;
    out.push(separator);
    write!(
        out,
        "{:02}:{:02}:{:02}",
        time.hour(),
        time.minute(),
        time.second()
    )
    .ok()?;
    let micros = time.nanosecond() / 1_000;
    if micros != 0 {
        write!(out, ".{micros:06}").ok()?;
    }
    Some(())
}

/// `YYYY-MM-DD`, as `NaiveDate`'s `%Y-%m-%d` writes it.
pub fn date_text(date: NaiveDate) -> String {
    let mut out = String::with_capacity(10);
    match push_date(&mut out, date) {
        Some(()) => out,
        None => date.format("%Y-%m-%d").to_string(),
    }
}

/// `YYYY-MM` of a date.
pub fn month_text(date: NaiveDate) -> String {
    let mut out = String::with_capacity(7);
    if (0..=9999).contains(&date.year()) {
        let _ = write!(out, "{:04}-{:02}", date.year(), date.month());
        return out;
    }
    date.format("%Y-%m").to_string()
}

/// Exactly what [`DateTime::to_rfc3339`] writes for a UTC instant
/// (`2025-01-31T17:30:00+00:00`, with 3, 6 or 9 fractional digits when needed).
pub fn rfc3339_utc(instant: DateTime<Utc>) -> String {
    let time = instant.naive_utc();
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 || !(0..=9999).contains(&time.year()) {
        // A leap second, or a year RFC 3339 has no four digits for: chrono's own.
        return instant.to_rfc3339();
    }
    let mut out = String::with_capacity(32);
    let _ = push_date(&mut out, time.date());
    let _ = write!(
        out,
        "T{:02}:{:02}:{:02}",
        time.hour(),
        time.minute(),
        time.second()
    );
    if nanos == 0 {
    } else if nanos.is_multiple_of(1_000_000) {
        let _ = write!(out, ".{:03}", nanos / 1_000_000);
    } else if nanos.is_multiple_of(1_000) {
        let _ = write!(out, ".{:06}", nanos / 1_000);
    } else {
        let _ = write!(out, ".{nanos:09}");
    }
    out.push_str("+00:00");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_chronos_own() {
        let base = NaiveDate::from_ymd_opt(2025, 1, 31)
            .unwrap()
            .and_hms_opt(17, 30, 5)
            .unwrap();
        for nanos in [0, 120_000_000, 123_456_000, 123_456_789, 1_000, 7] {
            let time = base + chrono::Duration::nanoseconds(nanos);
            let instant = time.and_utc();
            assert_eq!(rfc3339_utc(instant), instant.to_rfc3339(), "{nanos}");
            let mut naive = String::new();
            push_naive_micros(&mut naive, time, ' ').unwrap();
            let expected = if nanos / 1_000 == 0 {
                time.format("%Y-%m-%d %H:%M:%S").to_string()
            } else {
                format!("{}.{:06}", time.format("%Y-%m-%d %H:%M:%S"), nanos / 1_000)
            };
            assert_eq!(naive, expected);
        }
        for date in [
            NaiveDate::from_ymd_opt(1, 2, 3).unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(-5, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(12345, 1, 1).unwrap(),
        ] {
            assert_eq!(date_text(date), date.format("%Y-%m-%d").to_string());
            assert_eq!(month_text(date), date.format("%Y-%m").to_string());
        }
        let far = NaiveDate::from_ymd_opt(12345, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        assert_eq!(rfc3339_utc(far), far.to_rfc3339());
    }
}
