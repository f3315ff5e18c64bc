//! # sammen-adapters: bytes in, a report out
//!
//! Why it exists: the ingress, the AMQP consumer and the CLI all hold raw bytes and need one answer —
//! what this message is, or exactly why it is refused. This crate is that single door. It decodes and
//! parses with `sammen-xml` (limits, no DOCTYPE), dispatches on the root element's namespace and local
//! name to the FHIR, OIOXML or envelope adapter, and unwraps envelopes (SBDH → VANS → letter nests in
//! real traffic) up to a fixed depth.
//!
//! Invariants kept here:
//! - [`validate`] never panics and always returns a [`Report`]; every refusal is an issue with a code.
//! - An envelope's issues and its inner message's issues land in one report; inner locations are
//!   prefixed with where the payload sat (`VANSEnvelope.Message.Data/Bundle.entry[0]...`).
//! - The outermost transport envelope is the one recorded in [`Report::transport`]; every level's
//!   sender/receiver is checked against the inner message.
//! - No issue text holds document content: texts come from the adapters' rule descriptions.
#![forbid(unsafe_code)]

pub mod conformance;

use sammen_model::{Issue, Report};
use sammen_xml::{ns, Document, Limits, Node, XmlError};

pub use sammen_envelope::RECEIPT_EVENT;
pub use sammen_model;
pub use sammen_xml;

/// How to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// XML limits (size, depth, attributes, elements); also applied to each unwrapped payload.
    pub limits: Limits,
    /// How many envelopes may nest (SBDH → VANS → letter is 2).
    pub max_envelope_depth: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            max_envelope_depth: 2,
        }
    }
}

/// Validate one message (FHIR Bundle, OIOXML Emessage, VANSEnvelope or SBDH) given as bytes.
pub fn validate(bytes: &[u8], opts: &Options) -> Report {
    let mut report = Report::default();
    validate_into(bytes, false, 0, opts, &mut report);
    report
}

fn validate_into(bytes: &[u8], inner: bool, depth: usize, opts: &Options, report: &mut Report) {
    if bytes.len() > opts.limits.max_bytes {
        let e = XmlError::TooLarge {
            limit: opts.limits.max_bytes,
        };
        report.push(Issue::error(e.code(), "document", e.to_string()));
        return;
    }
    let decoded = match sammen_xml::decode(bytes, inner) {
        Ok(d) => d,
        Err(e) => {
            report.push(Issue::error(e.code(), "document", e.to_string()));
            return;
        }
    };
    if decoded.inferred {
        report.push(Issue::warning(
            "envelope.payload.encoding-undeclared",
            "document",
            "payload has no XML declaration and is not UTF-8; it was read as ISO-8859-1",
        ));
    }
    let doc = match Document::parse(&decoded.text, &opts.limits, &[ns::XHTML]) {
        Ok(d) => d,
        Err(e) => {
            report.push(parse_issue(&e, &decoded.text, inner));
            return;
        }
    };
    dispatch(doc.root(), depth, opts, report);
}

/// A parse failure. Inside an envelope, plain well-formedness faults get the envelope's own code; the
/// security refusals (DOCTYPE, entities, limits, encoding) keep their `xml.*` codes wherever they occur.
fn parse_issue(e: &XmlError, text: &str, inner: bool) -> Issue {
    let code = match e {
        XmlError::Malformed { .. }
        | XmlError::Empty
        | XmlError::ContentAfterRoot { .. }
        | XmlError::UnboundPrefix { .. }
            if inner =>
        {
            "envelope.payload.not-well-formed"
        }
        _ => e.code(),
    };
    Issue::error(code, e.location(text), e.to_string())
}

fn dispatch(root: Node<'_>, depth: usize, opts: &Options, report: &mut Report) {
    match (root.namespace(), root.name()) {
        (ns::FHIR, "Bundle") => sammen_fhir::validate_bundle(root, report),
        (_, "Emessage") => sammen_oioxml::validate_emessage(root, report),
        _ if sammen_envelope::is_vans_root(root) || sammen_envelope::is_sbdh_root(root) => {
            if depth >= opts.max_envelope_depth {
                report.push(Issue::error(
                    "envelope.nesting-too-deep",
                    root.name(),
                    format!(
                        "envelopes nest deeper than the limit of {}",
                        opts.max_envelope_depth
                    ),
                ));
                return;
            }
            let payload = if sammen_envelope::is_vans_root(root) {
                sammen_envelope::open_vans(root, report)
            } else {
                sammen_envelope::open_sbdh(root, report)
            };
            let Some(payload) = payload else { return };
            // Keep this level's transport; the inner level may record its own while it checks agreement.
            let this_transport = report.transport.take();
            let first_inner_issue = report.issues.len();
            validate_into(
                &payload.bytes,
                payload.infer_latin1,
                depth + 1,
                opts,
                report,
            );
            for issue in &mut report.issues[first_inner_issue..] {
                issue.location = format!("{}/{}", payload.location, issue.location);
            }
            report.transport = this_transport;
            sammen_envelope::check_agreement(report);
        }
        _ => report.push(Issue::error(
            "message.unknown-root",
            root.name(),
            "root element is not a FHIR Bundle, an OIOXML Emessage, a VANSEnvelope or an SBDH \
             StandardBusinessDocument (matched on namespace and local name)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_root_and_garbage_are_reported_not_panicked() {
        let r = validate(b"<x xmlns='urn:nope'/>", &Options::default());
        assert!(r.has_code("message.unknown-root"));
        let r = validate(b"\x00\x01garbage", &Options::default());
        assert!(!r.is_valid());
        let r = validate(b"<Bundle xmlns='urn:not-fhir'/>", &Options::default());
        assert!(r.has_code("message.unknown-root"));
    }

    #[test]
    fn size_limit_applies_before_parsing() {
        let opts = Options {
            limits: Limits {
                max_bytes: 16,
                ..Limits::default()
            },
            ..Options::default()
        };
        let r = validate(b"<Bundle xmlns='http://hl7.org/fhir'></Bundle>", &opts);
        assert!(r.has_code("xml.too-large"));
    }
}
