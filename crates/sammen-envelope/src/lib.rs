//! # sammen-envelope: VANS and EHMI SBDH transport envelopes
//!
//! Why it exists: most MedCom messages reach the broker wrapped — in a VANSEnvelope (base64 `Data`), in
//! an EHMI Standard Business Document (base64 `BinaryContent`), or both (the region's SBDH → VANS →
//! letter). Routing reads the envelope, so the envelope must be checked, its payload surfaced for the
//! façade to validate, and the envelope shown to agree with the message inside.
//!
//! Invariants kept here:
//! - Elements are matched on namespace URI + local name (VANS `urn:oio:medcom:vans-envelope:1.0.4`,
//!   UN/CEFACT SBDH, PEPPOL envelope), never prefixes.
//! - Broken base64, a missing identifier, a missing payload and a GLN disagreement are errors with their
//!   own codes. Deviations from the XSDs that do not hinder routing, identification or integrity (non-UUID
//!   ids of a real region, PEPPOL `BinaryContent`, a namespace-less receipt root) are warnings
//!   (`envelope.schema-deviation`), as `schemas/envelope/SOURCES.md` explains.
//! - Codes are documented in `schemas/envelope/CODES.md`; texts never echo values (the PATIENTID scope
//!   is checked, never printed or stored).
//! - No panics on input; one allocation for the decoded payload (plus two if the base64 has line breaks:
//!   the first decode attempt and the copy without whitespace).
#![forbid(unsafe_code)]

mod agreement;
mod b64;
mod issues;
mod sbdh;
mod vans;

pub use sbdh::RECEIPT_EVENT;

use sammen_model::{Issue, Report};
use sammen_xml::{ns, Node, XmlError};

/// The decoded inner message of an envelope, for the façade to parse and validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Decoded bytes.
    pub bytes: Vec<u8>,
    /// Decode undeclared non-UTF-8 bytes as ISO-8859-1 (always true for envelope payloads).
    pub infer_latin1: bool,
    /// Where the payload sat, e.g. `VANSEnvelope.Message.Data`.
    pub location: String,
}

/// True when `root` is a VANSEnvelope.
pub fn is_vans_root(root: Node<'_>) -> bool {
    root.is(ns::VANS, "VANSEnvelope")
}

/// True when `root` is an SBDH `StandardBusinessDocument` — including the namespace-less, lower-case
/// `standardBusinessDocument` root of the region's receipt, which [`open_sbdh`] accepts with a warning.
pub fn is_sbdh_root(root: Node<'_>) -> bool {
    sbdh::is_root(root)
}

/// Check a `{urn:oio:medcom:vans-envelope:1.0.4}VANSEnvelope`: sets `report.transport` (kind Vans, ids,
/// sender, receiver), checks identifiers, EndPointType, Document Format/Name/Version and base64, and
/// returns the decoded `Data`. A VANS receipt (no Message) records `event`/`response` and returns None.
pub fn open_vans(root: Node<'_>, report: &mut Report) -> Option<Payload> {
    vans::open(root, report)
}

/// Check an SBDH `StandardBusinessDocument`: Sender/Receiver `0088:<GLN>`, DocumentIdentification,
/// BusinessScope (MESSAGEIDENTIFIER, SENDERID/RECEIVERID SOR, PATIENTID — checked, never echoed, ENTRYUUID
/// when XDS metadata is present), BinaryContent (base64, mimeType, encoding). An envelope receipt (Type
/// `ReceiptAcknowledgement`) is reported as family None, event [`RECEIPT_EVENT`], `response` = the
/// original message id; it returns None (no inner message to validate).
pub fn open_sbdh(root: Node<'_>, report: &mut Report) -> Option<Payload> {
    sbdh::open(root, report)
}

/// After the inner message was validated into `report`: the envelope (`report.transport`) must agree
/// with it — sender/receiver GLN (errors `envelope.sender.mismatch` / `envelope.receiver.mismatch`),
/// VANS message and envelope ids (errors), SOR codes and SBDH MESSAGEIDENTIFIER (warnings).
pub fn check_agreement(report: &mut Report) {
    agreement::check(report);
}

/// The issue for a payload that did not parse: plain well-formedness faults get
/// `envelope.payload.not-well-formed`; security refusals (DOCTYPE, entities, limits, encoding) keep
/// their `xml.*` code. `text` is the decoded payload text, used only for the line:column.
pub fn payload_parse_error(err: &XmlError, payload: &Payload, text: &str) -> Issue {
    let code = match err {
        XmlError::Malformed { .. }
        | XmlError::Empty
        | XmlError::ContentAfterRoot { .. }
        | XmlError::UnboundPrefix { .. } => "envelope.payload.not-well-formed",
        other => other.code(),
    };
    Issue::error(
        code,
        format!("{}/{}", payload.location, err.location(text)),
        err.to_string(),
    )
}
