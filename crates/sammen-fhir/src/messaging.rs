//! Generic MedCom messaging rules (every family): Bundle shape, MessageHeader, destinations, sender and
//! receiver organisations, Provenance, references, patient identifiers, narrative, ids.

use crate::bundle::{reference_of, Bundle};
use crate::path;
use crate::rules::{self, Profile, Tables};
use sammen_model::ident::{self, IdProblem};
use sammen_model::{Issue, Party, PatientId, Report};
use sammen_xml::Node;

/// What the generic pass learned, for the family checks.
pub struct Ctx<'d, 't> {
    /// The profile table for the message's event (the base table when the event is unknown).
    pub profile: &'t Profile,
    /// The Provenance whose target is this message's MessageHeader.
    pub current_provenance: Option<Node<'d>>,
    /// Its activity code.
    pub current_activity: Option<&'d str>,
    /// Organisation the header's sender resolves to.
    pub sender_org: Option<Node<'d>>,
    /// Organisation destination\[primary\].receiver resolves to.
    pub receiver_org: Option<Node<'d>>,
}

/// Push an identifier problem with its own code/severity/text.
pub fn push_id(report: &mut Report, p: IdProblem, loc: String) {
    report.push(Issue {
        severity: p.severity(),
        code: p.code().to_owned(),
        location: loc,
        text: p.text().to_owned(),
    });
}

/// Last path segment of a URL (extension matching).
pub fn url_tail(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// The first `extension` child of `n` whose url ends with `tail`.
pub fn extension<'d>(n: Node<'d>, tail: &str) -> Option<Node<'d>> {
    n.children()
        .filter(|c| c.name() == "extension")
        .find(|c| c.attr("url").is_some_and(|u| url_tail(u) == tail))
}

/// True when some `meta.profile` of `res` starts with `prefix` (versioned canonicals `...|3.0` match).
pub fn has_profile(res: Node<'_>, prefix: &str) -> bool {
    res.child("meta").is_some_and(|m| {
        m.children()
            .filter(|c| c.name() == "profile")
            .any(|p| p.value().is_some_and(|v| v.starts_with(prefix)))
    })
}

/// Run the generic rules and fill the report's identity fields.
pub fn check<'d, 't>(t: &'t Tables, b: &Bundle<'d>, report: &mut Report) -> Ctx<'d, 't> {
    let root = b.root;
    let mut profile = t.base();

    // Bundle
    report.envelope_id = root.child_value("id").map(str::to_owned);
    if let Some(id) = root.child("id") {
        uuid_warning(report, id, root, "Bundle.id");
    }
    match root.child_value("type") {
        Some("message") => {}
        Some(_) => report.push(Issue::error(
            "fhir.bundle.type",
            path::child(root, root, "type"),
            "Bundle.type must be 'message' for a MedCom message",
        )),
        None => {} // cardinality rule reports it
    }

    // MessageHeader first (medcom-messaging-1)
    let first_is_header = b
        .entries
        .first()
        .is_some_and(|e| e.rtype == "MessageHeader");
    if !first_is_header {
        let loc = b
            .entries
            .first()
            .map_or_else(|| "Bundle.entry".to_owned(), |e| path::of(e.node, root));
        report.push(Issue::error(
            "medcom-messaging-1",
            loc,
            "entry[0] must be the MessageHeader (medcom-messaging-1)",
        ));
    }
    let mut ctx = Ctx {
        profile,
        current_provenance: None,
        current_activity: None,
        sender_org: None,
        receiver_org: None,
    };
    let event_code = b
        .header
        .and_then(|h| h.at(&["eventCoding", "code"])?.value());
    if let Some(h) = b.header {
        report.message_id = h.child_value("id").map(str::to_owned);
        if let Some(id) = h.child("id") {
            uuid_warning(report, id, root, "MessageHeader.id");
        }
        // eventCoding
        if let Some(ec) = h.child("eventCoding") {
            let system_ok = ec.child_value("system") == Some(t.systems.event.as_str());
            match event_code.and_then(|c| t.event(c)) {
                Some(ev) if system_ok => {
                    report.family = Some(ev.family);
                    if let Some(p) = t.profile(&ev.profile) {
                        profile = p;
                    }
                }
                _ => report.push(Issue::error(
                    "fhir.valueset.event",
                    path::of(ec, root),
                    "MessageHeader.eventCoding must be a code of medcom-messaging-eventCodes with its system",
                )),
            }
        }
        ctx.profile = profile;
        header_profile(profile, h, root, report);
        destinations(t, profile, b, h, report, &mut ctx);
        if let Some(s) = h.child("sender") {
            ctx.sender_org = org_ref(b, s, report);
        }
        if let Some(org) = ctx.sender_org {
            report.sender = party(t, org, root, report, "sender");
        }
    }
    organizations(t, b, report);
    references(b, report);
    provenances(t, profile, b, report, &mut ctx);
    patients(t, profile, b, report);
    resource_ids(b, report);
    report.event = match profile.id.as_str() {
        "messaging" => event_code.map(str::to_owned),
        _ => ctx.current_activity.map(str::to_owned),
    };

    rules::apply(t.base(), b, report);
    if profile.id != t.base().id {
        rules::apply(profile, b, report);
    }
    ctx
}

