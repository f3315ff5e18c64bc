//! Every Sammen metric, in one Prometheus registry.
//!
//! Names carry the `sammen_` prefix and their unit (`_seconds`, `_days`, `_total` for counters). Label
//! domains are closed (see [`crate::labels`]); [`Metrics::series_bound`] states the resulting maximum
//! number of series per metric, and a test holds the crate to it.

use crate::labels::{self, Label, Labels};
use crate::TelemetryError;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use sammen_model::Family;

/// Latency buckets for publisher confirms: sub-millisecond to the confirm timeout.
const CONFIRM_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// End-to-end buckets: a subscriber may be online (milliseconds) or come back after a day.
const END_TO_END_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
    7200.0, 14400.0, 43200.0, 86400.0, 259200.0,
];

/// Publish outcomes (`outcome` label of the confirm histogram).
pub const PUBLISH_OUTCOMES: &[&str] = &["ack", "nack", "timeout", "returned", "not-connected"];
/// Why a message died (`reason` label of `sammen_messages_dead_total`).
pub const DEAD_REASONS: &[&str] = &["attempts", "returns", "ttl", "manual"];
/// Bus backends (`backend` label).
pub const BUS_BACKENDS: &[&str] = &["amqp", "embedded"];
/// Acknowledgement codes (`code` label of the acknowledgement metrics).
pub const ACK_CODES: &[&str] = &["ok", "transient-error", "fatal-error"];

/// Label domains, by name, for [`Metrics::series_bound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Family,
    Event,
    Reason,
    Gln,
    Outcome,
    DeadReason,
    Backend,
    AckCode,
}

/// All collectors. Cheap to clone (each collector is reference counted).
#[derive(Clone)]
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) received: IntCounterVec,
    pub(crate) accepted: IntCounterVec,
    pub(crate) rejected: IntCounterVec,
    pub(crate) duplicates: IntCounterVec,
    pub(crate) resends: IntCounterVec,
    pub(crate) outbox_depth: IntGauge,
    pub(crate) outbox_oldest_age: Gauge,
    pub(crate) outbox_overdue: IntGauge,
    pub(crate) confirm_latency: HistogramVec,
    pub(crate) accept_to_delivered: HistogramVec,
    pub(crate) accept_to_acknowledged: HistogramVec,
    pub(crate) delivered: IntCounterVec,
    pub(crate) acknowledgements: IntCounterVec,
    pub(crate) overdue: IntCounterVec,
    pub(crate) dead: IntCounterVec,
    pub(crate) bus_connected: IntGaugeVec,
    pub(crate) bus_reconnects: IntCounterVec,
    pub(crate) bus_connect_failures: IntCounterVec,
    pub(crate) inbox_depth: IntGaugeVec,
    pub(crate) audit_leaves: IntGauge,
    pub(crate) audit_checkpoint_timestamp: Gauge,
    pub(crate) audit_checkpoint_age: Gauge,
    pub(crate) cert_expiry_days: GaugeVec,
    pub(crate) log_tripwire: IntCounter,
    pub(crate) receipts_unmatched: IntCounter,
    pub(crate) tls_handshakes_ok: IntCounter,
    pub(crate) tls_handshakes_refused: IntCounter,
    pub(crate) tls_refusals_suppressed: IntCounter,
    /// (metric name, label domains) for the series bound.
    shapes: Vec<(&'static str, Vec<Domain>)>,
    histograms: Vec<&'static str>,
}

struct Builder {
    registry: Registry,
    shapes: Vec<(&'static str, Vec<Domain>)>,
    histograms: Vec<&'static str>,
}

impl Builder {
    fn reg<C: prometheus::core::Collector + Clone + 'static>(
        &mut self,
        name: &'static str,
        domains: &[Domain],
        c: C,
    ) -> Result<C, TelemetryError> {
        self.registry.register(Box::new(c.clone()))?;
        self.shapes.push((name, domains.to_vec()));
        Ok(c)
    }

    fn counter(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[(&str, Domain)],
    ) -> Result<IntCounterVec, TelemetryError> {
        let (names, domains): (Vec<&str>, Vec<Domain>) = labels.iter().copied().unzip();
        self.reg(
            name,
            &domains,
            IntCounterVec::new(Opts::new(name, help), &names)?,
        )
    }

    fn gauge_vec(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[(&str, Domain)],
    ) -> Result<IntGaugeVec, TelemetryError> {
        let (names, domains): (Vec<&str>, Vec<Domain>) = labels.iter().copied().unzip();
        self.reg(
            name,
            &domains,
            IntGaugeVec::new(Opts::new(name, help), &names)?,
        )
    }

