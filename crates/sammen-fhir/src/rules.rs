//! The rule tables in `schemas/fhir/*.toml`, embedded at build time and parsed once.
//!
//! Data, not code: value sets, activity → Encounter class/status, cardinalities and prohibited elements
//! live in the tables so that a new MedCom version is mostly a data change. The generic engine that
//! applies `[[element]]` and `[[fixed]]` rules is here too.

use crate::bundle::Bundle;
use crate::path;
use sammen_model::{Issue, Report, Severity};
use sammen_xml::Node;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::OnceLock;

const VALUESETS: &str = include_str!("../../../schemas/fhir/valuesets.toml");
/// Profile tables by id (the `profile` an `[[event]]` names).
const PROFILES: [(&str, &str); 4] = [
    (
        "messaging",
        include_str!("../../../schemas/fhir/messaging.toml"),
    ),
    (
        "hospitalnotification-3",
        include_str!("../../../schemas/fhir/hospitalnotification-3.toml"),
    ),
    (
        "carecommunication-5",
        include_str!("../../../schemas/fhir/carecommunication-5.toml"),
    ),
    (
        "acknowledgement-2",
        include_str!("../../../schemas/fhir/acknowledgement-2.toml"),
    ),
];

/// Code systems and identifier systems.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Systems {
    pub event: String,
    pub activity: String,
    pub destination_use: String,
    pub category: String,
    pub ack_error: String,
    pub encounter_class: String,
    pub gln: String,
    pub sor: String,
    pub cpr: String,
    pub x_ecpr: String,
    pub d_ecpr_prefix: String,
}

/// Last path segment of extension URLs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extensions {
    pub destination_use: String,
    pub report_of_admission: String,
    pub leave_period: String,
    pub cc_sender: String,
    pub payload_author: String,
}

/// One message event code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub code: String,
    pub family: sammen_model::Family,
    pub profile: String,
}

/// Enumerated value sets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSets {
    pub destination_use: Vec<String>,
    pub response_code: Vec<String>,
    pub encounter_status_hn: Vec<String>,
    pub encounter_class_hn: Vec<String>,
    pub cc_category: Vec<String>,
    pub ack_error: Vec<String>,
    pub activity_all: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueSetFile {
    systems: Systems,
    extensions: Extensions,
    event: Vec<Event>,
    valuesets: ValueSets,
}

/// A cardinality rule: `min`..`max` matches of `path` in each resource of type `resource`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementRule {
    pub resource: String,
    pub path: String,
    #[serde(default)]
    pub min: u32,
    pub max: Option<u32>,
    pub code: Option<String>,
    #[serde(default)]
    pub warning: bool,
}

/// A fixed value: every `path` in `resource` must have `value`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedRule {
    pub resource: String,
    pub path: String,
    pub value: String,
    pub code: Option<String>,
}

/// HospitalNotification: what one Provenance.activity requires of the Encounter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityRule {
    pub code: String,
    pub use_case: String,
    pub class: Vec<String>,
    pub status: String,
    pub entity_role: Option<String>,
    #[serde(default)]
    pub report_of_admission: bool,
}

/// One profile table (`messaging.toml` or a family/version table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub id: String,
    pub header_profile: Option<String>,
    pub header_profile_code: Option<String>,
    pub provenance_profile: Option<String>,
    pub provenance_profile_code: Option<String>,
    #[serde(default = "yes")]
    pub cc_allowed: bool,
    pub cc_code: Option<String>,
    pub patient_count: Option<u32>,
    pub patient_count_code: Option<String>,
    #[serde(default)]
    pub patient_systems: Vec<String>,
    pub patient_system_code: Option<String>,
    /// Allowed Provenance activities (absent: any code of `activity_all`).
    pub activities: Option<Vec<String>>,
    pub activity_code: Option<String>,
    /// Allowed activities of the Provenance of the current message (absent: as `activities`).
    pub current_activities: Option<Vec<String>>,
    #[serde(default)]
    pub require_current_provenance: bool,
    pub definition_prefix: Option<String>,
    pub definition_code: Option<String>,
    #[serde(default)]
    pub element: Vec<ElementRule>,
    #[serde(default)]
    pub fixed: Vec<FixedRule>,
    #[serde(default)]
    pub activity: Vec<ActivityRule>,
}

fn yes() -> bool {
    true
}

/// All tables, parsed.
#[derive(Debug)]
pub struct Tables {
    pub systems: Systems,
    pub extensions: Extensions,
    pub events: Vec<Event>,
    pub valuesets: ValueSets,
    pub profiles: Vec<Profile>,
    /// HN activity code → index into that profile's `activity`.
    activity_index: HashMap<String, (usize, usize)>,
}

