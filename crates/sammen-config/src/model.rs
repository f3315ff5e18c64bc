//! The configuration file's shape. Every table refuses unknown keys.

use crate::defaults;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the outbox (and the embedded bus) keep their data.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// HTTP ingress.
    #[serde(default)]
    pub http: HttpConfig,
    /// Message bus.
    #[serde(default)]
    pub bus: BusConfig,
    /// Receivers the broker accepts messages for (`[[receiver]]`). Empty or absent: the conformance
    /// examples' receivers.
    #[serde(default, rename = "receiver", skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<Receiver>,
    /// Sizes, depths and windows.
    #[serde(default)]
    pub limits: Limits,
    /// How long finished messages are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Storage engine.
    #[serde(default)]
    pub store: StoreConfig,
    /// HTTPS with client certificates (`[tls]`). Absent: zero-config `sammen serve` still serves HTTPS with a
    /// dev PKI unless plain HTTP was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Partners: certificate → identities (`[[partner]]`).
    #[serde(default, rename = "partner", skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<crate::tls::Partner>,
    /// Signed audit log (`[audit]`).
    #[serde(default)]
    pub audit: crate::audit::AuditLogConfig,
    /// HTTP inbox for receivers without AMQP (`[inbox]`).
    #[serde(default)]
    pub inbox: InboxSettings,
    /// MedCom acknowledgements (`[acknowledgements]`).
    #[serde(default)]
    pub acknowledgements: AckSettings,
    /// Logging (`[log]`).
    #[serde(default)]
    pub log: LogSettings,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(defaults::DATA_DIR)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            http: HttpConfig::default(),
            bus: BusConfig::default(),
            receivers: defaults::example_receivers(),
            limits: Limits::default(),
            retention: RetentionConfig::default(),
            store: StoreConfig::default(),
            tls: None,
            partners: Vec::new(),
            audit: crate::audit::AuditLogConfig::default(),
            inbox: InboxSettings::default(),
            acknowledgements: AckSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (services).
    Json,
    /// Human-readable lines (a terminal).
    Text,
}

/// `[log]`. The environment overrides both keys: `SAMMEN_LOG` (filter) and `SAMMEN_LOG_FORMAT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Filter directives (`info`, `info,sammen=debug,lapin=warn`).
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Absent: text when stderr is a terminal, JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
}

fn default_log_level() -> String {
    "info,lapin=warn".into()
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: default_log_level(),
            format: None,
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on. Plain HTTP is allowed on loopback only.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve plain HTTP on `listen` (explicit opt-in; `--plain-http` or `--listen` on the command line).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain: bool,
    /// Plain-HTTP listener for `GET /metrics` only (Prometheus text). Absent: [`DEFAULT_METRICS_LISTEN`],
    /// best effort (a second broker on the same host still starts, without it). Set: must bind; port 0
    /// picks a free port. Not limited to loopback: metrics carry no personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Where `/metrics` is served when `http.metrics_listen` is not set (loopback: opt in to expose it).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            plain: false,
            metrics_listen: None,
        }
    }
}

/// `[bus] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process bus: nothing else to install.
    #[default]
    Embedded,
    /// RabbitMQ over AMQP 0-9-1.
    Amqp,
}

/// `[bus]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Which bus.
    #[serde(default)]
    pub kind: BusKind,
    /// AMQP URL (`amqp://user:pass@host:5672/%2f`); required for `kind = "amqp"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Prefix for every exchange and queue name (`<ns>.sammen.route`); isolates brokers sharing one
    /// RabbitMQ. Empty: the standard names of `deploy/rabbitmq/definitions.json`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// This node's name when several sammen nodes share one RabbitMQ: its delivery receipts come on
    /// `sammen.receipts.<node>` (the `reply_to` of everything it publishes), so it must stay the same
    /// across restarts. 1–64 of `A-Za-z0-9_-`. Unset: an id generated once and kept in the data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The broker's own GLN: subscribers publish delivery receipts to its inbox.
    #[serde(default = "default_broker_gln")]
    pub broker_gln: String,
    /// Longest wait for one publisher confirm.
    #[serde(default = "default_confirm_timeout", with = "crate::duration")]
    pub confirm_timeout: Duration,
    /// Also take messages from the `sammen.ingress` queue (EHR integrations publishing over AMQP; the
    /// AMQP user-id is mapped to a partner by `[[partner]] amqp_user`). Only with `kind = "amqp"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub amqp_ingress: bool,
}

fn default_broker_gln() -> String {
    defaults::BROKER_GLN.into()
}

fn default_confirm_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Embedded,
            url: None,
            namespace: String::new(),
            node: None,
            broker_gln: default_broker_gln(),
            confirm_timeout: default_confirm_timeout(),
            amqp_ingress: false,
        }
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("namespace", &self.namespace)
            .field("node", &self.node)
            .field("broker_gln", &self.broker_gln)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("amqp_ingress", &self.amqp_ingress)
            .finish()
    }
}

/// `amqp://user:secret@host` → `amqp://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:***@{host}")
}

