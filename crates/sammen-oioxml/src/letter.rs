//! The checks of one Emessage: envelope, letter codes, status, parties, patient, receipts.

use crate::formats::{is_date, is_time};
use crate::nav::{kid, path, text};
use crate::tables::{IdKind, LetterType, Receipt, StatusRule, Tables};
use sammen_model::ident::{self, IdProblem};
use sammen_model::{AckCode, Issue, Party, PatientId, Report, ResponseRef};
use sammen_xml::Node;

/// CPR identifier system.
pub const CPR_SYSTEM: &str = "urn:oid:1.2.208.176.1.2";
/// X-eCPR identifier system.
pub const ECPR_SYSTEM: &str = "urn:oid:1.2.208.176.1.6.1.1";

fn missing(report: &mut Report, loc: String, what: &str) {
    report.push(Issue::error(
        "oioxml.element.missing",
        loc,
        format!("required element {what} is missing or empty"),
    ));
}

fn id_issue(report: &mut Report, p: IdProblem, loc: String) {
    let issue = Issue {
        severity: p.severity(),
        code: p.code().to_owned(),
        location: loc,
        text: p.text().to_owned(),
    };
    report.push(issue);
}

/// Checks `Emessage/Envelope`; returns the AcknowledgementCode when present.
pub fn envelope<'d>(t: &Tables, root: Node<'d>, report: &mut Report) -> Option<&'d str> {
    let Some(env) = kid(t, root, "Envelope") else {
        report.push(Issue::error(
            "oioxml.envelope.missing",
            "Emessage.Envelope",
            "an Emessage must start with an Envelope (Sent, Identifier, AcknowledgementCode)",
        ));
        return None;
    };
    match kid(t, env, "Sent") {
        None => missing(report, "Emessage.Envelope.Sent".into(), "Sent"),
        Some(sent) => {
            if !text(t, sent, "Date").is_some_and(is_date) {
                report.push(Issue::error(
                    "oioxml.envelope.sent-date",
                    "Emessage.Envelope.Sent.Date",
                    "Sent/Date must be a calendar date YYYY-MM-DD",
                ));
            }
            if !text(t, sent, "Time").is_some_and(|s| is_time(s, false)) {
                report.push(Issue::error(
                    "oioxml.envelope.sent-time",
                    "Emessage.Envelope.Sent.Time",
                    "Sent/Time must be a time HH:MM",
                ));
            }
        }
    }
    match text(t, env, "Identifier") {
        Some(id) => report.envelope_id = Some(id.to_owned()),
        None => report.push(Issue::error(
            "oioxml.envelope.identifier-missing",
            "Emessage.Envelope.Identifier",
            "the envelope identifier (Envelope/Identifier) is missing or empty",
        )),
    }
    let ack = text(t, env, "AcknowledgementCode");
    match ack {
        None => missing(
            report,
            "Emessage.Envelope.AcknowledgementCode".into(),
            "AcknowledgementCode",
        ),
        Some(a) if !t.acknowledgement_codes.iter().any(|c| c == a) => report.push(Issue::error(
            "oioxml.acknowledgement-code.unknown",
            "Emessage.Envelope.AcknowledgementCode",
            "AcknowledgementCode must be pluspositivkvitt or minuspositivkvitt",
        )),
        Some(_) => {}
    }
    ack
}

