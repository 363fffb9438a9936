//! HTTP dates as a recipient must read them (RFC 9110 §5.6.7): IMF-fixdate
//! (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form (`Sunday, 06-Nov-94 08:49:37
//! GMT`) and asctime (`Sun Nov  6 08:49:37 1994`), with month, weekday and `GMT` in any case,
//! and a weekday that does not match the date tolerated (origins get it wrong; the date is
//! what counts). Anything else (a bad day, month, time or zone) is invalid.
//!
//! Hand-written because `httpdate` is strict about case and weekday, which is right for a
//! sender and wrong for a cache reading what origins send.

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Seconds since the Unix epoch of an HTTP date; `None` when it is not one. `now` (in Unix
/// seconds) decides the century of an RFC 850 two-digit year (§5.6.7: a year more than 50
/// years in the future is in the past century).
pub(super) fn parse(text: &str, now: u64) -> Option<u64> {
    let text = text.trim();
    let (weekday, rest) = text.split_once([',', ' '])?;
    let weekday = weekday.to_ascii_lowercase();
    if !WEEKDAYS
        .iter()
        .any(|day| *day == weekday || (weekday.len() == 3 && day.starts_with(&weekday)))
    {
        return None;
    }
    let tokens: Vec<&str> = rest
        .split([' ', '-'])
        .filter(|token| !token.is_empty())
        .collect();
    let (day, month, year, time) = match tokens.as_slice() {
        [day, month, year, time, zone] if zone.eq_ignore_ascii_case("gmt") => {
            (*day, *month, *year, *time)
        }
        // asctime: no zone, the year last.
        [month, day, time, year] if !rest.contains('-') && !text.contains(',') => {
            (*day, *month, *year, *time)
        }
        _ => return None,
    };
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u64 + 1;
    let year = match (year.len(), digits(year)?) {
        (4, year) => year,
        (2, short) => {
            let this_year = 1970 + now / 31_556_952;
            if 2000 + short > this_year + 50 {
                1900 + short
            } else {
                2000 + short
            }
        }
        _ => return None,
    };
    let day = match day.len() {
        1 | 2 => digits(day)?,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut clock = time.split(':');
    let (hour, minute, second) = (
        two_digits(clock.next()?)?,
        two_digits(clock.next()?)?,
        two_digits(clock.next()?)?,
    );
    if clock.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second.min(59))
}

fn digits(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn two_digits(text: &str) -> Option<u64> {
    (text.len() == 2).then(|| digits(text)).flatten()
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year >= 1970),
/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_000_000; // late 2026
    const NOV_6_1994: u64 = 784_111_777;

    #[test]
    fn the_three_forms_in_any_case_and_with_a_wrong_weekday() {
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUN, 06 NOV 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun nov 6 08:49:37 1994",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Thursday, 06-Nov-94 08:49:37 GMT",
            "  Sun, 06 Nov 1994 08:49:37 GMT  ",
        ] {
            assert_eq!(parse(text, NOW), Some(NOV_6_1994), "{text}");
        }
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT", NOW), Some(0));
        assert_eq!(
            parse("Tue, 29 Feb 2028 12:00:00 GMT", NOW),
            Some(1_835_438_400)
        );
    }

    #[test]
    fn two_digit_years_are_at_most_fifty_years_ahead() {
        assert_eq!(
            parse("Tuesday, 01-Jan-80 00:00:00 GMT", NOW),
            Some(315_532_800),
            "2080 is more than 50 years after 2026: 1980"
        );
        assert_eq!(
            parse("Saturday, 01-Jan-50 00:00:00 GMT", NOW),
            parse("Sat, 01 Jan 2050 00:00:00 GMT", NOW)
        );
    }

    #[test]
    fn what_is_not_a_date_is_rejected() {
        for text in [
            "",
            "0",
            "-1",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 2027 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 6 Nov 19945 08:49:37 GMT",
            "Fun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
        ] {
            assert_eq!(parse(text, NOW), None, "{text:?}");
        }
    }
}
