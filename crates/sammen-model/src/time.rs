//! UTC calendar fields of a `SystemTime`, for the messages the broker builds itself (acknowledgements,
//! receipts). Hand-written because it is one small algorithm and no time crate is otherwise needed.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant as calendar fields (times before 1970 read as 1970-01-01T00:00:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcFields {
    /// Year.
    pub year: u64,
    /// Month, 1–12.
    pub month: u64,
    /// Day of the month, 1–31.
    pub day: u64,
    /// Hour, 0–23.
    pub hour: u64,
    /// Minute, 0–59.
    pub minute: u64,
    /// Second, 0–59.
    pub second: u64,
}

/// Calendar fields of `t` in UTC.
pub fn utc_fields(t: SystemTime) -> UtcFields {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), in unsigned arithmetic.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    UtcFields {
        year: yoe + era * 400 + u64::from(month <= 2),
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_instants() {
        let f = |s| utc_fields(UNIX_EPOCH + Duration::from_secs(s));
        let at = |year, month, day, hour, minute, second| UtcFields {
            year,
            month,
            day,
            hour,
            minute,
            second,
        };
        assert_eq!(f(0), at(1970, 1, 1, 0, 0, 0));
        assert_eq!(f(1_662_033_660), at(2022, 9, 1, 12, 1, 0));
        assert_eq!(f(951_782_400), at(2000, 2, 29, 0, 0, 0));
        assert_eq!(f(4_107_542_399), at(2100, 2, 28, 23, 59, 59));
    }
}