impl Tables {
    /// The base messaging profile.
    pub fn base(&self) -> &Profile {
        // `load` guarantees index 0 is `messaging`.
        &self.profiles[0]
    }

    /// A profile by id.
    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// The event entry for an eventCoding code.
    pub fn event(&self, code: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.code == code)
    }

    /// HN activity rule by code.
    pub fn activity(&self, code: &str) -> Option<&ActivityRule> {
        let &(p, a) = self.activity_index.get(code)?;
        self.profiles.get(p)?.activity.get(a)
    }
}

/// Parse every table. Errors name the table and the problem (used by the consistency test).
pub fn load() -> Result<Tables, String> {
    let vs: ValueSetFile = toml::from_str(VALUESETS).map_err(|e| format!("valuesets.toml: {e}"))?;
    let mut profiles = Vec::with_capacity(PROFILES.len());
    for (name, text) in PROFILES {
        let p: Profile = toml::from_str(text).map_err(|e| format!("{name}.toml: {e}"))?;
        if p.id != name {
            return Err(format!("{name}.toml: id is {:?}", p.id));
        }
        profiles.push(p);
    }
    let mut activity_index = HashMap::new();
    for (pi, p) in profiles.iter().enumerate() {
        for (ai, a) in p.activity.iter().enumerate() {
            activity_index.insert(a.code.clone(), (pi, ai));
        }
    }
    let t = Tables {
        systems: vs.systems,
        extensions: vs.extensions,
        events: vs.event,
        valuesets: vs.valuesets,
        profiles,
        activity_index,
    };
    check_consistency(&t)?;
    Ok(t)
}

/// Cross-table checks: every reference between tables points at something that exists.
fn check_consistency(t: &Tables) -> Result<(), String> {
    let all = &t.valuesets.activity_all;
    for e in &t.events {
        if t.profile(&e.profile).is_none() {
            return Err(format!(
                "event {} names unknown profile {}",
                e.code, e.profile
            ));
        }
    }
    for p in &t.profiles {
        for list in [&p.activities, &p.current_activities].into_iter().flatten() {
            if let Some(bad) = list.iter().find(|a| !all.contains(a)) {
                return Err(format!("{}: activity {bad} not in activity_all", p.id));
            }
        }
        for a in &p.activity {
            if !all.contains(&a.code) {
                return Err(format!("{}: activity {} not in activity_all", p.id, a.code));
            }
            if !t.valuesets.encounter_status_hn.contains(&a.status) {
                return Err(format!("{}: activity {} has unknown status", p.id, a.code));
            }
            if a.class.is_empty()
                || a.class
                    .iter()
                    .any(|c| !t.valuesets.encounter_class_hn.contains(c))
            {
                return Err(format!("{}: activity {} has bad class", p.id, a.code));
            }
            let prefix_role = if a.code.starts_with("revise-") {
                Some("revision")
            } else if a.code.starts_with("cancel-") {
                Some("removal")
            } else {
                None
            };
            if a.entity_role.as_deref() != prefix_role {
                return Err(format!("{}: activity {} entity_role", p.id, a.code));
            }
        }
        for s in &p.patient_systems {
            if !matches!(s.as_str(), "cpr" | "x_ecpr" | "d_ecpr") {
                return Err(format!("{}: unknown patient system {s}", p.id));
            }
        }
        for r in &p.element {
            if r.path.is_empty() || r.path.split('.').any(str::is_empty) {
                return Err(format!("{}: empty path segment in {}", p.id, r.path));
            }
            if r.max.is_some_and(|m| m < r.min) {
                return Err(format!("{}: {}.{} max < min", p.id, r.resource, r.path));
            }
        }
        if p.header_profile.is_some() != p.header_profile_code.is_some()
            || p.provenance_profile.is_some() != p.provenance_profile_code.is_some()
            || p.definition_prefix.is_some() != p.definition_code.is_some()
            || p.patient_count.is_some() != p.patient_count_code.is_some()
        {
            return Err(format!("{}: a rule without its code (or vice versa)", p.id));
        }
        if !p.cc_allowed && p.cc_code.is_none() {
            return Err(format!("{}: cc prohibited without cc_code", p.id));
        }
    }
    if t.profiles.first().map(|p| p.id.as_str()) != Some("messaging") {
        return Err("messaging.toml must be the first profile".into());
    }
    Ok(())
}

/// The tables, parsed on first use. The tables are compiled in and tested, so failing here is a build
/// defect; it is reported as an issue rather than a panic.
pub fn tables() -> Result<&'static Tables, &'static str> {
    static T: OnceLock<Result<Tables, String>> = OnceLock::new();
    T.get_or_init(load).as_ref().map_err(String::as_str)
}

