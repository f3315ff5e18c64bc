//! What can be checked of deploy/ without running it: every JSON and YAML file parses, every `sammen_*`
//! metric that an alert or a dashboard panel names exists in the registry, the compose file runs a
//! three-node RabbitMQ cluster, the StatefulSet is ready on /readyz, the unit and image are hardened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sammen_telemetry::{Telemetry, TelemetryConfig};
use serde_norway::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// All documents of a YAML file, merge keys (`<<: *anchor`) applied.
fn yaml_docs(text: &str) -> Vec<Yaml> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| {
            let mut v: Yaml = serde::Deserialize::deserialize(d).unwrap();
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

fn yaml(rel: &str) -> Yaml {
    let mut docs = yaml_docs(&read(rel));
    assert_eq!(docs.len(), 1, "{rel}");
    docs.remove(0)
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap()
}

#[test]
fn every_json_and_yaml_file_parses() {
    let mut all = Vec::new();
    files(&deploy(), &mut all);
    let mut n = 0;
    for p in &all {
        let text = std::fs::read_to_string(p).unwrap();
        match p.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
            Some("yml" | "yaml") => {
                let docs: Result<Vec<Yaml>, _> = serde_norway::Deserializer::from_str(&text)
                    .map(serde::Deserialize::deserialize)
                    .collect();
                let docs = docs.unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(!docs.is_empty(), "{}", p.display());
                n += 1;
            }
            _ => {}
        }
    }
    assert!(n >= 12, "only {n} JSON/YAML files under deploy/");
}

/// `sammen_*` identifiers in a PromQL expression, histogram suffixes stripped when the base is a
/// histogram of ours.
fn metric_names(expr: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("sammen_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let len = expr[start..]
            .bytes()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
            .count();
        if before_ok {
            let mut name = &expr[start..start + len];
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if histograms.contains(base) {
                        name = base;
                    }
                }
            }
            out.insert(name.to_owned());
        }
        i = start + len.max(1);
    }
    out
}

struct Registry {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
}

fn registry() -> Registry {
    let t = Telemetry::new(&TelemetryConfig::default()).unwrap();
    let names = t.metrics().names().map(str::to_owned).collect();
    let histograms = t.metrics().histogram_names().map(str::to_owned).collect();
    Registry { names, histograms }
}

fn check_exprs(what: &str, exprs: &[String], reg: &Registry) -> BTreeSet<String> {
    assert!(!exprs.is_empty(), "{what}: no expressions");
    let mut used = BTreeSet::new();
    for e in exprs {
        for name in metric_names(e, &reg.histograms) {
            assert!(
                reg.names.contains(&name),
                "{what}: `{name}` is not a sammen-telemetry metric (in `{e}`)"
            );
            used.insert(name);
        }
    }
    used
}

#[test]
fn alert_rules_name_existing_metrics_and_cover_the_issue() {
    let reg = registry();
    let alerts = yaml("prometheus/alerts.yml");
    let mut exprs = Vec::new();
    let mut names = Vec::new();
    for g in alerts["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(
                r["labels"]["severity"].as_str().is_some(),
                "{name}: severity"
            );
            assert!(
                r["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            exprs.push(r["expr"].as_str().unwrap().to_owned());
            names.push(name.to_owned());
        }
    }
    let used = check_exprs("alerts.yml", &exprs, &reg);
    for m in [
        "sammen_outbox_depth",
        "sammen_outbox_oldest_age_seconds",
        "sammen_outbox_overdue",
        "sammen_bus_connected",
        "sammen_bus_reconnects_total",
        "sammen_audit_checkpoint_timestamp_seconds",
        "sammen_certificate_expiry_days",
        "sammen_messages_rejected_total",
    ] {
        assert!(used.contains(m), "no alert on {m}");
    }
    let unique: BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate alert names");
    // Prometheus loads the same file the compose stack mounts.
    let prom = yaml("prometheus/prometheus.yml");
    assert_eq!(
        prom["rule_files"][0].as_str(),
        Some("/etc/prometheus/alerts.yml")
    );
}

fn dashboard_exprs(panels: &[serde_json::Value], out: &mut Vec<String>) {
    for p in panels {
        if let Some(targets) = p["targets"].as_array() {
            for t in targets {
                out.push(t["expr"].as_str().unwrap().to_owned());
            }
        }
        if let Some(inner) = p["panels"].as_array() {
            dashboard_exprs(inner, out);
        }
    }
}

