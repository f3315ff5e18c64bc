//! EHMI Standard Business Document (UN/CEFACT SBDH + PEPPOL `BinaryContent`), and envelope receipts
//! (an SBDH whose payload is an ebBP `ReceiptAcknowledgement` signal).

use crate::b64;
use crate::issues::{deviation, id_issue, is_datetime, missing};
use crate::Payload;
use sammen_model::ident::{check_cpr, check_ecpr, check_gln, check_sor, IdProblem};
use sammen_model::{AckCode, Issue, Party, Report, ResponseRef, Transport, TransportKind};
use sammen_xml::{ns, Document, Limits, Node};

const H: &str = "StandardBusinessDocument.StandardBusinessDocumentHeader";
const EBBP: &str = "http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0";

/// Event recorded for an envelope-level receipt (no inner message).
pub const RECEIPT_EVENT: &str = "receipt-acknowledgement";

fn kid<'d>(n: Node<'d>, local: &str) -> Option<Node<'d>> {
    n.child_ns(ns::SBDH, local)
}

fn text<'d>(n: Node<'d>, local: &str) -> Option<&'d str> {
    kid(n, local).map(|c| c.text()).filter(|s| !s.is_empty())
}

/// True for an SBDH root: `{SBDH}StandardBusinessDocument`, or the lower-case, namespace-less spelling a
/// region's receipt uses (accepted with a warning by [`open`]).
pub fn is_root(root: Node<'_>) -> bool {
    root.is(ns::SBDH, "StandardBusinessDocument")
        || (root.name().eq_ignore_ascii_case("StandardBusinessDocument")
            && (root.namespace().is_empty() || root.namespace() == ns::SBDH))
}

/// The scopes Sammen reads from BusinessScope.
#[derive(Default)]
struct Scopes<'d> {
    message_id: Option<&'d str>,
    original_message_id: Option<&'d str>,
    sender_sor: Option<&'d str>,
    receiver_sor: Option<&'d str>,
    patient: Option<&'d str>,
    entry_uuid: Option<&'d str>,
    has_dds_metadata: bool,
}

fn scopes<'d>(header: Node<'d>) -> Scopes<'d> {
    let mut s = Scopes::default();
    let Some(bs) = kid(header, "BusinessScope") else {
        return s;
    };
    for scope in bs.children().filter(|c| c.is(ns::SBDH, "Scope")) {
        let [ty, value, identifier] = scope_fields(scope);
        if identifier.is_some_and(|i| i.starts_with("dk-dds")) {
            s.has_dds_metadata = true;
        }
        match ty {
            Some("MESSAGEIDENTIFIER") => s.message_id = value,
            Some("ORIGINALMESSAGEIDENTIFIER") => s.original_message_id = value,
            Some("SENDERID") => s.sender_sor = value,
            Some("RECEIVERID") => s.receiver_sor = value,
            Some("PATIENTID") => s.patient = value,
            Some("ENTRYUUID") => s.entry_uuid = value.or(Some("")),
            _ => {}
        }
    }
    s
}

/// A Scope's Type, InstanceIdentifier and Identifier, as [`text`] reads each (the first such child, its
/// text when not blank), in one pass over the children: three lookups per scope were a fifth of checking
/// an SBDH with XDS metadata (callgrind).
fn scope_fields<'d>(scope: Node<'d>) -> [Option<&'d str>; 3] {
    const NAMES: [&str; 3] = ["Type", "InstanceIdentifier", "Identifier"];
    let mut seen = [false; 3];
    let mut fields = [None; 3];
    for c in scope.children() {
        let Some(i) = NAMES.iter().position(|n| c.name_is(n)) else {
            continue;
        };
        if seen[i] || c.namespace() != ns::SBDH {
            continue;
        }
        seen[i] = true;
        fields[i] = Some(c.text()).filter(|s| !s.is_empty());
        if seen == [true; 3] {
            break;
        }
    }
    fields
}