    fn histogram(
        &mut self,
        name: &'static str,
        help: &str,
        buckets: &[f64],
        labels: &[(&str, Domain)],
    ) -> Result<HistogramVec, TelemetryError> {
        let (names, domains): (Vec<&str>, Vec<Domain>) = labels.iter().copied().unzip();
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.histograms.push(name);
        self.reg(name, &domains, HistogramVec::new(opts, &names)?)
    }
}

use Domain as D;

impl Metrics {
    pub(crate) fn new(build: &crate::BuildInfo) -> Result<Self, TelemetryError> {
        let mut b = Builder {
            registry: Registry::new(),
            shapes: Vec::new(),
            histograms: Vec::new(),
        };
        let fam = ("family", D::Family);
        let build_info = b.reg(
            "sammen_build_info",
            &[],
            IntGaugeVec::new(
                Opts::new(
                    "sammen_build_info",
                    "Always 1; the labels say which build runs.",
                ),
                &["version", "git_sha", "rustc"],
            )?,
        )?;
        build_info
            .with_label_values(&[build.version, build.git_sha, build.rustc])
            .set(1);
        let m = Metrics {
            received: b.counter(
                "sammen_messages_received_total",
                "Messages received by the ingress, before validation, by family and event.",
                &[fam, ("event", D::Event)],
            )?,
            accepted: b.counter(
                "sammen_messages_accepted_total",
                "Messages validated and durably accepted into the outbox (answered 202).",
                &[fam, ("event", D::Event)],
            )?,
            rejected: b.counter(
                "sammen_messages_rejected_total",
                "Messages refused, by family and the first error's issue code (schemas/*/CODES.md).",
                &[fam, ("code", D::Reason)],
            )?,
            duplicates: b.counter(
                "sammen_duplicates_total",
                "Messages whose id was already accepted with the same content; answered, not forwarded again.",
                &[fam],
            )?,
            resends: b.counter(
                "sammen_resends_total",
                "Resends of an accepted message (same message id, new envelope) forwarded to the receiver.",
                &[fam],
            )?,
            outbox_depth: b.reg(
                "sammen_outbox_depth",
                &[],
                IntGauge::new("sammen_outbox_depth", "Messages in the outbox waiting to be published.")?,
            )?,
            outbox_oldest_age: b.reg(
                "sammen_outbox_oldest_age_seconds",
                &[],
                Gauge::new(
                    "sammen_outbox_oldest_age_seconds",
                    "Age of the oldest message waiting to be published (0 when none waits).",
                )?,
            )?,
            outbox_overdue: b.reg(
                "sammen_outbox_overdue",
                &[],
                IntGauge::new(
                    "sammen_outbox_overdue",
                    "Messages now overdue: published, but no acknowledgement within the window.",
                )?,
            )?,
            confirm_latency: b.histogram(
                "sammen_publish_confirm_duration_seconds",
                "Time from publish to the bus's confirm (or nack, timeout, return).",
                CONFIRM_BUCKETS,
                &[("outcome", D::Outcome)],
            )?,
            accept_to_delivered: b.histogram(
                "sammen_accept_to_delivered_seconds",
                "Time from accept (202) to the receiver's subscriber taking the message.",
                END_TO_END_BUCKETS,
                &[fam],
            )?,
            accept_to_acknowledged: b.histogram(
                "sammen_accept_to_acknowledged_seconds",
                "Time from accept (202) to the receiver's acknowledgement, by its code.",
                END_TO_END_BUCKETS,
                &[fam, ("code", D::AckCode)],
            )?,
            delivered: b.counter(
                "sammen_messages_delivered_total",
                "Messages taken by the receiver's subscriber, by family and receiver GLN.",
                &[fam, ("receiver", D::Gln)],
            )?,
            acknowledgements: b.counter(
                "sammen_acknowledgements_total",
                "Acknowledgements received for forwarded messages, by the original's family and the code.",
                &[fam, ("code", D::AckCode)],
            )?,
            overdue: b.counter(
                "sammen_messages_overdue_total",
                "Messages that became overdue (no acknowledgement within the window).",
                &[fam, ("receiver", D::Gln)],
            )?,
            dead: b.counter(
                "sammen_messages_dead_total",
                "Messages given up (attempts, returns or time to live exhausted, or marked dead).",
                &[fam, ("reason", D::DeadReason)],
            )?,
            bus_connected: b.gauge_vec(
                "sammen_bus_connected",
                "1 while the bus link is up, 0 while reconnecting or closed.",
                &[("backend", D::Backend)],
            )?,
            bus_reconnects: b.counter(
                "sammen_bus_reconnects_total",
                "Bus connections re-established after a loss.",
                &[("backend", D::Backend)],
            )?,
            bus_connect_failures: b.counter(
                "sammen_bus_connect_failures_total",
                "Bus connection attempts that failed.",
                &[("backend", D::Backend)],
            )?,
            inbox_depth: b.gauge_vec(
                "sammen_inbox_depth",
                "Messages waiting in a receiver's inbox queue.",
                &[("receiver", D::Gln)],
            )?,
            audit_leaves: b.reg(
                "sammen_audit_leaves",
                &[],
                IntGauge::new("sammen_audit_leaves", "Leaves in the audit log's Merkle tree.")?,
            )?,
            audit_checkpoint_timestamp: b.reg(
                "sammen_audit_checkpoint_timestamp_seconds",
                &[],
                Gauge::new(
                    "sammen_audit_checkpoint_timestamp_seconds",
                    "Unix time of the latest signed audit checkpoint (0 before the first).",
                )?,
            )?,
            audit_checkpoint_age: b.reg(
                "sammen_audit_checkpoint_age_seconds",
                &[],
                Gauge::new(
                    "sammen_audit_checkpoint_age_seconds",
                    "Age of the latest signed audit checkpoint when last sampled.",
                )?,
            )?,
            cert_expiry_days: {
                let opts = Opts::new(
                    "sammen_certificate_expiry_days",
                    "Days until a certificate expires (negative once expired), by owner: server or partner GLN.",
                );
                b.reg(
                    "sammen_certificate_expiry_days",
                    &[D::Gln],
                    GaugeVec::new(opts, &["partner"])?,
                )?
            },
            log_tripwire: b.reg(
                "sammen_log_personal_data_suspected_total",
                &[],
                IntCounter::new(
                    "sammen_log_personal_data_suspected_total",
                    "Log events dropped for a CPR-shaped value in a field (should stay 0).",
                )?,
            )?,
            receipts_unmatched: b.reg(
                "sammen_receipts_unmatched_total",
                &[],
                IntCounter::new(
                    "sammen_receipts_unmatched_total",
                    "Delivery receipts dropped because this node holds no matching message (several nodes: \
                     a receipt on the shared queue that no node took in time; should stay 0).",
                )?,
            )?,
            tls_handshakes_ok: b.reg(
                "sammen_tls_handshakes_ok_total",
                &[],
                IntCounter::new(
                    "sammen_tls_handshakes_ok_total",
                    "TLS handshakes on the HTTPS listener that completed (client certificate accepted).",
                )?,
            )?,
            tls_handshakes_refused: b.reg(
                "sammen_tls_handshakes_refused_total",
                &[],
                IntCounter::new(
                    "sammen_tls_handshakes_refused_total",
                    "TLS handshakes on the HTTPS listener that failed or timed out (refused certificates \
                     included; each refused certificate is also an audit leaf, rate-limited).",
                )?,
            )?,
            tls_refusals_suppressed: b.reg(
                "sammen_tls_certificate_refusals_suppressed_total",
                &[],
                IntCounter::new(
                    "sammen_tls_certificate_refusals_suppressed_total",
                    "Certificate refusals the audit rate limit kept out of the log (counted in the next leaf \
                     of the same certificate and reason).",
                )?,
            )?,
            registry: b.registry,
            shapes: b.shapes,
            histograms: b.histograms,
        };
        Ok(m)
    }

