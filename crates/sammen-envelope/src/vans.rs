//! VANSEnvelope 1.0.4 (`urn:oio:medcom:vans-envelope:1.0.4`): the VANS network's transport envelope.

use crate::b64;
use crate::issues::{deviation, id_issue, missing};
use crate::Payload;
use sammen_model::ident::{check_gln, check_uuid};
use sammen_model::{AckCode, Issue, Party, Report, ResponseRef, Transport, TransportKind};
use sammen_xml::{ns, Node};

fn kid<'d>(n: Node<'d>, local: &str) -> Option<Node<'d>> {
    n.child_ns(ns::VANS, local)
}

fn text<'d>(n: Node<'d>, local: &str) -> Option<&'d str> {
    kid(n, local).map(|c| c.text()).filter(|s| !s.is_empty())
}

/// SenderID / ReceiverID with its EndPointType.
fn endpoint(root: Node<'_>, local: &str, report: &mut Report) -> Party {
    let loc = format!("VANSEnvelope.{local}");
    let mut party = Party::default();
    let Some(node) = kid(root, local) else {
        report.push(Issue::error(
            if local == "SenderID" {
                "envelope.sender.missing"
            } else {
                "envelope.receiver.missing"
            },
            loc,
            "the VANS envelope must name its sender and receiver (SenderID, ReceiverID)",
        ));
        return party;
    };
    let value = node.text();
    if value.is_empty() {
        report.push(Issue::error(
            if local == "SenderID" {
                "envelope.sender.missing"
            } else {
                "envelope.receiver.missing"
            },
            loc,
            "the VANS envelope must name its sender and receiver (SenderID, ReceiverID)",
        ));
        return party;
    }
    match node.attr("EndPointType") {
        Some("EAN") => {
            if let Some(p) = check_gln(value) {
                id_issue(report, p, &loc);
            }
            party.gln = Some(value.to_owned());
        }
        Some("CVR" | "VANS") => {}
        _ => report.push(Issue::error(
            "envelope.endpoint-type.unknown",
            format!("{loc}@EndPointType"),
            "EndPointType must be EAN, CVR or VANS",
        )),
    }
    party
}

/// Check a VANS envelope and return its decoded payload.
pub fn open(root: Node<'_>, report: &mut Report) -> Option<Payload> {
    let sender = endpoint(root, "SenderID", report);
    let receiver = endpoint(root, "ReceiverID", report);
    let id = text(root, "EnvelopeIdentifier");
    match id {
        None => report.push(Issue::error(
            "envelope.identifier.missing",
            "VANSEnvelope.EnvelopeIdentifier",
            "the VANS envelope identifier (EnvelopeIdentifier) is missing or empty",
        )),
        Some(v) if check_uuid(v).is_some() => deviation(
            report,
            "VANSEnvelope.EnvelopeIdentifier",
            "EnvelopeIdentifier is not a UUID as VANSEnvelope.xsd requires (real regional senders use \
             their own ids; accepted)",
        ),
        Some(_) => {}
    }
    match text(root, "SentDateTime") {
        None => missing(report, "VANSEnvelope.SentDateTime", "SentDateTime"),
        Some(d) if !crate::issues::is_datetime(d) => report.push(Issue::error(
            "envelope.datetime.format",
            "VANSEnvelope.SentDateTime",
            "SentDateTime must be an xs:dateTime (YYYY-MM-DDThh:mm:ss with optional zone)",
        )),
        Some(_) => {}
    }
    let mut transport = Transport {
        kind: TransportKind::Vans,
        id: id.map(str::to_owned),
        message_id: None,
        sender,
        receiver,
    };
    let payload = if let Some(msg) = kid(root, "Message") {
        message(msg, &mut transport, report)
    } else if let Some(rc) = kid(root, "Receipt") {
        vans_receipt(rc, report);
        None
    } else {
        report.push(Issue::error(
            "envelope.payload.missing",
            "VANSEnvelope.Message",
            "the VANS envelope holds neither a Message nor a Receipt",
        ));
        None
    };
    report.transport = Some(transport);
    payload
}