/// Sender/Receiver: `Identifier Authority="iso6523-actorid-upis"` = `0088:<GLN>`.
fn partner(header: Node<'_>, local: &str, sor: Option<&str>, report: &mut Report) -> Party {
    let mut party = Party::default();
    let loc = format!("{H}.{local}.Identifier");
    let code = if local == "Sender" {
        "envelope.sender.missing"
    } else {
        "envelope.receiver.missing"
    };
    let Some(idn) = kid(header, local).and_then(|p| kid(p, "Identifier")) else {
        report.push(Issue::error(
            code,
            loc,
            "the SBDH must name its sender and receiver (0088:<GLN>)",
        ));
        return party;
    };
    if idn.attr("Authority") != Some("iso6523-actorid-upis") {
        deviation(
            report,
            &format!("{loc}@Authority"),
            "Authority should be iso6523-actorid-upis",
        );
    }
    match idn.text() {
        "" => report.push(Issue::error(
            code,
            loc.as_str(),
            "the SBDH must name its sender and receiver (0088:<GLN>)",
        )),
        v => match v.strip_prefix("0088:") {
            None => report.push(Issue::error(
                "envelope.party.scheme",
                loc.as_str(),
                "a sender/receiver identifier must be 0088:<GLN> (GS1 scheme 0088)",
            )),
            Some(gln) => {
                if let Some(p) = check_gln(gln) {
                    id_issue(report, p, &loc);
                }
                party.gln = Some(gln.to_owned());
            }
        },
    }
    let scope = if local == "Sender" {
        "SENDERID"
    } else {
        "RECEIVERID"
    };
    if let Some(s) = sor {
        if check_sor(s).is_none() {
            party.sor = Some(s.to_owned());
        } else {
            deviation(
                report,
                &format!("{H}.BusinessScope.Scope[{scope}].InstanceIdentifier"),
                "the scope does not hold a SOR code (routing uses the GLN; accepted)",
            );
        }
    }
    party
}

/// Check an SBDH and return its decoded payload (None for envelope receipts and on refusal).
pub fn open(root: Node<'_>, report: &mut Report) -> Option<Payload> {
    if !root.is(ns::SBDH, "StandardBusinessDocument") {
        deviation(
            report,
            "StandardBusinessDocument",
            "root element should be StandardBusinessDocument in the SBDH namespace (accepted: the header \
             is complete)",
        );
    }
    let Some(header) = kid(root, "StandardBusinessDocumentHeader") else {
        report.push(Issue::error(
            "envelope.header.missing",
            H,
            "the SBDH has no StandardBusinessDocumentHeader",
        ));
        return None;
    };
    if text(header, "HeaderVersion") != Some("1.0") {
        deviation(
            report,
            &format!("{H}.HeaderVersion"),
            "HeaderVersion should be 1.0",
        );
    }
    let sc = scopes(header);
    let sender = partner(header, "Sender", sc.sender_sor, report);
    let receiver = partner(header, "Receiver", sc.receiver_sor, report);

    let di = kid(header, "DocumentIdentification");
    let di_loc = format!("{H}.DocumentIdentification");
    let instance = di.and_then(|d| text(d, "InstanceIdentifier"));
    if instance.is_none() {
        report.push(Issue::error(
            "envelope.identifier.missing",
            format!("{di_loc}.InstanceIdentifier"),
            "the SBDH instance identifier (DocumentIdentification/InstanceIdentifier) is missing or empty",
        ));
    }
    let doc_type = di.and_then(|d| text(d, "Type"));
    if let Some(d) = di {
        for f in ["Standard", "Type"] {
            if text(d, f).is_none() {
                missing(report, &format!("{di_loc}.{f}"), f);
            }
        }
        match text(d, "CreationDateAndTime") {
            None => missing(
                report,
                &format!("{di_loc}.CreationDateAndTime"),
                "CreationDateAndTime",
            ),
            Some(v) if !is_datetime(v) => report.push(Issue::error(
                "envelope.datetime.format",
                format!("{di_loc}.CreationDateAndTime"),
                "CreationDateAndTime must be an xs:dateTime",
            )),
            Some(_) => {}
        }
    } else {
        missing(report, &di_loc, "DocumentIdentification");
    }
    let is_receipt = doc_type == Some("ReceiptAcknowledgement");

    if sc.message_id.is_none() {
        report.push(Issue::error(
            "envelope.identifier.missing",
            format!("{H}.BusinessScope.Scope[MESSAGEIDENTIFIER]"),
            "the SBDH must carry the message identifier scope (MESSAGEIDENTIFIER)",
        ));
    }
    if sc.has_dds_metadata && sc.entry_uuid.is_none_or(str::is_empty) {
        report.push(Issue::error(
            "envelope.entryuuid.missing",
            format!("{H}.BusinessScope.Scope[ENTRYUUID]"),
            "an SBDH with XDS metadata scopes (dk-dds-*) must carry the ENTRYUUID scope",
        ));
    }
    if let Some(p) = sc.patient {
        let cpr = p.split('^').next().unwrap_or(p);
        let problem = match check_cpr(cpr) {
            Some(IdProblem::CprFormat) if check_ecpr(cpr).is_none() => None,
            Some(IdProblem::CprModulus11) | None => None,
            other => other,
        };
        if let Some(prob) = problem {
            id_issue(
                report,
                prob,
                &format!("{H}.BusinessScope.Scope[PATIENTID].InstanceIdentifier"),
            );
        }
    }

    let transport = Transport {
        kind: TransportKind::Sbdh,
        id: instance.map(str::to_owned),
        message_id: sc.message_id.map(str::to_owned),
        sender,
        receiver,
    };
    let payload = binary_content(root, is_receipt, report);
    if is_receipt {
        receipt(payload.as_ref(), &sc, &transport, report);
        report.transport = Some(transport);
        return None;
    }
    report.transport = Some(transport);
    payload
}

