//! Helpers shared by the outbox test files; every test runs against both backends.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sammen_model::{Family, Party};
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
    };
}
