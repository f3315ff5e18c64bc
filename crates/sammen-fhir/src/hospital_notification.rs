//! HospitalNotification 3.x rules that need logic: the Encounter status/class each activity requires
//! (table-driven), deceased, leave period (medcom-hospitalNotification-6), reportOfAdmissionFlag,
//! entity roles of follow-ups and cancellations. Cardinalities and 0..0 elements are in the table.

use crate::bundle::{reference_of, Bundle};
use crate::messaging::{extension, Ctx};
use crate::path;
use crate::rules::Tables;
use sammen_model::{ident, Issue, Report};

pub fn check(t: &Tables, b: &Bundle<'_>, ctx: &Ctx<'_, '_>, report: &mut Report) {
    let root = b.root;
    let Some(h) = b.header else { return };
    let focus = h.child("focus").and_then(reference_of);
    let enc = match focus
        .and_then(|r| b.resolve(r))
        .and_then(|i| b.entries.get(i))
    {
        Some(e) if e.rtype == "Encounter" => e.resource,
        Some(_) => {
            report.push(Issue::error(
                "hn.focus.type",
                path::child(h, root, "focus"),
                "MessageHeader.focus must reference the HospitalNotification Encounter",
            ));
            None
        }
        None => None,
    }
    .or_else(|| b.of_type("Encounter").next());
    let Some(enc) = enc else {
        report.push(Issue::error(
            "fhir.cardinality.min",
            "Bundle.entry",
            "a HospitalNotification must contain its Encounter",
        ));
        return;
    };
    let rule = ctx.current_activity.and_then(|a| t.activity(a));
    let deceased = b.of_type("Patient").next().is_some_and(|p| {
        p.child_value("deceasedBoolean") == Some("true") || p.child("deceasedDateTime").is_some()
    });

    let status = enc.child_value("status");
    if let Some(s) = status {
        if !t.valuesets.encounter_status_hn.iter().any(|v| v == s) {
            report.push(Issue::error(
                "fhir.valueset.encounter-status",
                path::child(enc, root, "status"),
                "Encounter.status must be in-progress, onleave, finished or entered-in-error",
            ));
        }
    }
    let class = enc.child("class");
    let class_code = class.and_then(|c| c.child_value("code"));
    if let Some(c) = class {
        let ok = c.child_value("system") == Some(t.systems.encounter_class.as_str())
            && class_code.is_some_and(|k| t.valuesets.encounter_class_hn.iter().any(|v| v == k));
        if !ok {
            report.push(Issue::error(
                "fhir.valueset.encounter-class",
                path::of(c, root),
                "Encounter.class must be IMP or EMER from v3-ActCode",
            ));
        }
    }

    if let Some(rule) = rule {
        if deceased {
            // MORS / RE_MORS keep the activity; the stay ends with the death.
            if status.is_some() && status != Some("finished") {
                report.push(Issue::error(
                    "hn.deceased.status",
                    path::child(enc, root, "status"),
                    "when Patient.deceased is set (MORS/RE_MORS) Encounter.status must be 'finished'",
                ));
            }
        } else if status.is_some() && status != Some(rule.status.as_str()) {
            report.push(Issue::error(
                "hn.encounter.status",
                path::child(enc, root, "status"),
                format!(
                    "use case {} requires Encounter.status '{}'",
                    rule.use_case, rule.status
                ),
            ));
        }
        if class_code.is_some_and(|k| !rule.class.iter().any(|c| c == k)) {
            report.push(Issue::error(
                "hn.encounter.class",
                path::child(enc, root, "class"),
                format!(
                    "use case {} requires Encounter.class {}",
                    rule.use_case,
                    rule.class.join(" or ")
                ),
            ));
        }
        if let (Some(role), Some(p)) = (&rule.entity_role, ctx.current_provenance) {
            let has = p
                .children()
                .filter(|c| c.name() == "entity")
                .any(|e| e.child_value("role") == Some(role.as_str()));
            if !has {
                report.push(Issue::error(
                    "hn.provenance.entity-role",
                    path::child(p, root, "entity"),
                    format!(
                        "use case {} requires a Provenance.entity with role '{role}' pointing at the earlier message",
                        rule.use_case
                    ),
                ));
            }
        }
        if let Some(ext) = extension(h, &t.extensions.report_of_admission) {
            if !rule.report_of_admission {
                report.push(Issue::error(
                    "hn.report-of-admission.not-allowed",
                    path::of(ext, root),
                    format!(
                        "reportOfAdmissionFlag is only allowed on admissions (STIN/STAA), not on {}",
                        rule.use_case
                    ),
                ));
            }
        }
    }

    if status == Some("onleave") {
        let start = extension(enc, &t.extensions.leave_period)
            .and_then(|e| e.at(&["valuePeriod", "start"]))
            .and_then(|s| s.value());
        if start.is_none() {
            report.push(Issue::error(
                "medcom-hospitalNotification-6",
                path::child(enc, root, "extension"),
                "when Encounter.status is 'onleave' the leave period start must be present (medcom-hospitalNotification-6)",
            ));
        }
    }
    if status == Some("finished") && enc.at(&["period", "end"]).is_none() {
        report.push(Issue::error(
            "hn.encounter.period-end",
            path::child(enc, root, "period.end"),
            "a finished Encounter (discharge or death) must have period.end",
        ));
    }
    for eoc in enc.children().filter(|c| c.name() == "episodeOfCare") {
        for id in eoc.children().filter(|c| c.name() == "identifier") {
            if let Some(v) = id.child_value("value") {
                if ident::check_uuid(v).is_some() {
                    report.push(Issue::warning(
                        "hn.episode-of-care.uuid",
                        path::child(id, root, "value"),
                        "the episodeOfCare identifier should be a UUID",
                    ));
                }
            }
        }
    }
    for p in b.of_type("Provenance") {
        if let Some(r) = p.child("target").and_then(reference_of) {
            let to_header = b.resolve(r).and_then(|i| b.entries.get(i)).map_or_else(
                || r.starts_with("MessageHeader/"),
                |e| e.rtype == "MessageHeader",
            );
            if !to_header {
                report.push(Issue::error(
                    "hn.provenance.target",
                    path::child(p, root, "target.reference"),
                    "Provenance.target must reference a MessageHeader (this or an earlier message)",
                ));
            }
        }
    }
}
