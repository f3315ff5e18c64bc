//! The validation report: what a message is, or exactly why it is not valid.
//!
//! One type serves the CLI, the HTTP API, acknowledgements and the audit log. It is built by the
//! adapters and never carries personal data in a serialised field: [`Issue::text`] describes values,
//! and the patient identifier is held in [`PatientId`], which serde skips and `Debug` redacts.

use crate::family::Family;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad an issue is. Only `Error` makes a message invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The message is refused.
    Error,
    /// Accepted, but something deviates from the standard (e.g. a real sender's envelope quirk).
    Warning,
    /// Worth knowing; no deviation.
    Information,
}

impl Severity {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One finding: `{severity, code, location, text}`.
///
/// - `code` is stable and dotted (`xml.doctype-forbidden`, `id.gln.check-digit`); for a MedCom invariant it
///   contains the invariant's id (`medcom-hospitalNotification-5`).
/// - `location` is a path into the message (`Bundle.entry[2].resource.Encounter.status`, or
///   `Emessage.NotificationOfAdmission.Sender.EANIdentifier`), or `line:column` for well-formedness errors.
/// - `text` says what rule failed. It never echoes a value from the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// How bad.
    pub severity: Severity,
    /// Stable code.
    pub code: String,
    /// Where in the message.
    pub location: String,
    /// What rule failed; never a value from the message.
    pub text: String,
}

impl Issue {
    /// An error.
    pub fn error(
        code: impl Into<String>,
        location: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Issue {
            severity: Severity::Error,
            code: code.into(),
            location: location.into(),
            text: text.into(),
        }
    }

    /// A warning.
    pub fn warning(
        code: impl Into<String>,
        location: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Issue {
            severity: Severity::Warning,
            code: code.into(),
            location: location.into(),
            text: text.into(),
        }
    }

    /// An informational note.
    pub fn info(
        code: impl Into<String>,
        location: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Issue {
            severity: Severity::Information,
            code: code.into(),
            location: location.into(),
            text: text.into(),
        }
    }
}

/// An organisation as addressed by a message: GLN (lokationsnummer / EAN) and SOR code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Party {
    /// GLN / EAN location number, 13 digits.
    pub gln: Option<String>,
    /// SOR code.
    pub sor: Option<String>,
}

impl Party {
    /// True when neither identifier is known.
    pub fn is_empty(&self) -> bool {
        self.gln.is_none() && self.sor.is_none()
    }
}

/// The transport envelope a message arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// VANSEnvelope (base64 `Message/Data`).
    Vans,
    /// EHMI Standard Business Document (base64 `BinaryContent`, or an inline payload as regions send).
    Sbdh,
}

/// What the transport envelope said, kept beside the inner message's own identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transport {
    /// Envelope kind.
    pub kind: TransportKind,
    /// Envelope id (VANS `EnvelopeIdentifier`, SBDH `DocumentIdentification/InstanceIdentifier`).
    pub id: Option<String>,
    /// Message id the envelope names (VANS `MetaInformation/Identifier`, SBDH scope `MESSAGEIDENTIFIER`),
    /// checked against the inner message's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Sender named by the envelope.
    pub sender: Party,
    /// Receiver named by the envelope.
    pub receiver: Party,
}

/// Response code of an acknowledgement (HL7 response-code; XCTL03 = ok, XCTL01/02 = fatal-error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckCode {
    /// Positive: received and processed.
    Ok,
    /// Technical error at the receiver; the sender may resend.
    TransientError,
    /// The message is refused; the sender must not resend it unchanged.
    FatalError,
}

impl AckCode {
    /// HL7 code string.
    pub const fn as_str(self) -> &'static str {
        match self {
            AckCode::Ok => "ok",
            AckCode::TransientError => "transient-error",
            AckCode::FatalError => "fatal-error",
        }
    }

    /// Parse the HL7 code string.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(AckCode::Ok),
            "transient-error" => Some(AckCode::TransientError),
            "fatal-error" => Some(AckCode::FatalError),
            _ => None,
        }
    }
}

