//! `strftime_now(format)`: the clock a template may print (Llama 3.x's
//! "Today Date", Mistral's "The current date is"), formatted like C's
//! `strftime` in the C locale, in UTC. The time comes from the request, so
//! tests fix it.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A moment split into calendar fields (UTC).
struct Civil {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    /// 0 = Sunday
    weekday: u32,
    /// 1..=366
    yday: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn at(time: SystemTime) -> Civil {
        let secs = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let yday = days - days_from_civil(year, 1, 1) + 1;
        Civil {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday.
            weekday: u32::try_from((days + 4).rem_euclid(7)).unwrap_or(0),
            yday: u32::try_from(yday).unwrap_or(1),
            hour: u32::try_from(rem / 3600).unwrap_or(0),
            minute: u32::try_from(rem % 3600 / 60).unwrap_or(0),
            second: u32::try_from(rem % 60).unwrap_or(0),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `time` (UTC) by `format`. Supports the C/POSIX conversions
/// (`%a %A %b %B %c %C %d %D %e %F %h %H %I %j %m %M %n %p %r %R %S %t %T
/// %u %w %x %X %y %Y %z %Z %%`) and glibc's `-` flag (`%-d`: no padding);
/// anything else is copied as written, as glibc does.
pub(super) fn strftime(time: SystemTime, format: &str) -> String {
    let t = Civil::at(time);
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let Some(code) = chars.next() else {
            out.push('%');
            break;
        };
        let num = |n: i64, width: usize| {
            if unpadded {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        let hour12 = match t.hour % 12 {
            0 => 12,
            h => h,
        };
        let month = MONTHS[(t.month as usize).saturating_sub(1) % 12];
        let weekday = DAYS[t.weekday as usize % 7];
        let piece = match code {
            'a' => weekday[..3].to_string(),
            'A' => weekday.to_string(),
            'b' | 'h' => month[..3].to_string(),
            'B' => month.to_string(),
            'c' => format!(
                "{} {} {:>2} {:02}:{:02}:{:02} {}",
                &weekday[..3],
                &month[..3],
                t.day,
                t.hour,
                t.minute,
                t.second,
                t.year
            ),
            'C' => num(t.year.div_euclid(100), 2),
            'd' => num(t.day.into(), 2),
            'D' | 'x' => format!("{:02}/{:02}/{:02}", t.month, t.day, t.year.rem_euclid(100)),
            'e' if unpadded => t.day.to_string(),
            'e' => format!("{:>2}", t.day),
            'F' => format!("{}-{:02}-{:02}", t.year, t.month, t.day),
            'H' => num(t.hour.into(), 2),
            'I' => num(hour12.into(), 2),
            'j' => num(t.yday.into(), 3),
            'm' => num(t.month.into(), 2),
            'M' => num(t.minute.into(), 2),
            'n' => "\n".into(),
            'p' => (if t.hour < 12 { "AM" } else { "PM" }).into(),
            'r' => format!(
                "{:02}:{:02}:{:02} {}",
                hour12,
                t.minute,
                t.second,
                if t.hour < 12 { "AM" } else { "PM" }
            ),
            'R' => format!("{:02}:{:02}", t.hour, t.minute),
            'S' => num(t.second.into(), 2),
            't' => "\t".into(),
            'T' | 'X' => format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
            'u' => (if t.weekday == 0 { 7 } else { t.weekday }).to_string(),
            'w' => t.weekday.to_string(),
            'y' => num(t.year.rem_euclid(100), 2),
            'Y' => t.year.to_string(),
            'z' => "+0000".into(),
            'Z' => "UTC".into(),
            '%' => "%".into(),
            other => {
                let flag = if unpadded { "-" } else { "" };
                format!("%{flag}{other}")
            }
        };
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_the_codes_templates_use() {
        // 2026-07-26 12:34:56 UTC, a Sunday.
        let t = at(1_785_069_296);
        assert_eq!(strftime(t, "%d %b %Y"), "26 Jul 2026");
        assert_eq!(strftime(t, "%Y-%m-%d"), "2026-07-26");
        assert_eq!(
            strftime(t, "%A, %B %-d, %y %H:%M:%S"),
            "Sunday, July 26, 26 12:34:56"
        );
        assert_eq!(strftime(t, "%a %I %p %j %% %Q"), "Sun 12 PM 207 % %Q");
        assert_eq!(strftime(t, "%c"), "Sun Jul 26 12:34:56 2026");
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(
            strftime(at(0), "%F %T %A %j"),
            "1970-01-01 00:00:00 Thursday 001"
        );
        // 2024-02-29 23:59:59, a leap day.
        assert_eq!(
            strftime(at(1_709_251_199), "%F %T %a %j"),
            "2024-02-29 23:59:59 Thu 060"
        );
        // 2000-12-31: day 366 of a leap year.
        assert_eq!(strftime(at(978_220_800), "%F %j %u"), "2000-12-31 366 7");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(strftime(before, "%F %T"), "1969-12-31 23:59:59");
    }
}