/// TypeCode, VersionCode and StatisticalCode must belong to the letter element's type.
pub fn codes(t: &Tables, lt: &LetterType, l: Node<'_>, base: &str, report: &mut Report) {
    let type_code = text(t, l, "TypeCode");
    match type_code {
        None if lt.receipt.is_none() => {
            missing(report, format!("{base}.Letter.TypeCode"), "Letter/TypeCode")
        }
        Some(tc) if tc != lt.type_code => report.push(Issue::error(
            "oioxml.codes.mismatch",
            format!("{base}.Letter.TypeCode"),
            format!(
                "TypeCode does not match the letter element: {} requires TypeCode {}",
                lt.root, lt.type_code
            ),
        )),
        _ => {}
    }
    for (field, allowed) in [
        ("VersionCode", &lt.version_codes),
        ("StatisticalCode", &lt.statistical_codes),
    ] {
        match text(t, l, field) {
            None => missing(report, format!("{base}.Letter.{field}"), field),
            Some(v) if !allowed.iter().any(|a| a == v) => report.push(Issue::error(
                "oioxml.codes.mismatch",
                format!("{base}.Letter.{field}"),
                format!(
                    "{field} does not belong to {} ({}): allowed {}",
                    lt.type_code,
                    lt.root,
                    allowed.join(", ")
                ),
            )),
            Some(_) => {}
        }
    }
    if let Some(auth) = kid(t, l, "Authorisation") {
        if text(t, auth, "Date").is_some_and(|d| !is_date(d)) {
            report.push(Issue::error(
                "oioxml.letter.authorisation-date",
                format!("{base}.Letter.Authorisation.Date"),
                "Authorisation/Date must be a calendar date YYYY-MM-DD",
            ));
        }
    }
}

/// StatusCode value set; sets `report.event` for ordinary letters.
pub fn status(t: &Tables, lt: &LetterType, l: Node<'_>, base: &str, report: &mut Report) {
    if lt.status_code == StatusRule::Absent {
        return;
    }
    match text(t, l, "StatusCode") {
        None if lt.status_code == StatusRule::Required => report.push(Issue::error(
            "oioxml.status-code.missing",
            format!("{base}.Letter.StatusCode"),
            format!("{} letters must carry Letter/StatusCode", lt.type_code),
        )),
        None => {}
        Some(s) => match t.status_codes.iter().find(|c| *c == s) {
            Some(c) => report.event = Some(c.clone()),
            None => report.push(Issue::error(
                "oioxml.status-code.unknown",
                format!("{base}.Letter.StatusCode"),
                format!(
                    "StatusCode is not in the value set ({})",
                    t.status_codes.join(", ")
                ),
            )),
        },
    }
}

/// Sender or Receiver: EAN (GLN) and IdentifierCode/Identifier.
pub fn party(t: &Tables, l: Node<'_>, who: &str, base: &str, report: &mut Report) -> Party {
    let mut party = Party::default();
    let Some(p) = kid(t, l, who) else {
        missing(report, format!("{base}.{who}"), who);
        return party;
    };
    match text(t, p, "EANIdentifier") {
        None => report.push(Issue::error(
            "oioxml.party.ean-missing",
            format!("{base}.{who}.EANIdentifier"),
            format!("{who} must have an EANIdentifier (GLN / lokationsnummer)"),
        )),
        Some(ean) => {
            if let Some(p) = ident::check_gln(ean) {
                id_issue(report, p, format!("{base}.{who}.EANIdentifier"));
            }
            party.gln = Some(ean.to_owned());
        }
    }
    let Some(code) = text(t, p, "IdentifierCode") else {
        return party;
    };
    let Some(kind) = t.identifier_codes.get(code).copied() else {
        report.push(Issue::error(
            "oioxml.identifier-code.unknown",
            format!("{base}.{who}.IdentifierCode"),
            "IdentifierCode is not one of lokationsnummer, kommunenummer, ydernummer, sorkode, \
             sygehusafdelingsnummer, sygehusnummer",
        ));
        return party;
    };
    let loc = || format!("{base}.{who}.Identifier");
    let Some(id) = text(t, p, "Identifier") else {
        missing(report, loc(), "Identifier (IdentifierCode is given)");
        return party;
    };
    let problem = match kind {
        IdKind::Gln => ident::check_gln(id),
        IdKind::Ydernummer => ident::check_ydernummer(id),
        IdKind::Sor => {
            party.sor = Some(id.to_owned());
            ident::check_sor(id)
        }
        IdKind::Kommunenummer if id.len() == 13 && ident::check_gln(id).is_none() => {
            // MedCom's own XDIS91 example names the municipality by its GLN here.
            report.push(Issue::warning(
                "oioxml.identifier-code.value-mismatch",
                loc(),
                "IdentifierCode kommunenummer, but the Identifier is a GLN (13 digits)",
            ));
            None
        }
        IdKind::Kommunenummer => ident::check_kommunenummer(id),
        IdKind::Shak => {
            let ok = (4..=7).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                report.push(Issue::error(
                    "oioxml.identifier.shak-format",
                    loc(),
                    "a sygehus(afdelings)nummer must be 4 to 7 letters or digits (SKS shak code)",
                ));
            }
            None
        }
    };
    if let Some(p) = problem {
        id_issue(report, p, loc());
    }
    party
}

