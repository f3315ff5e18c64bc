//! # sammen-oioxml: MedCom OIOXML letters
//!
//! Why it exists: hospitals and municipalities still exchange OIOXML letters (XDIS20 admission alerts,
//! XDIS17 discharge notices, XDIS18 discharge reports, XDIS21 care plans, XDIS91 clinical e-mail, XBIN01
//! attachments, XREF01 referrals) and XCTL receipts, directly or inside VANS / EHMI SBDH envelopes. The
//! broker must say exactly what such a letter is — family, status, ids, sender, receiver, patient — or
//! exactly why it is refused. This crate does that for one `Emessage` element of a parsed tree.
//!
//! Invariants kept here:
//! - Elements are matched on namespace URI + local name, never on prefixes. Because real letters mix
//!   OIOXML namespaces inside one Emessage, a child matches in *any* known OIOXML namespace
//!   (`schemas/oioxml/valuesets.toml`); the root must be in one of them.
//! - What belongs to which letter type (root element, version/statistical codes, status rule, required
//!   elements) and the value sets live in `schemas/oioxml/*.toml`, embedded and parsed once; the code
//!   holds no per-type lists.
//! - Every failure is an [`Issue`] with a stable code documented in `schemas/oioxml/CODES.md`; texts
//!   describe rules and never echo a value from the letter (CPR, names, clinical text).
//! - The CPR goes only into [`Report::patient`] (redacted, never serialised). A failed modulus-11 check
//!   is a warning: MedCom's and the regions' test CPRs fail it and real CPRs since 2007 may too.
//! - No panics on any input: no indexing or unwraps on input-derived data.
//!
//! [`build`] writes (never reads) the one letter the broker itself sends: the XCTL03 positive receipt
//! ([`build::positive_receipt`]), for receivers it acknowledges on behalf of; [`build::letter_version_code`]
//! reads the VersionCode such a receipt must quote.
#![forbid(unsafe_code)]

pub mod build;
mod formats;
mod letter;
mod nav;
pub mod tables;

pub use letter::{CPR_SYSTEM, ECPR_SYSTEM};

use sammen_model::{Issue, Report};
use sammen_xml::Node;

/// True when `root` is an `Emessage` in a known OIOXML namespace.
pub fn is_emessage(root: Node<'_>) -> bool {
    root.name() == "Emessage" && tables::tables().is_ok_and(|t| t.is_oioxml_ns(root.namespace()))
}

/// Validate one OIOXML `Emessage` into `report`.
///
/// `root` is an `Emessage` element in one of the known OIOXML namespaces (unknown namespace → an error
/// issue). Fills `family`, `event` (the letter StatusCode, e.g. `nytbrev`; `positive`/`negative` for XCTL
/// receipts), `message_id` (Letter/Identifier), `envelope_id` (Envelope/Identifier), `sender`/`receiver`
/// (gln = EANIdentifier; sor when IdentifierCode is `sorkode`), `response` (XCTL), `patient`, and pushes
/// issues.
pub fn validate_emessage(root: Node<'_>, report: &mut Report) {
    let t = match tables::tables() {
        Ok(t) => t,
        Err(_) => {
            report.push(Issue::error(
                "oioxml.tables.invalid",
                "Emessage",
                "Sammen's OIOXML tables could not be read; no OIOXML letter can be validated",
            ));
            return;
        }
    };
    if root.name() != "Emessage" || !t.is_oioxml_ns(root.namespace()) {
        report.push(Issue::error(
            "oioxml.namespace.unknown",
            "Emessage",
            "root element is not an Emessage in a known OIOXML namespace (2005/08/07, 2006/07/01, \
             2012/03/28, urn:oio:medcom:municipality:1.0.0 or 1.0.3)",
        ));
        return;
    }
    let ack = letter::envelope(t, root, report);
    let Some(l) = root
        .children()
        .find(|c| c.name() != "Envelope" && t.is_oioxml_ns(c.namespace()))
    else {
        report.push(Issue::error(
            "oioxml.letter.missing",
            "Emessage",
            "the Emessage holds no letter element after its Envelope",
        ));
        return;
    };
    let Some((lt, fam)) = t.by_root(l.name()) else {
        report.push(Issue::error(
            "oioxml.letter.unknown-type",
            format!("Emessage.{}", l.name()),
            "the letter element is not one of the OIOXML letter types Sammen knows \
             (schemas/oioxml/letters.toml)",
        ));
        return;
    };
    report.family = Some(*fam);
    let base = lt.base.as_str();
    match nav::kid(t, l, "Letter") {
        None => report.push(Issue::error(
            "oioxml.letter.identifier-missing",
            format!("{base}.Letter"),
            "the letter has no Letter block, so no letter identifier",
        )),
        Some(meta) => {
            match nav::text(t, meta, "Identifier") {
                Some(id) => report.message_id = Some(id.to_owned()),
                None => report.push(Issue::error(
                    "oioxml.letter.identifier-missing",
                    format!("{base}.Letter.Identifier"),
                    "the letter identifier (Letter/Identifier) is missing or empty",
                )),
            }
            letter::codes(t, lt, meta, base, report);
            letter::status(t, lt, meta, base, report);
        }
    }
    report.sender = letter::party(t, l, "Sender", base, report);
    report.receiver = letter::party(t, l, "Receiver", base, report);
    letter::patient(t, l, base, report);
    letter::required(t, lt, l, base, report);
    if let Some(pol) = lt.receipt {
        letter::receipt(t, pol, l, ack, base, report);
    }
}
