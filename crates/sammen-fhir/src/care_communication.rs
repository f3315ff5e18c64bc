//! CareCommunication 5.x rules that need logic: category value set, priority (-5), topic (-6), authors
//! (-4, -7, -8), Encounter (-9, -15), specific sender/recipient (-11, -12), PractitionerRole (-13),
//! thread identifier (medcom-uuidv4), payload text, MessageDefinition URL. Header (-1), Patient (-2),
//! Provenance profile (-3) and entity (-14) are checked in the generic pass from the table.

use crate::bundle::{reference_of, Bundle};
use crate::messaging::{extension, Ctx};
use crate::path;
use crate::rules::Tables;
use sammen_model::{ident, Issue, Report};
use sammen_xml::Node;

pub fn check(t: &Tables, b: &Bundle<'_>, ctx: &Ctx<'_, '_>, report: &mut Report) {
    let root = b.root;
    let Some(h) = b.header else { return };
    if let (Some(prefix), Some(code)) =
        (&ctx.profile.definition_prefix, &ctx.profile.definition_code)
    {
        if let Some(d) = h.child("definition") {
            if !d.value().is_some_and(|v| v.starts_with(prefix.as_str())) {
                report.push(Issue::error(
                    code.clone(),
                    path::of(d, root),
                    "MessageHeader.definition must be the CareCommunication MessageDefinition, version 5.x",
                ));
            }
        }
    }
    for p in b.of_type("Practitioner") {
        if p.child("name").is_none() {
            report.push(Issue::error(
                "medcom-careCommunication-4",
                path::child(p, root, "name"),
                "every Practitioner must have a name (medcom-careCommunication-4)",
            ));
        }
    }
    for r in b.of_type("PractitionerRole") {
        if r.child("practitioner").and_then(reference_of).is_none() {
            report.push(Issue::error(
                "medcom-careCommunication-13",
                path::child(r, root, "practitioner"),
                "every PractitionerRole must reference a Practitioner (medcom-careCommunication-13)",
            ));
        }
    }
    let comm = h
        .children()
        .filter(|c| c.name() == "focus")
        .filter_map(reference_of)
        .find_map(|r| b.resolve_as(r, "Communication"))
        .or_else(|| b.of_type("Communication").next());
    let Some(comm) = comm else {
        report.push(Issue::error(
            "fhir.cardinality.min",
            "Bundle.entry",
            "a CareCommunication must contain its Communication, referenced by MessageHeader.focus",
        ));
        return;
    };
    communication(t, b, ctx, comm, report);
}

