//! # sammen-fhir: MedCom FHIR messages, validated
//!
//! Why it exists: every FHIR message Sammen routes (HospitalNotification 3.x, CareCommunication 5.x,
//! Acknowledgement 2.x, and the base `empty-message` / HomeCareObservation messages) must be recognised
//! — family, event, ids, sender, receiver, patient — or refused with the exact rule it breaks, before it
//! is routed, acknowledged or audited. This crate does that on the tree `sammen-xml` builds.
//!
//! Invariants kept here:
//! - **Data, not code.** Value sets, activity → Encounter class/status, cardinalities and prohibited
//!   elements live in `schemas/fhir/*.toml`, compiled in and parsed once; a test checks they parse and
//!   agree with each other. Invariants that need logic are code, each tagged with its MedCom id.
//! - **Stable codes.** A MedCom invariant's id is inside its issue code (`medcom-hospitalNotification-5`);
//!   other codes are dotted and listed in `schemas/fhir/CODES.md`.
//! - **No personal data in issues.** Texts describe the rule, never a value; the patient identifier only
//!   goes to [`Report::patient`](sammen_model::Report), which is never serialised.
//! - **Never panics on input.** No indexing or unwrap on anything a message controls (it is fuzzed).
//! - **What we build, we accept.** [`build::acknowledgement`] makes standard Acknowledgements (for the
//!   broker answering on a receiver's behalf, and for tests) that pass this validator without a single
//!   issue, for every response code (`sammen-adapters/tests/ack_builder.rs`).
//! - **One pass to index.** Entries are indexed once (fullUrl and `Type/id` maps); locations are built
//!   only when an issue is reported.
#![forbid(unsafe_code)]

mod acknowledgement;
pub mod build;
mod bundle;
mod care_communication;
mod hospital_notification;
mod messaging;
mod path;
pub mod rules;

use sammen_model::{Issue, Report};
use sammen_xml::{ns, Node};

/// Validate a FHIR message.
///
/// `root` is a `{http://hl7.org/fhir}Bundle` element. Fills `report.family`, `event`, `message_id`
/// (MessageHeader.id), `envelope_id` (Bundle.id), `sender`/`receiver` (GLN + SOR; receiver =
/// destination\[primary\]), `response` (acknowledgements), `patient` (never printed), and pushes issues.
pub fn validate_bundle(root: Node<'_>, report: &mut Report) {
    if !root.is(ns::FHIR, "Bundle") {
        report.push(Issue::error(
            "fhir.root",
            root.name(),
            "the root element must be a FHIR Bundle (namespace http://hl7.org/fhir)",
        ));
        return;
    }
    let tables = match rules::tables() {
        Ok(t) => t,
        Err(_) => {
            report.push(Issue::error(
                "fhir.rules.unavailable",
                "Bundle",
                "the built-in FHIR rule tables could not be read (build defect)",
            ));
            return;
        }
    };
    let b = bundle::Bundle::index(root);
    let ctx = messaging::check(tables, &b, report);
    match ctx.profile.id.as_str() {
        "hospitalnotification-3" => hospital_notification::check(tables, &b, &ctx, report),
        "carecommunication-5" => care_communication::check(tables, &b, &ctx, report),
        "acknowledgement-2" => acknowledgement::check(tables, &b, &ctx, report),
        _ => {}
    }
}