fn message(msg: Node<'_>, transport: &mut Transport, report: &mut Report) -> Option<Payload> {
    let meta = kid(msg, "MetaInformation");
    match meta.and_then(|m| text(m, "Identifier")) {
        None => report.push(Issue::error(
            "envelope.identifier.missing",
            "VANSEnvelope.Message.MetaInformation.Identifier",
            "the VANS message identifier (MetaInformation/Identifier) is missing or empty",
        )),
        Some(v) => {
            if check_uuid(v).is_some() {
                deviation(
                    report,
                    "VANSEnvelope.Message.MetaInformation.Identifier",
                    "MetaInformation/Identifier is not a UUID as VANSEnvelope.xsd requires (accepted)",
                );
            }
            transport.message_id = Some(v.to_owned());
        }
    }
    document(meta.and_then(|m| kid(m, "Document")), report);
    let Some(data) = text(msg, "Data") else {
        report.push(Issue::error(
            "envelope.payload.missing",
            "VANSEnvelope.Message.Data",
            "the VANS message has no Data (base64 payload)",
        ));
        return None;
    };
    let Some(bytes) = b64::decode(data) else {
        report.push(Issue::error(
            "envelope.base64",
            "VANSEnvelope.Message.Data",
            "Data is not valid base64",
        ));
        return None;
    };
    if bytes.is_empty() {
        report.push(Issue::error(
            "envelope.payload.missing",
            "VANSEnvelope.Message.Data",
            "Data decodes to nothing",
        ));
        return None;
    }
    Some(Payload {
        bytes,
        infer_latin1: true,
        location: "VANSEnvelope.Message.Data".to_owned(),
    })
}

/// MetaInformation/Document: Format, Name, Version.
fn document(doc: Option<Node<'_>>, report: &mut Report) {
    const LOC: &str = "VANSEnvelope.Message.MetaInformation.Document";
    let Some(doc) = doc else {
        missing(report, LOC, "MetaInformation/Document");
        return;
    };
    match text(doc, "Format") {
        None => missing(report, &format!("{LOC}.Format"), "Document/Format"),
        Some("XML" | "HL7") => {}
        Some("EDIFACT" | "Binary" | "Other") => report.push(Issue::error(
            "envelope.document.format-unsupported",
            format!("{LOC}.Format"),
            "Sammen accepts only XML payloads (Document/Format XML or HL7)",
        )),
        Some(_) => report.push(Issue::error(
            "envelope.document.format-unknown",
            format!("{LOC}.Format"),
            "Document/Format must be XML, EDIFACT, HL7, Binary or Other",
        )),
    }
    let Some(name) = text(doc, "Name") else {
        missing(report, &format!("{LOC}.Name"), "Document/Name");
        return;
    };
    // An OIOXML type name: the Version must be one of that type's version codes.
    let Ok(t) = sammen_oioxml::tables::tables() else {
        return;
    };
    if let (Some((lt, _)), Some(v)) = (t.by_type_code(name), text(doc, "Version")) {
        if !lt.version_codes.iter().any(|c| c == v) {
            report.push(Issue::error(
                "envelope.document.version-mismatch",
                format!("{LOC}.Version"),
                format!(
                    "Document/Version does not belong to Document/Name {} (allowed {})",
                    lt.type_code,
                    lt.version_codes.join(", ")
                ),
            ));
        }
    }
}

/// A VANS envelope receipt (no payload): record what it answers.
fn vans_receipt(rc: Node<'_>, report: &mut Report) {
    let (kind, code) = if let Some(n) = kid(rc, "PositiveMessage") {
        (n, AckCode::Ok)
    } else if let Some(n) = kid(rc, "NegativeMessage").or_else(|| kid(rc, "NegativeVans")) {
        (n, AckCode::FatalError)
    } else {
        missing(report, "VANSEnvelope.Receipt", "Receipt content");
        return;
    };
    report.event = Some(
        if code == AckCode::Ok {
            "receipt-acknowledgement"
        } else {
            "receipt-negative"
        }
        .to_owned(),
    );
    let env = text(kind, "OriginalEnvelopeIdentifier");
    let msg = kid(kind, "OriginalMessage").and_then(|m| text(m, "Identifier"));
    match (msg, env) {
        (Some(m), e) => {
            report.response = Some(ResponseRef {
                message_id: m.to_owned(),
                envelope_id: e.map(str::to_owned),
                code,
            })
        }
        (None, Some(e)) => {
            report.response = Some(ResponseRef {
                message_id: e.to_owned(),
                envelope_id: Some(e.to_owned()),
                code,
            })
        }
        (None, None) => report.push(Issue::error(
            "envelope.identifier.missing",
            format!(
                "VANSEnvelope.Receipt.{}.OriginalEnvelopeIdentifier",
                kind.name()
            ),
            "a VANS receipt must name the envelope it answers",
        )),
    }
}