/// `[[receiver]]`: an organisation messages may be addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// GLN (13 digits, valid check digit): the inbox queue `sammen.inbox.<gln>`.
    pub gln: String,
    /// SOR code; a message addressed by SOR only is routed to this receiver's GLN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sor: Option<String>,
    /// Human name, for logs and status.
    #[serde(default)]
    pub name: String,
    /// The broker is this receiver's receiving system: once a FHIR message to it is delivered, the broker
    /// sends the sender a standard `ok` Acknowledgement on its behalf. Needs `sor` (the endpoint).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_acknowledge: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message body accepted (HTTP 413 above; the body is never buffered beyond this).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Messages waiting to be published above which the ingress answers 503 + Retry-After.
    #[serde(default = "default_outbox_max_depth")]
    pub outbox_max_depth: u64,
    /// Retry-After seconds sent with a 503.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u32,
    /// Publishes awaiting a broker confirm at once.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// Failed publish attempts before a message is dead.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Unroutable returns (no inbox queue) before a message is dead.
    #[serde(default = "default_max_returns")]
    pub max_returns: u32,
    /// Age after which an unpublished message is dead.
    #[serde(default = "default_message_ttl", with = "crate::duration")]
    pub message_ttl: Duration,
    /// Bodies at least this large are validated on the blocking pool, not on a runtime thread.
    #[serde(default = "default_blocking_validate_bytes")]
    pub blocking_validate_bytes: usize,
    /// Request bodies held in memory at once, all POSTs together (each counts its declared length, or
    /// `max_message_bytes` when undeclared, from before it is read until it is answered). A request that
    /// cannot get its share within a second is answered 503 + Retry-After: memory is bounded by this,
    /// not by how many clients send at once. At least `max_message_bytes`.
    #[serde(default = "default_body_memory_bytes")]
    pub body_memory_bytes: usize,
}

fn default_max_message_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_outbox_max_depth() -> u64 {
    100_000
}
fn default_retry_after_secs() -> u32 {
    5
}
fn default_in_flight() -> usize {
    256
}
fn default_max_attempts() -> u32 {
    50
}
fn default_max_returns() -> u32 {
    5
}
fn default_message_ttl() -> Duration {
    Duration::from_secs(14 * 86_400)
}
fn default_blocking_validate_bytes() -> usize {
    64 * 1024
}
fn default_body_memory_bytes() -> usize {
    256 * 1024 * 1024
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: default_max_message_bytes(),
            outbox_max_depth: default_outbox_max_depth(),
            retry_after_secs: default_retry_after_secs(),
            in_flight: default_in_flight(),
            max_attempts: default_max_attempts(),
            max_returns: default_max_returns(),
            message_ttl: default_message_ttl(),
            blocking_validate_bytes: default_blocking_validate_bytes(),
            body_memory_bytes: default_body_memory_bytes(),
        }
    }
}

/// `[inbox]`: `GET /v1/inbox/{gln}` long polls and their acks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxSettings {
    /// Longest long poll (`wait` is capped to it).
    #[serde(default = "default_inbox_max_wait", with = "crate::duration")]
    pub max_wait: Duration,
    /// A delivery not acked within this goes back to the queue and is handed out again.
    #[serde(default = "default_inbox_visibility", with = "crate::duration")]
    pub visibility_timeout: Duration,
    /// Deliveries per receiver held at once (handed out or waiting for a poller): bounds memory.
    #[serde(default = "default_inbox_max_unsettled")]
    pub max_unsettled: u16,
    /// Most messages in one response (`max`).
    #[serde(default = "default_inbox_max_batch")]
    pub max_batch: usize,
}

fn default_inbox_max_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_inbox_visibility() -> Duration {
    Duration::from_secs(300)
}
fn default_inbox_max_unsettled() -> u16 {
    32
}
fn default_inbox_max_batch() -> usize {
    16
}

impl Default for InboxSettings {
    fn default() -> Self {
        InboxSettings {
            max_wait: default_inbox_max_wait(),
            visibility_timeout: default_inbox_visibility(),
            max_unsettled: default_inbox_max_unsettled(),
            max_batch: default_inbox_max_batch(),
        }
    }
}

/// `[acknowledgements]`: a message not acknowledged within `timeout_secs` of its acceptance becomes
/// `overdue` (MedCom: the sender may then resend; the broker itself never resends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckSettings {
    /// Seconds from acceptance to `overdue` (MedCom: 30 minutes).
    #[serde(default = "default_ack_timeout_secs")]
    pub timeout_secs: u64,
    /// Seconds between overdue scans.
    #[serde(default = "default_ack_scan_secs")]
    pub scan_interval_secs: u64,
}

fn default_ack_timeout_secs() -> u64 {
    30 * 60
}
fn default_ack_scan_secs() -> u64 {
    30
}

impl Default for AckSettings {
    fn default() -> Self {
        AckSettings {
            timeout_secs: default_ack_timeout_secs(),
            scan_interval_secs: default_ack_scan_secs(),
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Payloads of finished messages are purged this long after they finished.
    #[serde(default = "default_payload_ttl", with = "crate::duration")]
    pub payload_ttl: Duration,
    /// Metadata (state, timeline, dedupe keys) is purged this long after the message finished.
    #[serde(default = "default_metadata_ttl", with = "crate::duration")]
    pub metadata_ttl: Duration,
    /// How often the purge runs.
    #[serde(default = "default_purge_interval", with = "crate::duration")]
    pub purge_interval: Duration,
}

fn default_payload_ttl() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_metadata_ttl() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_purge_interval() -> Duration {
    Duration::from_secs(3600)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            payload_ttl: default_payload_ttl(),
            metadata_ttl: default_metadata_ttl(),
            purge_interval: default_purge_interval(),
        }
    }
}

/// `[store] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// fjall with `PersistMode::SyncAll`.
    #[default]
    Fjall,
    /// sled, made durable with fdatasync after each flush.
    Sled,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Storage engine of the outbox.
    #[serde(default)]
    pub backend: StoreBackend,
}

impl Config {
    /// Where the outbox lives.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// Where the embedded bus keeps its queues.
    pub fn bus_dir(&self) -> PathBuf {
        self.data_dir.join("bus")
    }
}
