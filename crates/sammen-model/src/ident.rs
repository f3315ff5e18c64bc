//! Danish health identifiers: CPR, eCPR, GLN (lokationsnummer), SOR, ydernummer, kommunenummer.
//!
//! Each `check_*` returns `None` when the value is fine, or the first [`IdProblem`] found. A problem
//! carries a stable code (`id.<kind>.<rule>`), a severity and a text that describes the rule, never the
//! value (the value may be a CPR number). Rules follow DK Core and `research/medcom.md` §7.

use crate::report::Severity;

/// What is wrong with an identifier value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdProblem {
    /// CPR is not 10 digits.
    CprFormat,
    /// CPR's first six digits are not a real date (day, month, century from the 7th digit).
    CprDate,
    /// CPR fails the modulus-11 check. Only a warning: CPR numbers issued since 2007 may fail it.
    CprModulus11,
    /// eCPR is not DDMMYY followed by four letters or digits with at least one letter.
    EcprFormat,
    /// GLN is not 13 digits.
    GlnLength,
    /// GLN's GS1 check digit is wrong.
    GlnCheckDigit,
    /// SOR code is not 6 to 18 digits without a leading zero.
    SorFormat,
    /// Ydernummer is not 5 or 6 digits.
    YdernummerFormat,
    /// Kommunenummer is not one of the 98 Danish municipality codes.
    KommunenummerUnknown,
    /// A value that must be a UUID is not one.
    UuidFormat,
}