/// What an acknowledgement or receipt answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseRef {
    /// The acknowledged message's id (FHIR `response.identifier` = MessageHeader.id; OIOXML original letter id).
    pub message_id: String,
    /// The acknowledged message's envelope id, when the receipt names it (OIOXML original envelope id).
    pub envelope_id: Option<String>,
    /// The answer.
    pub code: AckCode,
}

/// A patient identifier (CPR or eCPR), kept for pseudonymised audit search only.
///
/// Serde skips it wherever it is embedded, `Debug` prints `PatientId(<redacted>)`, and there is no
/// `Display`: reading the value is an explicit call to [`PatientId::expose`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PatientId {
    system: String,
    value: String,
}

impl PatientId {
    /// Wrap a patient identifier.
    pub fn new(system: impl Into<String>, value: impl Into<String>) -> Self {
        PatientId {
            system: system.into(),
            value: value.into(),
        }
    }

    /// Identifier system (e.g. `urn:oid:1.2.208.176.1.2` for CPR). Not personal data.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// The identifier itself. Personal data: only for keyed hashing.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PatientId({}, <redacted>)", self.system)
    }
}

/// Everything Sammen knows about one message after validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Message family, when it could be recognised.
    pub family: Option<Family>,
    /// Event within the family (HospitalNotification: Provenance activity such as `admit-inpatient`;
    /// CareCommunication: `new-message`/`reply-message`/`forward-message`; Acknowledgement: the response
    /// code; OIOXML: the letter's status code, e.g. `nytbrev`).
    pub event: Option<String>,
    /// Message id: FHIR MessageHeader.id, OIOXML Letter/Identifier. The idempotency key.
    pub message_id: Option<String>,
    /// Envelope id: FHIR Bundle.id, OIOXML Envelope/Identifier. New on every (re)send.
    pub envelope_id: Option<String>,
    /// Sender organisation.
    pub sender: Party,
    /// Primary receiver organisation.
    pub receiver: Party,
    /// Transport envelope, when the message came wrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// For acknowledgements and receipts: what they answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseRef>,
    /// Findings, in document order.
    pub issues: Vec<Issue>,
    /// Patient identifier: never serialised, redacted in `Debug`.
    #[serde(skip)]
    pub patient: Option<PatientId>,
}

impl Report {
    /// Valid means: no issue of severity `Error`.
    pub fn is_valid(&self) -> bool {
        !self.issues.iter().any(|i| i.severity == Severity::Error)
    }

    /// Errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }

    /// Add an issue.
    pub fn push(&mut self, issue: Issue) {
        self.issues.push(issue);
    }

    /// True when some issue has this code (any severity).
    pub fn has_code(&self, code: &str) -> bool {
        self.issues.iter().any(|i| i.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_id_never_serialised_or_debug_printed() {
        let r = Report {
            family: Some(Family::HospitalNotification),
            patient: Some(PatientId::new("urn:oid:1.2.208.176.1.2", "2512489996")),
            ..Report::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        let dbg = format!("{r:?}");
        assert!(!json.contains("2512489996"), "{json}");
        assert!(!dbg.contains("2512489996"), "{dbg}");
        assert_eq!(
            r.patient.as_ref().map(PatientId::expose),
            Some("2512489996")
        );
    }

    #[test]
    fn validity_follows_errors_only() {
        let mut r = Report::default();
        r.push(Issue::warning("w", "x", "t"));
        assert!(r.is_valid());
        r.push(Issue::error("e", "x", "t"));
        assert!(!r.is_valid());
        assert!(r.has_code("e"));
        assert_eq!(r.errors().count(), 1);
    }

    #[test]
    fn ack_codes_round_trip() {
        for c in [AckCode::Ok, AckCode::TransientError, AckCode::FatalError] {
            assert_eq!(AckCode::parse(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }
}
