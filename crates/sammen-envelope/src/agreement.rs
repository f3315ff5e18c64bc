//! Does the envelope agree with the message inside it?
//!
//! GLNs route: a sender or receiver GLN that differs between envelope and inner message is an error.
//! SOR codes and SBDH message identifiers are informative: MedCom's own EHMI samples reuse FHIR ids and
//! swap SOR scopes around an OIOXML letter, so those disagreements are warnings. VANS ids are strict.

use sammen_model::{Issue, Report, TransportKind};

fn locs(kind: TransportKind) -> (&'static str, &'static str) {
    match kind {
        TransportKind::Vans => ("VANSEnvelope.SenderID", "VANSEnvelope.ReceiverID"),
        TransportKind::Sbdh => (
            "StandardBusinessDocument.StandardBusinessDocumentHeader.Sender.Identifier",
            "StandardBusinessDocument.StandardBusinessDocumentHeader.Receiver.Identifier",
        ),
    }
}

fn differ(a: Option<&String>, b: Option<&String>) -> bool {
    matches!((a, b), (Some(x), Some(y)) if x != y)
}

/// Compare `report.transport` with the inner message already validated into `report`.
pub fn check(report: &mut Report) {
    let Some(t) = report.transport.as_ref() else {
        return;
    };
    let (s_loc, r_loc) = locs(t.kind);
    let mut found: Vec<Issue> = Vec::new();
    for (env, inner, loc, code, who) in [
        (
            &t.sender,
            &report.sender,
            s_loc,
            "envelope.sender.mismatch",
            "sender",
        ),
        (
            &t.receiver,
            &report.receiver,
            r_loc,
            "envelope.receiver.mismatch",
            "receiver",
        ),
    ] {
        if differ(env.gln.as_ref(), inner.gln.as_ref()) {
            found.push(Issue::error(
                code,
                loc,
                format!("the envelope's {who} GLN differs from the inner message's {who} GLN"),
            ));
        }
        if differ(env.sor.as_ref(), inner.sor.as_ref()) {
            found.push(Issue::warning(
                "envelope.sor.mismatch",
                loc,
                format!("the envelope's {who} SOR code differs from the inner message's"),
            ));
        }
    }
    let inner_is_oioxml = report.family.is_some_and(|f| !f.is_fhir());
    match t.kind {
        TransportKind::Vans => {
            if differ(t.message_id.as_ref(), report.message_id.as_ref()) {
                found.push(Issue::error(
                    "envelope.message-id.mismatch",
                    "VANSEnvelope.Message.MetaInformation.Identifier",
                    "the VANS message identifier differs from the inner message's identifier",
                ));
            }
            if inner_is_oioxml && differ(t.id.as_ref(), report.envelope_id.as_ref()) {
                found.push(Issue::error(
                    "envelope.envelope-id.mismatch",
                    "VANSEnvelope.EnvelopeIdentifier",
                    "the VANS envelope identifier differs from the letter's Envelope/Identifier",
                ));
            }
        }
        TransportKind::Sbdh => {
            // The region writes `<sender GLN>:<letter id>`.
            let agrees = match (t.message_id.as_deref(), report.message_id.as_deref()) {
                (Some(env), Some(inner)) => {
                    env == inner || env.rsplit_once(':').is_some_and(|(_, id)| id == inner)
                }
                _ => true,
            };
            if !agrees {
                found.push(Issue::warning(
                    "envelope.sbdh.message-id.mismatch",
                    "StandardBusinessDocument.StandardBusinessDocumentHeader.BusinessScope.Scope[MESSAGEIDENTIFIER]",
                    "the SBDH MESSAGEIDENTIFIER differs from the inner message's identifier",
                ));
            }
        }
    }
    report.issues.extend(found);
}