/// BinaryContent: PEPPOL namespace (EHMI 2.0) or SBDH namespace (the region's 2021 form).
fn binary_content(root: Node<'_>, is_receipt: bool, report: &mut Report) -> Option<Payload> {
    let (bc, loc) = match root.child_ns(ns::PEPPOL_ENVELOPE, "BinaryContent") {
        Some(bc) => {
            if !is_receipt {
                deviation(
                    report,
                    "StandardBusinessDocument.BinaryContent",
                    "BinaryContent in the PEPPOL envelope namespace is unknown to the 2021 SBDH schema \
                     (EHMI SBDH 2.0 form; accepted)",
                );
            }
            (bc, "StandardBusinessDocument.BinaryContent")
        }
        None => match kid(root, "BinaryContent") {
            Some(bc) => (bc, "StandardBusinessDocument.BinaryContent"),
            None => {
                if !is_receipt {
                    report.push(Issue::error(
                        "envelope.payload.missing",
                        "StandardBusinessDocument.BinaryContent",
                        "the SBDH has no BinaryContent (base64 payload)",
                    ));
                }
                return None;
            }
        },
    };
    match bc.attr("mimeType") {
        None => deviation(
            report,
            &format!("{loc}@mimeType"),
            "BinaryContent should state its mimeType",
        ),
        Some("text/xml" | "application/xml" | "application/fhir+xml") => {}
        Some(_) => report.push(Issue::error(
            "envelope.payload.mime-type",
            format!("{loc}@mimeType"),
            "Sammen accepts XML payloads only (text/xml, application/xml, application/fhir+xml)",
        )),
    }
    if let Some(enc) = bc.attr("encoding") {
        let known = ["UTF-8", "ISO-8859-1"]
            .iter()
            .any(|k| enc.eq_ignore_ascii_case(k));
        if !known {
            report.push(Issue::error(
                "envelope.payload.encoding",
                format!("{loc}@encoding"),
                "BinaryContent encoding must be UTF-8 or ISO-8859-1",
            ));
        }
    }
    let text = bc.text();
    if text.is_empty() {
        report.push(Issue::error(
            "envelope.payload.missing",
            loc,
            "BinaryContent is empty",
        ));
        return None;
    }
    let Some(bytes) = b64::decode(text) else {
        report.push(Issue::error(
            "envelope.base64",
            loc,
            "BinaryContent is not valid base64",
        ));
        return None;
    };
    Some(Payload {
        bytes,
        infer_latin1: true,
        location: loc.to_owned(),
    })
}

/// An envelope receipt: what it answers, taken from the ebBP signal (or the ORIGINALMESSAGEIDENTIFIER
/// scope when the signal is unreadable, which MedCom's own sample is).
fn receipt(payload: Option<&Payload>, sc: &Scopes<'_>, t: &Transport, report: &mut Report) {
    report.family = None;
    report.event = Some(RECEIPT_EVENT.to_owned());
    report.sender = t.sender.clone();
    report.receiver = t.receiver.clone();
    report.message_id = sc.message_id.or(t.id.as_deref()).map(str::to_owned);
    report.envelope_id = t.id.clone();
    let mut original = sc.original_message_id.map(str::to_owned);
    let signal_ok = payload.is_some_and(|p| {
        let Ok(decoded) = sammen_xml::decode(&p.bytes, true) else {
            return false;
        };
        let Ok(doc) = Document::parse(&decoded.text, &Limits::default(), &[]) else {
            return false;
        };
        let root = doc.root();
        if !root.is(EBBP, "ReceiptAcknowledgement") {
            return false;
        }
        if let Some(id) = root
            .child_ns(EBBP, "OriginalMessageIdentifier")
            .map(|n| n.text())
            .filter(|s| !s.is_empty())
        {
            original = Some(id.to_owned());
        }
        true
    });
    if !signal_ok {
        deviation(
            report,
            "StandardBusinessDocument.BinaryContent",
            "the receipt's payload is not a well-formed ebBP ReceiptAcknowledgement signal (the header \
             identifies the receipt; accepted)",
        );
    }
    if let Some(m) = original {
        report.response = Some(ResponseRef {
            message_id: m,
            envelope_id: None,
            code: AckCode::Ok,
        });
    }
}
