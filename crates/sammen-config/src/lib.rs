//! # sammen-config: what `sammen serve` is told, checked before anything starts
//!
//! Why it exists: a broker that starts with a typo in its configuration (say `max_mesage_bytes`) silently
//! runs on defaults the operator did not choose. Sammen reads one TOML file, refuses unknown keys and wrong
//! types with the key path and the reason, checks the values that would only fail later (GLNs, a missing
//! AMQP URL, a non-loopback listen address without TLS), and otherwise falls back to defaults that make
//! `sammen serve` run on a laptop with nothing else installed.
//!
//! Invariants kept here:
//! - Every key is known: `deny_unknown_fields` on every table; errors name the key path
//!   (`limits.max_message_bytes: invalid type ...`), never a byte offset alone.
//! - A [`Config`] returned by [`load`], [`parse`] or [`Config::default`] has passed [`Config::check`]; flags
//!   applied with [`Config::apply`] are checked again.
//! - Without a file, the receivers of the conformance suite's valid examples are registered
//!   ([`defaults::example_receivers`]), so every example can be posted to a fresh broker.
//! - No secret is printed: [`BusConfig`]'s `Debug` hides the AMQP password.
#![forbid(unsafe_code)]

pub mod audit;
pub mod defaults;
pub mod duration;
mod load;
mod model;
mod tls;

pub use audit::AuditLogConfig;
pub use load::{load, parse, ConfigError, Overrides, Problem};
pub use model::{
    AckSettings, BusConfig, BusKind, Config, HttpConfig, InboxSettings, Limits, LogFormat,
    LogSettings, Receiver, RetentionConfig, StoreBackend, StoreConfig, DEFAULT_METRICS_LISTEN,
};
pub use tls::{
    check_partner, default_tls_listen, parse_partners, Partner, PartnerParty, PartnersFile,
    TlsConfig,
};
