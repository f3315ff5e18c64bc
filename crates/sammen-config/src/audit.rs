//! `[audit]`: the signed, tamper-evident audit log (its leaves share the outbox's store and batches).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable holding the patient HMAC secret; overrides `audit.patient_key_file`.
pub const PATIENT_KEY_ENV: &str = "SAMMEN_AUDIT_PATIENT_KEY";

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLogConfig {
    /// Keep the audit log.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Log identity, first line of every checkpoint (e.g. `sammen.region-h.dk/audit`).
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Ed25519 signing key, PKCS#8 PEM (`sammen keygen --out DIR`). Absent: a development key is
    /// generated once in `<data_dir>/audit-dev-keys/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// File holding the patient HMAC secret (at least 16 bytes; a trailing newline is ignored).
    /// [`PATIENT_KEY_ENV`] overrides it. Neither: a development secret in `<data_dir>/audit-dev-keys/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_key_file: Option<PathBuf>,
    /// Sign a checkpoint after this many new leaves ...
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ... or this long after the last one when leaves were added (and always at shutdown).
    #[serde(default = "default_checkpoint_interval", with = "crate::duration")]
    pub checkpoint_interval: Duration,
    /// Where the latest checkpoint is exported (copy it off the machine: rollback detection).
    /// Absent: `<data_dir>/outbox.audit-checkpoints`, where `sammen audit verify` looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_dir: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
fn default_origin() -> String {
    "sammen/audit".into()
}
fn default_checkpoint_every() -> u64 {
    1024
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for AuditLogConfig {
    fn default() -> Self {
        AuditLogConfig {
            enabled: true,
            origin: default_origin(),
            signing_key: None,
            patient_key_file: None,
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval: default_checkpoint_interval(),
            export_dir: None,
        }
    }
}

impl AuditLogConfig {
    /// Problems as (key, reason).
    pub fn problems(&self) -> Vec<(String, &'static str)> {
        let mut ps = Vec::new();
        if self.origin.is_empty() || self.origin.chars().any(char::is_control) {
            ps.push(("audit.origin".into(), "must be a non-empty single line"));
        }
        if self.checkpoint_every == 0 {
            ps.push(("audit.checkpoint_every".into(), "must be positive"));
        }
        if self.checkpoint_interval.is_zero() {
            ps.push(("audit.checkpoint_interval".into(), "must be positive"));
        }
        ps
    }

    /// Where the checkpoint is exported for a broker with this `data_dir`.
    pub fn export_dir_for(&self, data_dir: &std::path::Path) -> PathBuf {
        self.export_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("outbox.audit-checkpoints"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_section_parses_and_is_checked() {
        let c = crate::parse(
            "[audit]\nsigning_key = \"/k.pem\"\ncheckpoint_every = 10\ncheckpoint_interval = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(c.audit.signing_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.audit.checkpoint_every, 10);
        assert!(c.audit.enabled);
        assert_eq!(
            c.audit.export_dir_for(&c.data_dir),
            c.data_dir.join("outbox.audit-checkpoints")
        );
        let keys = |e: crate::ConfigError| -> Vec<String> {
            e.problems().into_iter().map(|p| p.key).collect()
        };
        let e = crate::parse("[audit]\ncheckpoint_every = 0\norigin = \"\"\n").unwrap_err();
        assert_eq!(keys(e), ["audit.origin", "audit.checkpoint_every"]);
        let e = crate::parse("[audit]\nsigning_kee = \"x\"\n").unwrap_err();
        assert_eq!(keys(e), ["audit.signing_kee"]);
    }
}