    /// The registry (to gather, or to register process collectors beside ours).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric name this crate registers.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.shapes.iter().map(|(n, _)| *n)
    }

    /// The histograms among [`Metrics::names`] (exposed as `<name>_bucket`, `_sum`, `_count`).
    pub fn histogram_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.histograms.iter().copied()
    }

    /// The most series a metric can ever have, given the label domains and the configuration
    /// (`labels`): the product of the domain sizes, each counting its fallback values. `None` for a name
    /// that is not ours.
    pub fn series_bound(&self, name: &str, labels: &Labels) -> Option<usize> {
        let (_, domains) = self.shapes.iter().find(|(n, _)| *n == name)?;
        Some(
            domains
                .iter()
                .map(|d| match d {
                    D::Family => Family::ALL.len() + 1,
                    D::Event => labels::EVENTS.len() + 2,
                    D::Reason => labels.reason_count() + 2,
                    D::Gln => labels.gln_count() + 2,
                    D::Outcome => PUBLISH_OUTCOMES.len(),
                    D::DeadReason => DEAD_REASONS.len(),
                    D::Backend => BUS_BACKENDS.len(),
                    D::AckCode => ACK_CODES.len(),
                })
                .product(),
        )
    }
}

/// Label tuple helper: metrics take [`Label`]s only.
pub(crate) fn vals<'a, const N: usize>(l: [Label<'a>; N]) -> [&'a str; N] {
    l.map(|l| l.as_str())
}
