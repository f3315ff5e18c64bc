//! Closed label sets: the only way a string becomes a Prometheus label value.
//!
//! A [`Label`] can only be made here, and only from a closed set: the message families
//! ([`Family::ALL`]), the event codes MedCom defines ([`EVENTS`]), the issue codes documented in
//! `schemas/*/CODES.md` (plus the broker's own codes registered at start-up), and the GLNs registered in the
//! configuration. Anything else maps to a fixed fallback (`other`, `unknown`, `unregistered`, `none`). So a
//! metric's series count is bounded by the product of its label domains, whatever the traffic, and no byte
//! of a message can reach the exposition unless it equals a value from one of those sets.
//!
//! The same sanitisers are used for the fields of log events ([`LogId`] for message ids), so a CPR number
//! placed in a GLN or id field by a confused sender never reaches a log line either.

use sammen_model::{AckCode, Family};
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Label value for anything outside the closed set.
pub const OTHER: &str = "other";
/// Label value for a family that could not be recognised.
pub const UNKNOWN: &str = "unknown";
/// Label value for a GLN not registered in the configuration.
pub const UNREGISTERED: &str = "unregistered";
/// Label value for an absent event or code.
pub const NONE: &str = "none";
/// Certificate owner label for the broker's own server certificate.
pub const SERVER: &str = "server";

/// Every event code a validated message may carry in `Report::event`, as set by the adapters:
///
/// - `medcom-messaging-activityCodes` (HospitalNotification and CareCommunication activities;
///   `schemas/fhir/valuesets.toml` `activity_all`);
/// - `medcom-messaging-eventCodes` (`[[event]] code`; the event of EmptyMessage and HomeCareObservation);
/// - Acknowledgement response codes (`response_code`);
/// - OIOXML letter status codes (`schemas/oioxml/valuesets.toml` `status_codes`);
/// - XCTL receipt polarity and the envelope-level receipt event (`sammen-envelope`'s `RECEIPT_EVENT`).
///
/// `tests/labels.rs` checks this list against the schema tables, so a new MedCom code fails a test
/// instead of silently becoming `other`.
pub const EVENTS: &[&str] = &[
    // activity codes
    "admit-emergency",
    "revise-admit-emergency",
    "cancel-admit-emergency",
    "admit-inpatient",
    "revise-admit-inpatient",
    "cancel-admit-inpatient",
    "start-leave-inpatient",
    "revise-start-leave-inpatient",
    "cancel-start-leave-inpatient",
    "end-leave-inpatient",
    "revise-end-leave-inpatient",
    "cancel-end-leave-inpatient",
    "discharge-emergency-home",
    "revise-discharge-emergency-home",
    "cancel-discharge-emergency-home",
    "discharge-inpatient-home",
    "revise-discharge-inpatient-home",
    "cancel-discharge-inpatient-home",
    "new-message",
    "reply-message",
    "forward-message",
    "retract-message",
    "modified-message",
    "carboncopy-message",
    "acknowledgement",
    // message event codes
    "hospital-notification-message",
    "care-communication-message",
    "acknowledgement-message",
    "empty-message",
    "homecareobservation-message",
    // acknowledgement response codes
    "ok",
    "transient-error",
    "fatal-error",
    // OIOXML status codes
    "nytbrev",
    "rettetbrev",
    "annulleretbrev",
    // receipts
    "positive",
    "negative",
    "receipt-acknowledgement",
];

/// The XML reader's codes (`crates/sammen-xml/src/error.rs`), listed in prose in `schemas/fhir/CODES.md`.
pub const XML_CODES: &[&str] = &[
    "xml.doctype-forbidden",
    "xml.entity-undefined",
    "xml.malformed",
    "xml.too-large",
    "xml.too-deep",
    "xml.too-many-attributes",
    "xml.too-many-elements",
    "xml.encoding",
    "xml.empty",
    "xml.content-after-root",
    "xml.namespace-unbound",
];

/// Codes the broker itself gives a refusal, beside the validation codes of `schemas/*/CODES.md`: the
/// ingress's issue codes (`crates/sammen-ingress/src/accept.rs`) and the codes of its error answers
/// (`answer.rs`). The ingress may register more (static strings) with
/// [`crate::TelemetryConfig::reason_codes`].
pub const BROKER_CODES: &[&str] = &[
    "ingress.event-unroutable",
    "ingress.family-unsupported",
    "ingress.identifier-size",
    "ingress.identifiers-missing",
    "ingress.sender-gln-missing",
    "backpressure",
    "body-read",
    "conflict",
    "disk-full",
    "memory-budget",
    "store-unavailable",
    "too-large",
    "unsupported-media-type",
    "validation-aborted",
];

