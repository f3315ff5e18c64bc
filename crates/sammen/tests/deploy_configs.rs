//! Every configuration file shipped under deploy/ passes `sammen check-config` (issue: "the example configs
//! pass sammen check-config"), and the deploy files agree on where the operations listener is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn check(path: &Path) {
    let out = Command::cargo_bin("sammen")
        .unwrap()
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `sammen.toml: |` block of the Kubernetes ConfigMap, unindented.
fn configmap_toml() -> String {
    let text = std::fs::read_to_string(deploy().join("k8s/configmap.yaml")).unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != "sammen.toml: |");
    assert!(lines.next().is_some(), "configmap has no sammen.toml");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_configs_pass_check_config() {
    check(&deploy().join("sammen.example.toml"));
    check(&deploy().join("docker/sammen.toml"));
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("k8s-sammen.toml");
    // The StatefulSet passes the AMQP URL from a Secret (--amqp-url); stand in for it the same way.
    let with_secret = configmap_toml().replacen(
        "[bus]\n",
        "[bus]\nurl = \"amqp://sammen:from-secret@rabbitmq:5672/%2f\"\n",
        1,
    );
    assert!(
        with_secret.contains("from-secret"),
        "configmap has no [bus]"
    );
    std::fs::write(&k8s, with_secret).unwrap();
    check(&k8s);
}

#[test]
fn a_broken_config_is_refused() {
    // The check above can fail: a non-loopback plain listener is refused by key.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
    let out = Command::cargo_bin("sammen")
        .unwrap()
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));
}

#[test]
fn probes_and_scrapes_use_the_operations_listener() {
    let read = |p: &str| std::fs::read_to_string(deploy().join(p)).unwrap();
    for (file, needle) in [
        ("docker/sammen.toml", "metrics_listen = \"0.0.0.0:9464\""),
        ("docker/Dockerfile", "http://127.0.0.1:9464/healthz"),
        ("prometheus/prometheus.yml", "sammen:9464"),
        ("k8s/service.yaml", "prometheus.io/port: \"9464\""),
        ("k8s/statefulset.yaml", "containerPort: 9464"),
    ] {
        assert!(read(file).contains(needle), "{file} lacks {needle}");
    }
    assert!(configmap_toml().contains("metrics_listen = \"0.0.0.0:9464\""));
    let sts = read("k8s/statefulset.yaml");
    assert!(
        !sts.contains("port: http\n"),
        "a probe still points at the plain HTTP port"
    );
}
