//! Small helpers shared by the VANS and SBDH readers.

use sammen_model::ident::IdProblem;
use sammen_model::{Issue, Report};

/// Push an identifier problem (code, severity and text come from sammen-model).
pub fn id_issue(report: &mut Report, p: IdProblem, loc: &str) {
    report.push(Issue {
        severity: p.severity(),
        code: p.code().to_owned(),
        location: loc.to_owned(),
        text: p.text().to_owned(),
    });
}

/// A transport deviation that does not hinder routing, identification or integrity.
pub fn deviation(report: &mut Report, loc: &str, text: &str) {
    report.push(Issue::warning("envelope.schema-deviation", loc, text));
}

/// A required envelope element is missing or empty.
pub fn missing(report: &mut Report, loc: &str, what: &str) {
    report.push(Issue::error(
        "envelope.element.missing",
        loc,
        format!("required envelope element {what} is missing or empty"),
    ));
}

/// `xs:dateTime` lexical form: `YYYY-MM-DDThh:mm:ss(.s+)?(Z|±hh:mm)?`.
pub fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let dig =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let head = b.len() >= 19
        && dig(0..4)
        && b.get(4) == Some(&b'-')
        && dig(5..7)
        && b.get(7) == Some(&b'-')
        && dig(8..10)
        && b.get(10) == Some(&b'T')
        && dig(11..13)
        && b.get(13) == Some(&b':')
        && dig(14..16)
        && b.get(16) == Some(&b':')
        && dig(17..19);
    if !head {
        return false;
    }
    let mut rest = b.get(19..).unwrap_or(&[]);
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = frac.get(n..).unwrap_or(&[]);
    }
    match rest {
        [] | [b'Z'] => true,
        [s, h1, h2, b':', m1, m2] if (*s == b'+' || *s == b'-') => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        for ok in [
            "2021-06-24T00:32:00",
            "2020-11-06T16:19:00.000+01:00",
            "2025-04-01T16:19:00+01:00",
            "2021-06-24T10:18:00.000",
            "2021-06-24T10:18:00Z",
        ] {
            assert!(is_datetime(ok), "{ok}");
        }
        for bad in [
            "2021-06-24",
            "2021-06-24 00:32:00",
            "2021-06-24T00:32:00+0100",
            "x",
        ] {
            assert!(!is_datetime(bad), "{bad}");
        }
    }
}