impl IdProblem {
    /// Stable issue code.
    pub const fn code(self) -> &'static str {
        match self {
            IdProblem::CprFormat => "id.cpr.format",
            IdProblem::CprDate => "id.cpr.date",
            IdProblem::CprModulus11 => "id.cpr.modulus-11",
            IdProblem::EcprFormat => "id.ecpr.format",
            IdProblem::GlnLength => "id.gln.length",
            IdProblem::GlnCheckDigit => "id.gln.check-digit",
            IdProblem::SorFormat => "id.sor.format",
            IdProblem::YdernummerFormat => "id.ydernummer.format",
            IdProblem::KommunenummerUnknown => "id.kommunenummer.unknown",
            IdProblem::UuidFormat => "id.uuid.format",
        }
    }

    /// Severity: everything is an error except the CPR modulus-11 check.
    pub const fn severity(self) -> Severity {
        match self {
            IdProblem::CprModulus11 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// A description of the rule that failed. Never contains the value.
    pub const fn text(self) -> &'static str {
        match self {
            IdProblem::CprFormat => "CPR number must be exactly 10 digits",
            IdProblem::CprDate => "CPR number does not start with a valid birth date (DDMMYY)",
            IdProblem::CprModulus11 => {
                "CPR number fails the modulus-11 check (allowed: numbers issued since 2007 may fail it)"
            }
            IdProblem::EcprFormat => {
                "eCPR must be a valid date DDMMYY followed by four letters or digits, at least one a letter"
            }
            IdProblem::GlnLength => "GLN (lokationsnummer) must be exactly 13 digits",
            IdProblem::GlnCheckDigit => "GLN (lokationsnummer) has a wrong GS1 check digit",
            IdProblem::SorFormat => "SOR code must be 6 to 18 digits without a leading zero",
            IdProblem::YdernummerFormat => "ydernummer must be 5 or 6 digits",
            IdProblem::KommunenummerUnknown => "kommunenummer is not one of the 98 Danish municipality codes",
            IdProblem::UuidFormat => "value must be a UUID (8-4-4-4-12 hexadecimal digits)",
        }
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn two(b: &[u8]) -> u32 {
    u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0')
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// Full year of a CPR number from its two-digit year and 7th digit (CPR office rule).
fn cpr_year(yy: u32, seventh: u8) -> u32 {
    match seventh {
        b'0'..=b'3' => 1900 + yy,
        b'4' | b'9' if yy <= 36 => 2000 + yy,
        b'4' | b'9' => 1900 + yy,
        _ if yy <= 57 => 2000 + yy,
        _ => 1800 + yy,
    }
}

/// `DDMMYY` is a real date; `seventh` picks the century (`None` → any century, leap years allowed).
fn valid_ddmmyy(b: &[u8], seventh: Option<u8>) -> bool {
    let (d, m, yy) = (two(&b[0..2]), two(&b[2..4]), two(&b[4..6]));
    let year = match seventh {
        Some(c) => cpr_year(yy, c),
        None => 2000, // a leap year: accept 29 Feb when the century is unknown
    };
    (1..=12).contains(&m) && d >= 1 && d <= days_in_month(year, m)
}

/// Check a CPR number (10 digits, valid date; modulus-11 only warns).
pub fn check_cpr(s: &str) -> Option<IdProblem> {
    let b = s.as_bytes();
    if b.len() != 10 || !all_digits(s) {
        return Some(IdProblem::CprFormat);
    }
    if !valid_ddmmyy(b, Some(b[6])) {
        return Some(IdProblem::CprDate);
    }
    const W: [u32; 10] = [4, 3, 2, 7, 6, 5, 4, 3, 2, 1];
    let sum: u32 = b.iter().zip(W).map(|(c, w)| u32::from(c - b'0') * w).sum();
    (!sum.is_multiple_of(11)).then_some(IdProblem::CprModulus11)
}

/// Check an eCPR (erstatnings-CPR): DDMMYY + 4 alphanumerics with at least one letter.
pub fn check_ecpr(s: &str) -> Option<IdProblem> {
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b[..6].iter().all(u8::is_ascii_digit)
        && b[6..].iter().all(u8::is_ascii_alphanumeric)
        && b[6..].iter().any(u8::is_ascii_alphabetic)
        && valid_ddmmyy(b, None);
    (!ok).then_some(IdProblem::EcprFormat)
}

/// GS1 check digit of the first 12 digits of a GLN.
fn gln_check_digit(first12: &[u8]) -> u8 {
    let sum: u32 = first12
        .iter()
        .enumerate()
        .map(|(i, c)| u32::from(c - b'0') * if i.is_multiple_of(2) { 1 } else { 3 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Check a GLN / EAN-13 location number (lokationsnummer).
pub fn check_gln(s: &str) -> Option<IdProblem> {
    let b = s.as_bytes();
    if b.len() != 13 || !all_digits(s) {
        return Some(IdProblem::GlnLength);
    }
    (gln_check_digit(&b[..12]) != b[12] - b'0').then_some(IdProblem::GlnCheckDigit)
}

/// Check a SOR code. SOR codes are SNOMED-style ids; their Verhoeff check digit is not verified here
/// because MedCom does not document it as mandatory (see research/medcom.md §7).
pub fn check_sor(s: &str) -> Option<IdProblem> {
    let ok = (6..=18).contains(&s.len()) && all_digits(s) && !s.starts_with('0');
    (!ok).then_some(IdProblem::SorFormat)
}

/// Check a ydernummer (GP provider number).
pub fn check_ydernummer(s: &str) -> Option<IdProblem> {
    let ok = (5..=6).contains(&s.len()) && all_digits(s);
    (!ok).then_some(IdProblem::YdernummerFormat)
}

/// The 98 municipality codes in use since the 2007 reform.
pub const KOMMUNENUMRE: [u16; 98] = [
    101, 147, 151, 153, 155, 157, 159, 161, 163, 165, 167, 169, 173, 175, 183, 185, 187, 190, 201,
    210, 217, 219, 223, 230, 240, 250, 253, 259, 260, 265, 269, 270, 306, 316, 320, 326, 329, 330,
    336, 340, 350, 360, 370, 376, 390, 400, 410, 420, 430, 440, 450, 461, 479, 480, 482, 492, 510,
    530, 540, 550, 561, 563, 573, 575, 580, 607, 615, 621, 630, 657, 661, 665, 671, 706, 707, 710,
    727, 730, 740, 741, 746, 751, 756, 760, 766, 773, 779, 787, 791, 810, 813, 820, 825, 840, 846,
    849, 851, 860,
];

/// Check a kommunenummer (3 digits, one of [`KOMMUNENUMRE`]; a leading zero is tolerated).
pub fn check_kommunenummer(s: &str) -> Option<IdProblem> {
    let known = (1..=4).contains(&s.len())
        && all_digits(s)
        && s.parse::<u16>()
            .is_ok_and(|n| KOMMUNENUMRE.binary_search(&n).is_ok());
    (!known).then_some(IdProblem::KommunenummerUnknown)
}

/// Check a UUID in its canonical 8-4-4-4-12 form (either case), optionally prefixed `urn:uuid:`.
pub fn check_uuid(s: &str) -> Option<IdProblem> {
    let s = s.strip_prefix("urn:uuid:").unwrap_or(s);
    let b = s.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    (!ok).then_some(IdProblem::UuidFormat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpr_examples_from_medcom() {
        // MedCom's test CPRs (research/medcom.md §7) have valid dates but fail modulus 11: a warning only.
        for test_cpr in ["2512489996", "0101010227", "2509479989"] {
            assert_eq!(
                check_cpr(test_cpr),
                Some(IdProblem::CprModulus11),
                "{test_cpr}"
            );
        }
        assert_eq!(check_cpr("0707614285"), None);
        assert_eq!(check_cpr("251248999"), Some(IdProblem::CprFormat));
        assert_eq!(check_cpr("25124899x6"), Some(IdProblem::CprFormat));
        assert_eq!(check_cpr("3202489996"), Some(IdProblem::CprDate));
        assert_eq!(check_cpr("2513489996"), Some(IdProblem::CprDate));
        // 29 Feb: 2000 (7th digit 4, yy 00) is a leap year, 1900 (7th digit 0) is not
        assert_ne!(check_cpr("2902004000"), Some(IdProblem::CprDate));
        assert_eq!(check_cpr("2902000000"), Some(IdProblem::CprDate));
        assert_eq!(check_cpr("0707614286"), Some(IdProblem::CprModulus11));
        assert_eq!(IdProblem::CprModulus11.severity(), Severity::Warning);
    }

    #[test]
    fn gln_check_digit_per_gs1() {
        for ok in [
            "5790001348120",
            "5790000209354",
            "5790002515200",
            "5790000121441",
        ] {
            assert_eq!(check_gln(ok), None, "{ok}");
        }
        assert_eq!(check_gln("5790001348121"), Some(IdProblem::GlnCheckDigit));
        assert_eq!(check_gln("579000134812"), Some(IdProblem::GlnLength));
        assert_eq!(check_gln("57900013481a0"), Some(IdProblem::GlnLength));
    }

    #[test]
    fn other_identifiers() {
        assert_eq!(check_ecpr("0703921VJ4"), None);
        assert_eq!(check_ecpr("0703921234"), Some(IdProblem::EcprFormat));
        assert_eq!(check_ecpr("3203921VJ4"), Some(IdProblem::EcprFormat));
        assert_eq!(check_sor("265161000016000"), None);
        assert_eq!(check_sor("0123456"), Some(IdProblem::SorFormat));
        assert_eq!(check_ydernummer("061654"), None);
        assert_eq!(check_ydernummer("1234"), Some(IdProblem::YdernummerFormat));
        assert_eq!(check_kommunenummer("101"), None);
        assert_eq!(check_kommunenummer("0751"), None);
        assert_eq!(
            check_kommunenummer("102"),
            Some(IdProblem::KommunenummerUnknown)
        );
        assert_eq!(check_uuid("a5e5b880-c087-4055-b9ec-99108695f81d"), None);
        assert_eq!(
            check_uuid("urn:uuid:a5e5b880-c087-4055-b9ec-99108695f81d"),
            None
        );
        assert_eq!(
            check_uuid("t33cef33-3626-422b-955d-d506aaa65fe1"),
            Some(IdProblem::UuidFormat)
        );
        assert!(
            KOMMUNENUMRE.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary_search"
        );
    }

    proptest! {
        #[test]
        fn any_gln_with_computed_check_digit_passes(d in proptest::collection::vec(0u8..10, 12)) {
            let mut s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
            let first12 = s.clone().into_bytes();
            s.push(char::from(b'0' + gln_check_digit(&first12)));
            prop_assert_eq!(check_gln(&s), None);
        }

        #[test]
        fn checks_never_panic(s in ".{0,40}") {
            let _ = (check_cpr(&s), check_ecpr(&s), check_gln(&s), check_sor(&s));
            let _ = (check_ydernummer(&s), check_kommunenummer(&s), check_uuid(&s));
        }
    }
}