fn communication(
    t: &Tables,
    b: &Bundle<'_>,
    ctx: &Ctx<'_, '_>,
    comm: Node<'_>,
    report: &mut Report,
) {
    let root = b.root;
    if let Some(v) = comm.at(&["identifier", "value"]) {
        let ok = v
            .value()
            .is_some_and(|s| s.starts_with("urn:uuid:") && ident::check_uuid(s).is_none());
        if !ok {
            report.push(Issue::error(
                "medcom-uuidv4",
                path::of(v, root),
                "Communication.identifier must be a UUID written as urn:uuid:... (medcom-uuidv4)",
            ));
        }
    }
    let coding = comm.at(&["category", "coding"]);
    let category = coding.and_then(|c| c.child_value("code"));
    if let Some(c) = coding {
        let ok = c.child_value("system") == Some(t.systems.category.as_str())
            && category.is_some_and(|k| t.valuesets.cc_category.iter().any(|v| v == k));
        if !ok {
            report.push(Issue::error(
                "fhir.valueset.category",
                path::of(c, root),
                "Communication.category must be a code of medcom-careCommunication-categoryCodes",
            ));
        }
    }
    if let Some(p) = comm.child("priority") {
        if category != Some("regarding-referral") {
            report.push(Issue::error(
                "medcom-careCommunication-5",
                path::of(p, root),
                "priority is only allowed when the category is 'regarding-referral' (medcom-careCommunication-5)",
            ));
        }
    }
    if category == Some("other")
        && comm
            .at(&["topic", "text"])
            .and_then(|n| n.value())
            .is_none()
    {
        report.push(Issue::error(
            "medcom-careCommunication-6",
            path::child(comm, root, "topic"),
            "a topic is required when the category is 'other' (medcom-careCommunication-6)",
        ));
    }
    let payloads = comm.children().filter(|c| c.name() == "payload");
    let mut text_payloads = 0;
    for p in payloads {
        if p.child("contentString").is_some() {
            text_payloads += 1;
        }
        if let Some(r) = extension(p, &t.extensions.payload_author)
            .and_then(|e| e.child("valueReference"))
            .and_then(reference_of)
        {
            author(b, p, r, report);
        }
    }
    if text_payloads == 0 {
        report.push(Issue::error(
            "cc.payload.string",
            path::child(comm, root, "payload"),
            "a CareCommunication must have at least one payload with message text (contentString)",
        ));
    }
    // -9 and -15: an Encounter in the bundle and Communication.encounter go together.
    let enc_ref = comm.child("encounter");
    let encounters = b.of_type("Encounter").count();
    match enc_ref.and_then(reference_of).and_then(|r| b.resolve_as(r, "Encounter")) {
        Some(e) if e.at(&["episodeOfCare", "identifier"]).is_none() => {
            report.push(Issue::error(
                "medcom-careCommunication-9",
                path::child(e, root, "episodeOfCare"),
                "an Encounter referenced by the Communication must carry an episodeOfCare identifier (medcom-careCommunication-9)",
            ));
        }
        Some(_) => {}
        None if encounters > 0 || enc_ref.is_some() => report.push(Issue::error(
            "medcom-careCommunication-15",
            path::child(comm, root, "encounter"),
            "Communication.encounter must reference the bundled Encounter, and only be present when there is one (medcom-careCommunication-15)",
        )),
        None => {}
    }
    // -11 / -12: specific sender and recipient belong to the header's sender / receiver organisation.
    if let Some(r) = extension(comm, &t.extensions.cc_sender)
        .and_then(|e| e.child("valueReference"))
        .and_then(reference_of)
    {
        if !belongs_to(b, r, ctx.sender_org) {
            report.push(Issue::error(
                "medcom-careCommunication-11",
                path::child(comm, root, "extension"),
                "the specific sender must belong to the MessageHeader.sender organisation (medcom-careCommunication-11)",
            ));
        }
    }
    if let Some(r) = comm.child("recipient").and_then(reference_of) {
        if !belongs_to(b, r, ctx.receiver_org) {
            report.push(Issue::error(
                "medcom-careCommunication-12",
                path::child(comm, root, "recipient"),
                "the specific recipient must belong to the primary receiver organisation (medcom-careCommunication-12)",
            ));
        }
    }
}

/// -7 / -8: a payload author that is a PractitionerRole has a role (code xor text) and a named
/// Practitioner.
fn author(b: &Bundle<'_>, payload: Node<'_>, reference: &str, report: &mut Report) {
    let root = b.root;
    let Some(e) = b.resolve(reference).and_then(|i| b.entries.get(i)) else {
        return;
    };
    let Some(res) = e.resource else { return };
    let loc = || path::child(payload, root, "extension");
    match e.rtype {
        "PractitionerRole" => {
            let code = res.child("code");
            let has_code = code.is_some_and(|c| {
                c.children()
                    .filter(|x| x.name() == "coding")
                    .any(|x| x.child_value("code").is_some())
            });
            let has_text = code.is_some_and(|c| c.child_value("text").is_some());
            if has_code == has_text {
                report.push(Issue::error(
                    "medcom-careCommunication-7",
                    loc(),
                    "a PractitionerRole author must have a role code or a role text, not both and not neither (medcom-careCommunication-7)",
                ));
            }
            let named = res
                .child("practitioner")
                .and_then(reference_of)
                .and_then(|r| b.resolve_as(r, "Practitioner"))
                .is_some_and(|p| p.child("name").is_some());
            if !named {
                report.push(Issue::error(
                    "medcom-careCommunication-8",
                    loc(),
                    "a payload author's Practitioner must have a name (medcom-careCommunication-8)",
                ));
            }
        }
        "Practitioner" if res.child("name").is_none() => report.push(Issue::error(
            "medcom-careCommunication-8",
            loc(),
            "a payload author's Practitioner must have a name (medcom-careCommunication-8)",
        )),
        _ => {}
    }
}

/// The organisation a PractitionerRole (organization) or CareTeam (managingOrganization) belongs to is `org`.
fn belongs_to(b: &Bundle<'_>, reference: &str, org: Option<Node<'_>>) -> bool {
    let Some(org) = org else { return true }; // unresolved header org is reported elsewhere
    let Some(res) = b
        .resolve(reference)
        .and_then(|i| b.entries.get(i))
        .and_then(|e| e.resource)
    else {
        return true; // unresolved reference is reported by the reference pass
    };
    ["organization", "managingOrganization"]
        .iter()
        .any(|field| {
            res.children()
                .filter(|c| c.name() == *field)
                .filter_map(reference_of)
                .filter_map(|r| b.resolve(r))
                .filter_map(|i| b.entries.get(i).and_then(|e| e.resource))
                .any(|o| o.id() == org.id())
        })
}