#[test]
fn dashboard_queries_name_existing_metrics() {
    let reg = registry();
    let d = json("grafana/sammen-dashboard.json");
    let panels = d["panels"].as_array().unwrap();
    let ids: BTreeSet<_> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    let mut exprs = Vec::new();
    dashboard_exprs(panels, &mut exprs);
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let used = check_exprs("sammen-dashboard.json", &exprs, &reg);
    for m in [
        "sammen_messages_accepted_total",
        "sammen_messages_rejected_total",
        "sammen_outbox_depth",
        "sammen_outbox_oldest_age_seconds",
        "sammen_publish_confirm_duration_seconds",
        "sammen_accept_to_delivered_seconds",
        "sammen_accept_to_acknowledged_seconds",
        "sammen_bus_connected",
        "sammen_certificate_expiry_days",
        "sammen_audit_checkpoint_timestamp_seconds",
    ] {
        assert!(used.contains(m), "no panel shows {m}");
    }
}

#[test]
fn the_metric_name_parser_strips_histogram_suffixes_only() {
    let reg = registry();
    let got = metric_names(
        "histogram_quantile(0.9, rate(sammen_publish_confirm_duration_seconds_bucket[5m])) + sammen_messages_received_total + notsammen_x",
        &reg.histograms,
    );
    let want: BTreeSet<String> = [
        "sammen_publish_confirm_duration_seconds",
        "sammen_messages_received_total",
    ]
    .map(String::from)
    .into();
    assert_eq!(got, want);
    // A made-up name is reported as such.
    let bad = metric_names("sammen_outbox_depth_count", &reg.histograms);
    assert!(!reg.names.contains(bad.iter().next().unwrap()));
}

#[test]
fn compose_runs_sammen_a_three_node_rabbitmq_cluster_prometheus_and_grafana() {
    let c = yaml("docker/compose.yaml");
    let services = c["services"].as_mapping().unwrap();
    let rabbits: Vec<&Yaml> = services
        .values()
        .filter(|s| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("rabbitmq:"))
        })
        .collect();
    assert_eq!(rabbits.len(), 3, "three RabbitMQ nodes");
    let hosts: BTreeSet<&str> = rabbits
        .iter()
        .map(|r| r["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 3, "distinct node names");
    for key in ["sammen", "prometheus", "grafana"] {
        assert!(services.contains_key(key), "service {key}");
    }
    // Classic peer discovery names exactly these nodes.
    let conf = read("docker/rabbitmq/rabbitmq.conf");
    assert!(conf.contains("peer_discovery_backend = classic_config"));
    for h in &hosts {
        assert!(
            conf.contains(&format!("= rabbit@{h}")),
            "{h} not in classic_config"
        );
    }
    // Every node gets the shared cookie, the topology definitions and its own data volume.
    let mut data: BTreeSet<String> = BTreeSet::new();
    for r in &rabbits {
        assert!(r["environment"]["ERLANG_COOKIE"].as_str().is_some());
        let vols: Vec<&str> = r["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(vols
            .iter()
            .any(|v| v.starts_with("../rabbitmq/definitions.json:")));
        data.extend(
            vols.iter()
                .filter(|v| v.ends_with(":/var/lib/rabbitmq"))
                .map(|v| (*v).to_owned()),
        );
    }
    assert_eq!(data.len(), 3);
    // Bind-mounted files exist (relative to deploy/docker).
    for s in services.values() {
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if src.starts_with('.') {
                assert!(deploy().join("docker").join(src).exists(), "{src}");
            }
        }
    }
    // The definitions declare quorum inboxes.
    let defs = json("rabbitmq/definitions.json");
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["arguments"]["x-queue-type"] == "quorum"));
}

fn k8s(kind: &str) -> Yaml {
    let mut all = Vec::new();
    files(&deploy().join("k8s"), &mut all);
    all.iter()
        .flat_map(|p| yaml_docs(&std::fs::read_to_string(p).unwrap()))
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in deploy/k8s"))
}

#[test]
fn statefulset_is_ready_on_readyz_and_keeps_its_data_dir() {
    let s = k8s("StatefulSet");
    let c = &s["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(c["resources"]["limits"]["memory"].as_str().is_some());
    let claim = s["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["name"].as_str() == Some(claim)
            && m["mountPath"].as_str() == Some("/var/lib/sammen")));
    assert_eq!(
        s["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    for kind in ["Service", "ConfigMap", "PodDisruptionBudget"] {
        k8s(kind);
    }
    let cm = k8s("ConfigMap");
    let toml_text = cm["data"]["sammen.toml"].as_str().unwrap();
    assert!(toml_text.contains("data_dir = \"/var/lib/sammen\""));
}

#[test]
fn systemd_unit_and_image_are_hardened() {
    let unit = read("systemd/sammen.service");
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/sammen",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryMax=",
    ] {
        assert!(
            unit.lines().any(|l| l.trim().starts_with(line)),
            "sammen.service lacks {line}"
        );
    }
    assert!(unit
        .lines()
        .any(|l| l.starts_with("RestrictAddressFamilies=")));
    let docker = read("docker/Dockerfile");
    assert!(
        docker.lines().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    assert!(docker.contains("HEALTHCHECK") && docker.contains("/healthz"));
    let user = docker
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap();
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    assert!(docker.contains("VOLUME [\"/var/lib/sammen\"]"));
}