fn header_profile(profile: &Profile, h: Node<'_>, root: Node<'_>, report: &mut Report) {
    if let (Some(p), Some(code)) = (&profile.header_profile, &profile.header_profile_code) {
        if !has_profile(h, p) {
            report.push(Issue::error(
                code.clone(),
                path::child(h, root, "meta.profile"),
                format!(
                    "the MessageHeader must declare the {} profile ({code})",
                    url_tail(p)
                ),
            ));
        }
    }
}

/// A non-UUID id is only a warning: MedCom's own examples use ids such as `t33cef33-...`.
fn uuid_warning(report: &mut Report, id: Node<'_>, root: Node<'_>, what: &str) {
    if let Some(v) = id.value() {
        if ident::check_uuid(v).is_some() {
            report.push(Issue::warning(
                "fhir.id.uuid",
                path::of(id, root),
                format!("{what} should be a UUID (8-4-4-4-12 hexadecimal digits)"),
            ));
        }
    }
}

fn resource_ids(b: &Bundle<'_>, report: &mut Report) {
    for e in &b.entries {
        let Some(res) = e.resource else {
            report.push(Issue::error(
                "fhir.entry.resource",
                path::of(e.node, b.root),
                "every Bundle.entry must contain a resource",
            ));
            continue;
        };
        match res.child("id") {
            Some(id) if id.value().is_some_and(|v| !v.is_empty()) => {
                // entry[0]'s id was already looked at as MessageHeader.id
                if b.header.is_none_or(|h| h.id() != res.id()) {
                    uuid_warning(report, id, b.root, "resource id");
                }
            }
            _ => report.push(Issue::error(
                "fhir.resource.id",
                path::child(res, b.root, "id"),
                "every resource in a MedCom message must have an id",
            )),
        }
    }
}

/// Resolve a Reference element to a bundled Organization (issues for other types; unresolved ones are
/// reported by the reference pass).
fn org_ref<'d>(b: &Bundle<'d>, r: Node<'d>, report: &mut Report) -> Option<Node<'d>> {
    let reference = reference_of(r)?;
    let e = b.entries.get(b.resolve(reference)?)?;
    if e.rtype != "Organization" {
        report.push(Issue::error(
            "fhir.reference.type",
            path::child(r, b.root, "reference"),
            "sender and receiver must reference an Organization",
        ));
        return None;
    }
    e.resource
}

fn destinations<'d>(
    t: &Tables,
    profile: &Profile,
    b: &Bundle<'d>,
    h: Node<'d>,
    report: &mut Report,
    ctx: &mut Ctx<'d, '_>,
) {
    let root = b.root;
    let mut primaries = 0;
    for d in h.children().filter(|c| c.name() == "destination") {
        let use_code = match extension(d, &t.extensions.destination_use)
            .and_then(|e| e.child("valueCoding"))
        {
            None => {
                report.push(Issue::error(
                    "fhir.destination.use",
                    path::child(d, root, "extension"),
                    "each destination must carry the destination-use extension (primary or cc)",
                ));
                None
            }
            Some(vc) => {
                let code = vc.child_value("code");
                let ok = vc.child_value("system") == Some(t.systems.destination_use.as_str())
                    && code.is_some_and(|c| t.valuesets.destination_use.iter().any(|v| v == c));
                if !ok {
                    report.push(Issue::error(
                        "fhir.valueset.destination-use",
                        path::of(vc, root),
                        "destination use must be 'primary' or 'cc' from medcom-messaging-destinationUse",
                    ));
                    None
                } else {
                    code
                }
            }
        };
        let org = d.child("receiver").and_then(|r| org_ref(b, r, report));
        match use_code {
            Some("primary") => {
                primaries += 1;
                if primaries == 1 {
                    ctx.receiver_org = org;
                    if let Some(o) = org {
                        report.receiver = party(t, o, root, report, "receiver");
                    }
                }
            }
            Some(_) if !profile.cc_allowed => {
                let code = profile
                    .cc_code
                    .clone()
                    .unwrap_or_else(|| "fhir.destination.cc-prohibited".to_owned());
                report.push(Issue::error(
                    code,
                    path::of(d, root),
                    format!("a cc destination is not allowed in {}", profile.id),
                ));
            }
            Some(_) => {
                if let Some(o) = org {
                    party(t, o, root, report, "cc receiver");
                }
            }
            None => {}
        }
    }
    if primaries != 1 {
        report.push(Issue::error(
            "fhir.destination.primary",
            path::child(h, root, "destination"),
            "the MessageHeader must have exactly one destination with use 'primary'",
        ));
    }
}

