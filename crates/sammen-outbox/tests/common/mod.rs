//! Helpers shared by the outbox test files; every test runs against both backends.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sammen_model::{Family, Party};
use sammen_outbox::sammen_audit::{AuditConfig, PatientKey, SigningKey};
use sammen_outbox::{AcceptRequest, MessageMeta, Outbox, OutboxConfig, Store};

/// Opens an outbox of one backend at a path.
pub trait Backend {
    type S: Store;
    const NAME: &'static str;
    fn open(path: &Path, config: OutboxConfig) -> Outbox<Self::S>;
}

pub struct Sled;
pub struct Fjall;

impl Backend for Sled {
    type S = sammen_outbox::SledStore;
    const NAME: &'static str = "sled";
    fn open(path: &Path, config: OutboxConfig) -> Outbox<Self::S> {
        sammen_outbox::open_sled(path, config).unwrap()
    }
}

impl Backend for Fjall {
    type S = sammen_outbox::FjallStore;
    const NAME: &'static str = "fjall";
    fn open(path: &Path, config: OutboxConfig) -> Outbox<Self::S> {
        sammen_outbox::open_fjall(path, config).unwrap()
    }
}

/// The same backends with the audit log attached: every suite must behave the same with it.
pub struct AuditedSled;
pub struct AuditedFjall;

pub const AUDIT_ORIGIN: &str = "sammen.test/outbox-audit";
pub const PATIENT_KEY: &[u8] = b"test-patient-hmac-key-0123456789";

pub fn audit_config(export_dir: Option<&Path>) -> AuditConfig {
    AuditConfig {
        origin: AUDIT_ORIGIN.into(),
        checkpoint_every: 64,
        checkpoint_interval_ms: 60_000,
        export_dir: export_dir.map(Path::to_path_buf),
        patient_key: PatientKey::new(PATIENT_KEY).unwrap(),
    }
}

/// Fixed, so a reopened log gets the key it was created with.
pub fn audit_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

impl Backend for AuditedSled {
    type S = Arc<dyn Store>;
    const NAME: &'static str = "sled+audit";
    fn open(path: &Path, config: OutboxConfig) -> Outbox<Self::S> {
        sammen_outbox::open_sled_audited(path, config, audit_config(None), audit_key()).unwrap()
    }
}

impl Backend for AuditedFjall {
    type S = Arc<dyn Store>;
    const NAME: &'static str = "fjall+audit";
    fn open(path: &Path, config: OutboxConfig) -> Outbox<Self::S> {
        sammen_outbox::open_fjall_audited(path, config, audit_config(None), audit_key()).unwrap()
    }
}

pub fn party(gln: &str) -> Party {
    Party {
        gln: Some(gln.to_owned()),
        sor: None,
    }
}

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

pub fn req(
    sender: &str,
    receiver: &str,
    message_id: &str,
    envelope_id: &str,
    body: &[u8],
) -> AcceptRequest {
    AcceptRequest {
        bytes: body.to_vec(),
        meta: MessageMeta {
            message_id: message_id.to_owned(),
            envelope_id: envelope_id.to_owned(),
            family: Family::CareCommunication,
            event: "care-communication-message".to_owned(),
            sender: party(sender),
            receiver: party(receiver),
            received: at(0),
        },
    }
}

/// A clock tests move by hand (seconds after `at(0)`).
pub fn manual_clock() -> (Arc<AtomicU64>, sammen_outbox::Clock) {
    let t = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&t);
    (t, Arc::new(move || at(c.load(Ordering::SeqCst))))
}

/// Instantiate generic test functions `fn name<B: Backend>()` once per backend.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $( #[test] fn $name() { super::$name::<$crate::common::Sled>(); } )*
        }
        mod fjall_backend {
            $( #[test] fn $name() { super::$name::<$crate::common::Fjall>(); } )*
        }
        mod sled_audited {
            $( #[test] fn $name() { super::$name::<$crate::common::AuditedSled>(); } )*
        }
        mod fjall_audited {
            $( #[test] fn $name() { super::$name::<$crate::common::AuditedFjall>(); } )*
        }
    };
}
