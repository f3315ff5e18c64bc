//! # sammen-telemetry: what the broker tells its operators
//!
//! Why it exists: operators must see Sammen's health at a glance (Prometheus on `/metrics`, alerts, a
//! Grafana dashboard) and follow one message through ingress, outbox, relay and delivery in the logs —
//! without the telemetry itself becoming a leak of health data. Every crate that measures or logs does it
//! through the vocabulary here, so names, units and label sets are uniform (Vector's `internal_events`
//! style: one struct per event, [`InternalEvent::emit`] updates the metrics and writes one log event).
//!
//! Invariants kept here:
//! - **No personal data in labels.** A label value is a [`labels::Label`], made only from closed sets:
//!   [`sammen_model::Family::ALL`], the MedCom event codes ([`labels::EVENTS`]), the documented issue codes
//!   (`schemas/*/CODES.md`, plus broker codes), and the GLNs registered in the configuration. Anything
//!   else becomes `other`, `unknown`, `unregistered` or `none`. Input never reaches the exposition.
//! - **Bounded cardinality.** Because the sets are closed, every metric has at most
//!   [`Metrics::series_bound`] series, whatever the traffic; `tests/labels.rs` holds the crate to it.
//! - **No personal data in logs.** Events log message ids (through [`labels::LogId`], which withholds
//!   anything not shaped like an id), record ids, sanitised labels and durations; never a payload, a
//!   patient identifier, a name or free text from a message. [`logging::PersonalDataTripwire`] drops and
//!   counts any event with a CPR-shaped value anyway, and [`testing::capture_logs`] lets the end-to-end
//!   suites fail on a test CPR number or name.
//! - **One registry.** [`Telemetry`] owns it; [`Telemetry::render`] is the `/metrics` body.
#![forbid(unsafe_code)]

pub mod events;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod testing;

pub use events::InternalEvent;
pub use logging::{init_tracing, message_span, LogConfig, LogFormat};
pub use metrics::Metrics;

use labels::Labels;
use prometheus::{Encoder, TextEncoder};
use std::sync::Arc;

/// `Content-Type` of [`Telemetry::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A metric could not be registered or encoded (a defect: names are fixed).
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// A configured GLN is not 13 digits; it would not be used as a label.
    #[error("GLN #{index} in the telemetry configuration is not 13 digits")]
    InvalidGln {
        /// Position in [`TelemetryConfig::glns`].
        index: usize,
    },
    /// The log filter (`SAMMEN_LOG` or the configured level) does not parse.
    #[error("log filter: {0}")]
    Filter(String),
    /// The log format is neither `json` nor `text`.
    #[error("log format must be json or text")]
    LogFormat,
    /// A global `tracing` subscriber was already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInitialised,
}

/// What the label sets depend on.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// GLNs that may appear as `receiver` / `partner` label values: the configured receivers and
    /// partners (and the broker's own GLN). Any other GLN is labelled `unregistered`.
    pub glns: Vec<String>,
    /// Refusal codes the broker uses beside [`labels::BROKER_CODES`] and `schemas/*/CODES.md`.
    pub reason_codes: Vec<&'static str>,
}

/// Which build runs (`sammen_build_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo {
    /// Crate version.
    pub version: &'static str,
    /// `SAMMEN_GIT_SHA` at build time, or `unknown`.
    pub git_sha: &'static str,
    /// `rustc --version` at build time.
    pub rustc: &'static str,
}

impl BuildInfo {
    /// This build.
    pub const fn current() -> Self {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            git_sha: match option_env!("SAMMEN_GIT_SHA") {
                Some(s) => s,
                None => "unknown",
            },
            rustc: env!("SAMMEN_RUSTC_VERSION"),
        }
    }
}

/// The broker's metrics and label sets. Clone freely: clones share the registry.
#[derive(Clone)]
pub struct Telemetry {
    pub(crate) metrics: Metrics,
    pub(crate) labels: Labels,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("glns", &self.labels.gln_count())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Build the registry for this configuration and build.
    pub fn new(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        Self::with_build(config, &BuildInfo::current())
    }

    /// As [`Telemetry::new`], naming the build.
    pub fn with_build(config: &TelemetryConfig, build: &BuildInfo) -> Result<Self, TelemetryError> {
        if let Some(index) = config
            .glns
            .iter()
            .position(|g| g.len() != 13 || !g.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(TelemetryError::InvalidGln { index });
        }
        let labels = Labels::new(config.glns.iter().map(String::as_str), &config.reason_codes);
        Ok(Telemetry {
            metrics: Metrics::new(build)?,
            labels,
        })
    }

    /// Record an event (same as `event.emit(self)`).
    pub fn emit(&self, event: impl InternalEvent) {
        event.emit(self);
    }

    /// The `/metrics` body, Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<String, TelemetryError> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.metrics.registry.gather(), &mut out)?;
        // The text encoder writes UTF-8; a lossy conversion cannot lose anything here.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The metrics (names, series bounds, the registry).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configured label sets (to sanitise a value the same way the metrics do).
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The counter the log tripwire increments; pass it to [`init_tracing`].
    pub fn tripwire_counter(&self) -> prometheus::IntCounter {
        self.metrics.log_tripwire.clone()
    }
}

/// Handy for `Arc<Telemetry>` holders.
pub type SharedTelemetry = Arc<Telemetry>;