/// GLN and SOR of a sender/receiver organisation: both are required (MedComMessagingOrganization).
/// Value checks are done for every organisation in `organizations`.
fn party(t: &Tables, org: Node<'_>, root: Node<'_>, report: &mut Report, role: &str) -> Party {
    let mut p = Party::default();
    for id in org.children().filter(|c| c.name() == "identifier") {
        let sys = id.child_value("system");
        let val = id.child_value("value");
        if sys == Some(t.systems.gln.as_str()) && p.gln.is_none() {
            p.gln = val.map(str::to_owned);
        } else if sys == Some(t.systems.sor.as_str()) && p.sor.is_none() {
            p.sor = val.map(str::to_owned);
        }
    }
    if p.gln.is_none() {
        report.push(Issue::error(
            "fhir.organization.gln",
            path::child(org, root, "identifier"),
            format!("the {role} organisation must have a GLN identifier (system https://www.gs1.org/gln)"),
        ));
    }
    if p.sor.is_none() {
        report.push(Issue::error(
            "fhir.organization.sor",
            path::child(org, root, "identifier"),
            format!("the {role} organisation must have a SOR identifier (system urn:oid:1.2.208.176.1.1)"),
        ));
    }
    p
}

fn organizations(t: &Tables, b: &Bundle<'_>, report: &mut Report) {
    for org in b.of_type("Organization") {
        for id in org.children().filter(|c| c.name() == "identifier") {
            let sys = id.child_value("system");
            let check: fn(&str) -> Option<IdProblem> = if sys == Some(t.systems.gln.as_str()) {
                ident::check_gln
            } else if sys == Some(t.systems.sor.as_str()) {
                ident::check_sor
            } else {
                continue;
            };
            let problem = match id.child_value("value") {
                Some(v) => check(v),
                None => {
                    report.push(Issue::error(
                        "fhir.cardinality.min",
                        path::child(id, b.root, "value"),
                        "an Organization identifier must have a value",
                    ));
                    None
                }
            };
            if let Some(p) = problem {
                push_id(report, p, path::child(id, b.root, "value"));
            }
        }
    }
}

/// Every Reference resolves to an entry, except Provenance.target and Provenance.entity.what, which
/// point at earlier messages of the thread by design.
fn references(b: &Bundle<'_>, report: &mut Report) {
    for e in &b.entries {
        let Some(res) = e.resource else { continue };
        let is_prov = e.rtype == "Provenance";
        for c in res.children() {
            if is_prov && matches!(c.name(), "target" | "entity") {
                continue;
            }
            walk_refs(b, c, report);
        }
    }
}

fn walk_refs(b: &Bundle<'_>, n: Node<'_>, report: &mut Report) {
    for c in n.children() {
        if c.name() == "reference" {
            if let Some(v) = c.value() {
                if b.resolve(v).is_none() {
                    report.push(Issue::error(
                        "fhir.reference.unresolved",
                        path::of(c, b.root),
                        "reference does not resolve to a resource in the bundle (all references must be bundled)",
                    ));
                }
            }
        } else if !c.is_opaque() {
            walk_refs(b, c, report);
        }
    }
}