/// Count matches of a dotted path below `node` (no allocation).
pub fn count_path(node: Node<'_>, path: &str) -> u32 {
    match path.split_once('.') {
        None => node
            .children_named_str(path)
            .filter(|c| present(*c))
            .count() as u32,
        Some((head, rest)) => node
            .children_named_str(head)
            .map(|c| count_path(c, rest))
            .sum(),
    }
}

/// Call `f` on every match of a dotted path below `node`.
pub fn for_each_path<'d>(node: Node<'d>, path: &str, f: &mut dyn FnMut(Node<'d>)) {
    match path.split_once('.') {
        None => node.children_named_str(path).for_each(&mut *f),
        Some((head, rest)) => {
            for c in node.children_named_str(head) {
                for_each_path(c, rest, f);
            }
        }
    }
}

/// An element counts as present when it has a non-empty `value` or any content (children, text, narrative).
pub fn present(n: Node<'_>) -> bool {
    n.value().is_some_and(|v| !v.trim().is_empty()) || n.has_content()
}

/// Name-matching children in the node's namespace, for a `&str` of any lifetime.
trait ChildrenStr<'d> {
    fn children_named_str<'a>(&self, local: &'a str) -> impl Iterator<Item = Node<'d>> + 'a
    where
        'd: 'a;
}

impl<'d> ChildrenStr<'d> for Node<'d> {
    fn children_named_str<'a>(&self, local: &'a str) -> impl Iterator<Item = Node<'d>> + 'a
    where
        'd: 'a,
    {
        let ns = self.namespace();
        self.children()
            // The XHTML narrative `div` is an opaque node in its own namespace.
            .filter(move |c| c.name() == local && (c.namespace() == ns || c.is_opaque()))
    }
}

/// Apply a profile's `[[element]]` and `[[fixed]]` rules to the bundle.
pub fn apply(profile: &Profile, b: &Bundle<'_>, report: &mut Report) {
    for rule in &profile.element {
        for_resources(b, &rule.resource, &mut |res| {
            let n = count_path(res, &rule.path);
            let (code, text) = if n < rule.min {
                (
                    rule.code.as_deref().unwrap_or("fhir.cardinality.min"),
                    format!(
                        "{}.{} is required at least {} time(s) by {}",
                        rule.resource, rule.path, rule.min, profile.id
                    ),
                )
            } else if rule.max.is_some_and(|m| n > m) {
                let max = rule.max.unwrap_or(0);
                let default = if max == 0 {
                    "fhir.element.prohibited"
                } else {
                    "fhir.cardinality.max"
                };
                let text = if max == 0 {
                    format!(
                        "{}.{} is not allowed (0..0) by {}",
                        rule.resource, rule.path, profile.id
                    )
                } else {
                    format!(
                        "{}.{} may occur at most {} time(s) in {}",
                        rule.resource, rule.path, max, profile.id
                    )
                };
                (rule.code.as_deref().unwrap_or(default), text)
            } else {
                return;
            };
            let loc = path::of(res, b.root) + "." + &rule.path;
            let sev = if rule.warning {
                Severity::Warning
            } else {
                Severity::Error
            };
            report.push(Issue {
                severity: sev,
                code: code.to_owned(),
                location: loc,
                text,
            });
        });
    }
    for rule in &profile.fixed {
        for_resources(b, &rule.resource, &mut |res| {
            for_each_path(res, &rule.path, &mut |n| {
                if n.value() != Some(rule.value.as_str()) {
                    report.push(Issue::error(
                        rule.code.as_deref().unwrap_or("fhir.value.fixed"),
                        path::of(n, b.root),
                        format!(
                            "{}.{} must have the fixed value required by {}",
                            rule.resource, rule.path, profile.id
                        ),
                    ));
                }
            });
        });
    }
}

/// The resources a rule's `resource` selects.
fn for_resources<'d>(b: &Bundle<'d>, resource: &str, f: &mut dyn FnMut(Node<'d>)) {
    match resource {
        "Bundle" => f(b.root),
        "MessageHeader" => {
            if let Some(h) = b.header {
                f(h);
            }
        }
        t => b.entries.iter().filter(|e| e.rtype == t).for_each(|e| {
            if let Some(r) = e.resource {
                f(r)
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_parses_and_is_consistent() {
        let t = load().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.base().id, "messaging");
        for e in &t.events {
            assert!(t.profile(&e.profile).is_some());
        }
        // Every HN use case of research/medcom.md §3 except the MORS family (which keeps the activity).
        let hn = t.profile("hospitalnotification-3").expect("hn table");
        assert_eq!(hn.activity.len(), 18);
        assert_eq!(
            t.activity("cancel-start-leave-inpatient")
                .map(|a| a.status.as_str()),
            Some("in-progress")
        );
        assert!(tables().is_ok());
    }
}