/// Patient/CivilRegistrationNumber: CPR (or eCPR); stored in `report.patient`, never printed.
pub fn patient(t: &Tables, l: Node<'_>, base: &str, report: &mut Report) {
    let Some(p) = kid(t, l, "Patient") else {
        return; // presence is a per-type rule (required list)
    };
    let loc = || format!("{base}.Patient.CivilRegistrationNumber");
    let Some(cpr) = text(t, p, "CivilRegistrationNumber") else {
        missing(report, loc(), "Patient/CivilRegistrationNumber");
        return;
    };
    match ident::check_cpr(cpr) {
        None => report.patient = Some(PatientId::new(CPR_SYSTEM, cpr)),
        Some(IdProblem::CprFormat) if ident::check_ecpr(cpr).is_none() => {
            report.patient = Some(PatientId::new(ECPR_SYSTEM, cpr));
        }
        Some(prob) => {
            if prob == IdProblem::CprModulus11 {
                report.patient = Some(PatientId::new(CPR_SYSTEM, cpr));
            }
            id_issue(report, prob, loc());
        }
    }
}

/// Elements the letter type requires.
pub fn required(t: &Tables, lt: &LetterType, l: Node<'_>, base: &str, report: &mut Report) {
    for p in &lt.required {
        if path(t, l, p).is_none() {
            missing(report, format!("{base}.{p}"), p);
        }
    }
}

/// XCTL receipts: correlation to the original letter; sets event and `report.response`.
pub fn receipt(
    t: &Tables,
    pol: Receipt,
    l: Node<'_>,
    ack: Option<&str>,
    base: &str,
    report: &mut Report,
) {
    report.event = Some(
        match pol {
            Receipt::Positive => "positive",
            Receipt::Negative => "negative",
        }
        .to_owned(),
    );
    if ack == Some("pluspositivkvitt") {
        report.push(Issue::error(
            "oioxml.acknowledgement-code.receipt",
            "Emessage.Envelope.AcknowledgementCode",
            "a receipt must not request a receipt (AcknowledgementCode must be minuspositivkvitt)",
        ));
    }
    let Some(orig) = kid(t, l, "OriginalEmessage") else {
        return; // reported by the required list
    };
    let env_id = text(t, orig, "OriginalEnvelopeIdentifier");
    if env_id.is_none() {
        report.push(Issue::error(
            "oioxml.receipt.original-envelope-id-missing",
            format!("{base}.OriginalEmessage.OriginalEnvelopeIdentifier"),
            "a receipt must name the envelope it answers (OriginalEnvelopeIdentifier)",
        ));
    }
    let ol = kid(t, orig, "OriginalLetter");
    let letter_id = ol.and_then(|o| text(t, o, "OriginalLetterIdentifier"));
    if letter_id.is_none() {
        report.push(Issue::error(
            "oioxml.receipt.original-letter-id-missing",
            format!("{base}.OriginalEmessage.OriginalLetter.OriginalLetterIdentifier"),
            "a receipt must name the letter it answers (OriginalLetterIdentifier)",
        ));
    }
    if let Some(v) = ol.and_then(|o| text(t, o, "OriginalVersionCode")) {
        if !t.is_known_version_code(v) {
            report.push(Issue::warning(
                "oioxml.receipt.original-version-unknown",
                format!("{base}.OriginalEmessage.OriginalLetter.OriginalVersionCode"),
                "OriginalVersionCode is not a version code of a letter type Sammen knows",
            ));
        }
    }
    if let Some(id) = letter_id {
        report.response = Some(ResponseRef {
            message_id: id.to_owned(),
            envelope_id: env_id.map(str::to_owned),
            code: match pol {
                Receipt::Positive => AckCode::Ok,
                Receipt::Negative => AckCode::FatalError,
            },
        });
    }
}