fn provenances<'d>(
    t: &Tables,
    profile: &Profile,
    b: &Bundle<'d>,
    report: &mut Report,
    ctx: &mut Ctx<'d, '_>,
) {
    let root = b.root;
    let mut any = false;
    let allowed: &[String] = profile
        .activities
        .as_deref()
        .unwrap_or(&t.valuesets.activity_all);
    let activity_code = profile
        .activity_code
        .as_deref()
        .unwrap_or("fhir.valueset.activity");
    let cc = profile.id == "carecommunication-5";
    for p in b.of_type("Provenance") {
        any = true;
        if let (Some(prof), Some(code)) = (
            &profile.provenance_profile,
            &profile.provenance_profile_code,
        ) {
            if !has_profile(p, prof) {
                report.push(Issue::error(
                    code.clone(),
                    path::child(p, root, "meta.profile"),
                    format!(
                        "every Provenance must declare the {} profile ({code})",
                        url_tail(prof)
                    ),
                ));
            }
        }
        let coding = p.at(&["activity", "coding"]);
        let act = coding.and_then(|c| c.child_value("code"));
        if let Some(c) = coding {
            // HospitalNotification: the activity table is the value set.
            let known = |a: &str| {
                if profile.activities.is_none() && !profile.activity.is_empty() {
                    profile.activity.iter().any(|x| x.code == a)
                } else {
                    allowed.iter().any(|x| x == a)
                }
            };
            let ok = c.child_value("system") == Some(t.systems.activity.as_str())
                && act.is_some_and(known);
            if !ok {
                report.push(Issue::error(
                    activity_code,
                    path::of(c, root),
                    format!("Provenance.activity must be a code allowed in {} (medcom-messaging-activityCodes)", profile.id),
                ));
            }
        }
        let current = p
            .child("target")
            .and_then(reference_of)
            .is_some_and(|r| b.is_current_header(r));
        if current && ctx.current_provenance.is_none() {
            ctx.current_provenance = Some(p);
            ctx.current_activity = act;
            if let (Some(list), Some(a), Some(c)) = (&profile.current_activities, act, coding) {
                if !list.iter().any(|x| x == a) {
                    report.push(Issue::error(
                        "fhir.valueset.activity",
                        path::of(c, root),
                        format!("the Provenance of this message must have an activity allowed for it in {}", profile.id),
                    ));
                }
            }
        }
        for ent in p.children().filter(|c| c.name() == "entity") {
            let what = ent.child("what");
            let ok = what.is_some_and(|w| {
                w.child_value("reference").is_some() || w.at(&["identifier", "value"]).is_some()
            });
            if !ok {
                report.push(Issue::error(
                    if cc {
                        "medcom-careCommunication-14"
                    } else {
                        "fhir.provenance.entity-what"
                    },
                    path::child(ent, root, "what"),
                    "Provenance.entity.what must have a reference or an identifier",
                ));
            }
        }
    }
    if !any {
        report.push(Issue::error(
            "medcom-messaging-2",
            "Bundle.entry",
            "a MedCom message must contain at least one Provenance (medcom-messaging-2)",
        ));
    } else if profile.require_current_provenance && ctx.current_provenance.is_none() {
        report.push(Issue::error(
            "fhir.provenance.current",
            "Bundle.entry",
            "one Provenance.target must reference this message's MessageHeader",
        ));
    }
}

fn patients(t: &Tables, profile: &Profile, b: &Bundle<'_>, report: &mut Report) {
    let root = b.root;
    let mut count = 0u32;
    for p in b.of_type("Patient") {
        count += 1;
        let mut known = false;
        for id in p.children().filter(|c| c.name() == "identifier") {
            let Some(sys) = id.child_value("system") else {
                continue;
            };
            let val = id.child_value("value").unwrap_or("");
            let (kind, check): (&str, fn(&str) -> Option<IdProblem>) = if sys == t.systems.cpr {
                ("cpr", ident::check_cpr)
            } else if sys == t.systems.x_ecpr {
                ("x_ecpr", ident::check_ecpr)
            } else if sys.starts_with(&t.systems.d_ecpr_prefix) {
                ("d_ecpr", ident::check_ecpr)
            } else {
                continue;
            };
            known = true;
            if !profile.patient_systems.iter().any(|s| s == kind) {
                report.push(Issue::error(
                    profile
                        .patient_system_code
                        .as_deref()
                        .unwrap_or("fhir.patient.identifier-system"),
                    path::child(id, root, "system"),
                    format!("this patient identifier kind is not allowed in {} (HospitalNotification: CPR only)", profile.id),
                ));
            }
            if let Some(problem) = check(val) {
                push_id(report, problem, path::child(id, root, "value"));
            }
            if report.patient.is_none() && !val.is_empty() {
                report.patient = Some(PatientId::new(sys, val));
            }
        }
        if !known {
            report.push(Issue::error(
                profile
                    .patient_system_code
                    .as_deref()
                    .unwrap_or("fhir.patient.identifier-system"),
                path::child(p, root, "identifier"),
                "the Patient must be identified by CPR (urn:oid:1.2.208.176.1.2) or an allowed eCPR system",
            ));
        }
    }
    if let (Some(n), Some(code)) = (profile.patient_count, &profile.patient_count_code) {
        if count != n {
            report.push(Issue::error(
                code.clone(),
                "Bundle.entry",
                format!("the message must contain exactly {n} Patient resource(s) ({code})"),
            ));
        }
    }
}
