//! Dates and times written as text without chrono's `format`, which reads its
//! format string again for every value, nor `std::fmt`, whose padding machinery
//! costs more than the digits: a sync writes millions of them.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};

/// The last `WIDTH` decimal digits of `value`, zero-padded: `{value:0WIDTH$}` for a
/// value below 10^WIDTH, which every caller passes.
fn push_padded<const WIDTH: usize>(out: &mut String, value: u32) {
    let mut digits = [b'0'; WIDTH];
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    debug_assert_eq!(rest, 0, "{value} has more than {WIDTH} digits");
    out.extend(digits.iter().map(|&digit| char::from(digit)));
}

/// The year of `date` if it has four digits (0000-9999).
fn four_digit_year(date: NaiveDate) -> Option<u32> {
    u32::try_from(date.year()).ok().filter(|year| *year <= 9999)
}

/// `YYYY-MM-DD`; `None` for a year outside 0000-9999, which has no such form.
pub fn push_date(out: &mut String, date: NaiveDate) -> Option<()> {
    push_padded::<4>(out, four_digit_year(date)?);
    out.push('-');
    push_padded::<2>(out, date.month());
    out.push('-');
    push_padded::<2>(out, date.day());
    Some(())
}

/// `HH:MM:SS`.
fn push_time(out: &mut String, time: NaiveDateTime) {
    push_padded::<2>(out, time.hour());
    out.push(':');
    push_padded::<2>(out, time.minute());
    out.push(':');
    push_padded::<2>(out, time.second());
}

/// `YYYY-MM-DD HH:MM:SS`, then `.ffffff` when the time has microseconds;
/// `None` for a year outside 0000-9999 or a leap second.
pub fn push_naive_micros(out: &mut String, time: NaiveDateTime, separator: char) -> Option<()> {
    let micros = time.nanosecond() / 1_000;
    if micros >= 1_000_000 {
        return None;
    }
    push_date(out, time.date())?;
    out.push(separator);
    push_time(out, time);
    if micros != 0 {
        out.push('.');
        push_padded::<6>(out, micros);
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
    match four_digit_year(date) {
        Some(year) => {
            let mut out = String::with_capacity(7);
            push_padded::<4>(&mut out, year);
            out.push('-');
            push_padded::<2>(&mut out, date.month());
            out
        }
        None => date.format("%Y-%m").to_string(),
    }
}

/// Exactly what [`DateTime::to_rfc3339`] writes for a UTC instant
/// (`2025-01-31T17:30:00+00:00`, with 3, 6 or 9 fractional digits when needed).
pub fn rfc3339_utc(instant: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(32);
    push_rfc3339_utc(&mut out, instant);
    out
}

/// [`rfc3339_utc`], written at the end of `out`.
pub fn push_rfc3339_utc(out: &mut String, instant: DateTime<Utc>) {
    let time = instant.naive_utc();
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 || push_date(out, time.date()).is_none() {
        // A leap second, or a year RFC 3339 has no four digits for: chrono's own.
        out.push_str(&instant.to_rfc3339());
        return;
    }
    out.push('T');
    push_time(out, time);
    if nanos == 0 {
    } else if nanos.is_multiple_of(1_000_000) {
        out.push('.');
        push_padded::<3>(out, nanos / 1_000_000);
    } else if nanos.is_multiple_of(1_000) {
        out.push('.');
        push_padded::<6>(out, nanos / 1_000);
    } else {
        out.push('.');
        push_padded::<9>(out, nanos);
    }
    out.push_str("+00:00");
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