const CODES_MD: [&str; 3] = [
    include_str!("../../../schemas/fhir/CODES.md"),
    include_str!("../../../schemas/oioxml/CODES.md"),
    include_str!("../../../schemas/envelope/CODES.md"),
];

/// The documented validation issue codes: the first column of every table row in `schemas/*/CODES.md`
/// (`| \`code\` | ...`), wildcards (`id.gln.*`) left out, and [`XML_CODES`]. Parsed once from the
/// compiled-in files.
pub fn documented_codes() -> &'static [&'static str] {
    static CODES: OnceLock<Vec<&'static str>> = OnceLock::new();
    CODES.get_or_init(|| {
        let mut v: Vec<&'static str> = CODES_MD
            .iter()
            .flat_map(|md| md.lines())
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`').map(|(code, _)| code))
            .filter(|code| !code.is_empty() && !code.contains('*'))
            .chain(XML_CODES.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    })
}

/// A label value from a closed set. Only this module makes them; the metrics take nothing else.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label<'a>(&'a str);

impl<'a> Label<'a> {
    /// The value as written into the exposition.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    const fn fixed(s: &'static str) -> Label<'static> {
        Label(s)
    }
}

impl fmt::Debug for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Family label: the family's stable name, or `unknown`.
pub fn family(f: Option<Family>) -> Label<'static> {
    Label::fixed(f.map_or(UNKNOWN, Family::as_str))
}

/// Event label: a code of [`EVENTS`], `none` when absent, `other` otherwise.
pub fn event(e: Option<&str>) -> Label<'static> {
    match e {
        None => Label::fixed(NONE),
        Some(e) => Label::fixed(EVENTS.iter().find(|k| **k == e).copied().unwrap_or(OTHER)),
    }
}

/// Acknowledgement code label (`ok`, `transient-error`, `fatal-error`).
pub fn ack_code(c: AckCode) -> Label<'static> {
    Label::fixed(c.as_str())
}

/// A fixed label value chosen by the crate itself (outcomes, backends, states). Not for input.
pub(crate) fn internal(s: &'static str) -> Label<'static> {
    Label::fixed(s)
}

/// The label sets that depend on configuration: registered GLNs and extra reason codes.
#[derive(Debug, Clone)]
pub struct Labels {
    glns: Arc<HashSet<Box<str>>>,
    reasons: Arc<HashSet<&'static str>>,
}

impl Labels {
    /// Labels for these registered GLNs and extra broker reason codes. GLNs must already be checked
    /// (13 digits); [`crate::Telemetry::new`] does that.
    pub(crate) fn new<'g>(
        glns: impl IntoIterator<Item = &'g str>,
        extra_reasons: &[&'static str],
    ) -> Self {
        let reasons = documented_codes()
            .iter()
            .chain(BROKER_CODES)
            .chain(extra_reasons)
            .copied()
            .collect();
        Labels {
            glns: Arc::new(glns.into_iter().map(Box::from).collect()),
            reasons: Arc::new(reasons),
        }
    }

    /// Reason (issue) code label: a documented or registered code, `none` when absent, else `other`.
    pub fn reason<'s>(&'s self, code: Option<&str>) -> Label<'s> {
        match code {
            None => Label::fixed(NONE),
            Some(c) => Label(self.reasons.get(c).copied().unwrap_or(OTHER)),
        }
    }

    /// GLN label: a GLN registered in the configuration, else `unregistered`.
    pub fn gln<'s>(&'s self, gln: Option<&str>) -> Label<'s> {
        match gln.and_then(|g| self.glns.get(g)) {
            Some(g) => Label(g),
            None => Label::fixed(UNREGISTERED),
        }
    }

    /// Number of registered GLNs (bounds the GLN-labelled series).
    pub fn gln_count(&self) -> usize {
        self.glns.len()
    }

    /// Number of reason codes (documented + broker + registered), not counting `none` and `other`.
    pub fn reason_count(&self) -> usize {
        self.reasons.len()
    }
}

/// A message id as it may appear in a log line.
///
/// Message ids are UUIDs (FHIR) or letter ids (OIOXML, e.g. `EPIC394310433`): not personal data. But the
/// id is written by the sender, so it is only printed when it looks like one: at most 64 characters of
/// `[A-Za-z0-9._:-]`, and without a CPR-shaped run of digits (see [`looks_like_cpr`]). Anything else is
/// printed as `<withheld>`. Hashing would not help: the CPR space is small enough to reverse a hash.
#[derive(Clone, Copy)]
pub struct LogId<'a>(Option<&'a str>);

/// What a withheld id prints as.
pub const WITHHELD: &str = "<withheld>";

impl<'a> LogId<'a> {
    /// Check an id for printing.
    pub fn new(id: &'a str) -> Self {
        let shaped = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        LogId((shaped && !looks_like_cpr(id)).then_some(id))
    }

    /// The id, when printable.
    pub fn get(&self) -> Option<&'a str> {
        self.0
    }
}

impl fmt::Display for LogId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.unwrap_or(WITHHELD))
    }
}

impl fmt::Debug for LogId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// True when `s` contains a CPR-shaped number: exactly ten digits (`DDMMYYSSSS`) or six digits, a dash and
/// four digits (`DDMMYY-SSSS`), not part of a longer run of letters or digits, whose first six digits are a
/// calendar date. GLNs (13 digits), SOR codes, UUID segments and runs inside hex or base64 (a TLS library's
/// signature dump at trace level) do not match. Used by the log tripwire and the test capture; it finds CPR
/// numbers, it does not prove their absence from free text.
pub fn looks_like_cpr(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let run = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        // The run must end the token too: `2902206013ab` is hex, not a CPR number.
        let after = |at: usize| b.get(at).is_some_and(u8::is_ascii_alphanumeric);
        let digits: Option<[u8; 10]> = if run == 10 && !after(i + 10) {
            b[i..i + 10].try_into().ok()
        } else if run == 6
            && b.get(i + 6) == Some(&b'-')
            && b.get(i + 7..i + 11)
                .is_some_and(|t| t.iter().all(u8::is_ascii_digit))
            && !after(i + 11)
        {
            let mut d = [0u8; 10];
            d[..6].copy_from_slice(&b[i..i + 6]);
            d[6..].copy_from_slice(&b[i + 7..i + 11]);
            Some(d)
        } else {
            None
        };
        if digits.is_some_and(|d| is_date(&d[..6])) {
            return true;
        }
        i += run.max(1);
    }
    false
}

fn is_date(d: &[u8]) -> bool {
    let n = |a: usize| u32::from(d[a] - b'0') * 10 + u32::from(d[a + 1] - b'0');
    let (day, month) = (n(0), n(2));
    let max = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => 29,
        _ => return false,
    };
    (1..=max).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_parsed_from_the_tables() {
        let codes = documented_codes();
        assert!(codes.len() > 100, "{}", codes.len());
        for c in [
            "xml.doctype-forbidden",
            "id.gln.check-digit",
            "medcom-hospitalNotification-5",
        ] {
            assert!(codes.contains(&c), "{c}");
        }
        assert!(!codes.iter().any(|c| c.contains('*') || c.contains(' ')));
    }

    #[test]
    fn cpr_shapes() {
        for yes in [
            "2512489996",
            "251248-9996",
            "id 0101011234 end",
            "x:3112991234",
        ] {
            assert!(looks_like_cpr(yes), "{yes}");
        }
        for no in [
            "5790001348120",
            "c9a0b728-0807-11ed-861d-0242ac120002",
            "EPIC394310433",
            "3213991234",
            "0113991234",
            "12345678901",
            "1762345678",
            "251248-99961",
            // hex of a TLS signature, as rustls logs it at trace level
            "beb2902206013ab865",
            "sig: 304402206fa7e767c461ddc2",
            "",
        ] {
            assert!(!looks_like_cpr(no), "{no}");
        }
    }

    #[test]
    fn log_ids() {
        assert_eq!(
            LogId::new("c9a0b728-0807-11ed-861d-0242ac120002").to_string(),
            "c9a0b728-0807-11ed-861d-0242ac120002"
        );
        assert_eq!(LogId::new("EPIC394310433").to_string(), "EPIC394310433");
        assert_eq!(LogId::new("2512489996").to_string(), WITHHELD);
        assert_eq!(LogId::new("Jens Hansen").to_string(), WITHHELD);
        assert_eq!(LogId::new(&"a".repeat(65)).to_string(), WITHHELD);
    }
}
