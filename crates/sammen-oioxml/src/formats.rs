//! Lexical checks of OIOXML date and time fields. Byte-level, no allocation.

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
}

/// `YYYY-MM-DD`, a real calendar date.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return false;
    }
    let (Some(y), Some(m), Some(d)) = (
        b.get(0..4).and_then(digits),
        b.get(5..7).and_then(digits),
        b.get(8..10).and_then(digits),
    ) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// `HH:MM` (with `seconds`: `HH:MM:SS`), 24-hour clock.
pub fn is_time(s: &str, seconds: bool) -> bool {
    let b = s.as_bytes();
    let len = if seconds { 8 } else { 5 };
    if b.len() != len || b.get(2) != Some(&b':') {
        return false;
    }
    let h = b.get(0..2).and_then(digits);
    let m = b.get(3..5).and_then(digits);
    let sec_ok = !seconds
        || (b.get(5) == Some(&b':') && b.get(6..8).and_then(digits).is_some_and(|s| s < 60));
    h.is_some_and(|h| h < 24) && m.is_some_and(|m| m < 60) && sec_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert!(is_date("2021-06-24"));
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2023-02-29"));
        assert!(!is_date("2021-13-01"));
        assert!(!is_date("24-06-2021"));
        assert!(!is_date("2021-06-2x"));
        assert!(is_time("10:08", false));
        assert!(!is_time("24:00", false));
        assert!(!is_time("10:08:19", false));
        assert!(is_time("10:08:19", true));
        assert!(!is_time("10:08:60", true));
        assert!(!is_time("1008", false));
    }
}
