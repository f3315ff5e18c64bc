//! Logging: `tracing` set up once per process, JSON for services, text for a terminal, with a span per
//! message id and a tripwire that drops any log event carrying a CPR-shaped value.

use crate::labels::{looks_like_cpr, LogId};
use crate::TelemetryError;
use prometheus::IntCounter;
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (services: journald, containers, log shippers).
    #[default]
    Json,
    /// Human-readable lines (a terminal).
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err(TelemetryError::LogFormat),
        }
    }
}

/// How to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// Filter directives (`info`, `sammen=debug,lapin=warn`) from the configuration. `SAMMEN_LOG`, when set,
    /// takes precedence.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// The most rustls may log (its trace level prints handshake messages).
pub const RUSTLS_CAP: &str = "rustls=debug";

/// Install the process-wide subscriber: filter from `SAMMEN_LOG` or `config.level`, the chosen format on
/// stderr, and the [`PersonalDataTripwire`] (counting into `tripwire`, typically
/// `Telemetry::tripwire_counter()`). Fails when the filter does not parse or a subscriber is already set.
pub fn init_tracing(
    config: &LogConfig,
    tripwire: Option<IntCounter>,
) -> Result<(), TelemetryError> {
    let filter = match std::env::var("SAMMEN_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?
    // rustls traces whole handshake messages (session tickets, nonces, random 32-bit values that can look
    // like CPR numbers): never wanted in a health broker's logs, whatever the level asked for.
    .add_directive(
        RUSTLS_CAP
            .parse()
            .map_err(|e| TelemetryError::Filter(format!("{e}")))?,
    );
    let fmt = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(PersonalDataTripwire::new(tripwire))
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)
}

/// The span that follows one message from ingress through outbox, relay and delivery: name `message`,
/// field `message_id` (through [`LogId`], so a malformed id prints as `<withheld>`) and an empty `record`
/// field to fill with `span.record("record", id)` once the outbox has given the record id.
///
/// Enter it (`let _g = span.enter()`) in synchronous code, or `.instrument(span)` a future; the relay and
/// the delivery path open a span with the same id, so one `message_id` collects the whole story.
pub fn message_span(message_id: &str) -> Span {
    tracing::info_span!("message", message_id = %LogId::new(message_id), record = tracing::field::Empty)
}

/// A layer that vetoes every log event with a CPR-shaped value (see [`looks_like_cpr`]) in any field,
/// including the message, and counts it. The line is lost, the counter
/// (`sammen_log_personal_data_suspected_total`) and its alert say that it happened. Installed by
/// [`init_tracing`]; a defence behind the rule that events never carry personal data, not instead of it.
#[derive(Debug, Clone, Default)]
pub struct PersonalDataTripwire {
    counter: Option<IntCounter>,
}

impl PersonalDataTripwire {
    /// A tripwire counting into `counter`.
    pub fn new(counter: Option<IntCounter>) -> Self {
        PersonalDataTripwire { counter }
    }

    /// True when an event's fields look clean.
    pub fn check(event: &Event<'_>) -> bool {
        let mut v = CprVisitor {
            found: false,
            buf: String::new(),
        };
        event.record(&mut v);
        !v.found
    }
}

impl<S: Subscriber> Layer<S> for PersonalDataTripwire {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let clean = Self::check(event);
        if !clean {
            if let Some(c) = &self.counter {
                c.inc();
            }
        }
        clean
    }
}

struct CprVisitor {
    found: bool,
    buf: String,
}

impl Visit for CprVisitor {
    fn record_str(&mut self, _field: &Field, value: &str) {
        self.found |= looks_like_cpr(value);
    }

    fn record_u64(&mut self, _field: &Field, value: u64) {
        self.found |=
            (1_000_000_000..10_000_000_000).contains(&value) && looks_like_cpr(&value.to_string());
    }

    fn record_i64(&mut self, _field: &Field, value: i64) {
        self.found |=
            (1_000_000_000..10_000_000_000).contains(&value) && looks_like_cpr(&value.to_string());
    }

    fn record_debug(&mut self, _field: &Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        self.buf.clear();
        let _ = write!(self.buf, "{value:?}");
        self.found |= looks_like_cpr(&self.buf);
    }
}
