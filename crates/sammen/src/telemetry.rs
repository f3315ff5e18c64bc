//! `sammen serve`'s telemetry: the registry with the configured label sets, logging set-up, the outbox
//! observer (delivered / acknowledged / overdue / dead, whoever changed the state), the periodic sampler
//! (outbox, bus, inboxes, audit log, certificates) and the `/metrics` listener.

use crate::audit::SharedLog;
use anyhow::{Context, Result};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sammen_bus::{Bus, EmbeddedBus, LinkState, Source};
use sammen_config::Config;
use sammen_identity::{ExpiryOwner, TlsIdentity};
use sammen_outbox::{State, Status, TransitionObserver};
use sammen_relay::SharedOutbox;
use sammen_telemetry::events::{
    AckReceived, AuditSampled, BusBackend, BusStatusSampled, CertOwner, CertificateObserved,
    DeadReason, InboxSampled, MessageDead, MessageDelivered, MessageOverdue, OutboxSampled,
};
use sammen_telemetry::{LogConfig, LogFormat, SharedTelemetry, Telemetry, TelemetryConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Environment variable overriding `[log] format` (`json` or `text`).
pub const LOG_FORMAT_ENV: &str = "SAMMEN_LOG_FORMAT";

/// Refusal codes the broker answers with beside the documented validation codes: identity refusals,
/// the unknown receiver, the envelope id conflict, a body that did not arrive in time.
fn reason_codes() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = sammen_identity::REFUSAL_CODES.to_vec();
    v.extend([
        sammen_ingress::UNKNOWN_RECEIVER,
        sammen_outbox::CONFLICT_CODE,
        "body-timeout",
    ]);
    v
}

/// The registry, with the configured GLNs (receivers, the broker's own, partners) as the only
/// `receiver`/`partner` label values.
pub fn build(cfg: &Config) -> Result<SharedTelemetry> {
    let mut glns: Vec<String> = cfg.receivers.iter().map(|r| r.gln.clone()).collect();
    glns.push(cfg.bus.broker_gln.clone());
    glns.extend(
        cfg.partners
            .iter()
            .flat_map(|p| p.send_as.iter().map(|s| s.gln.clone())),
    );
    // Config checks GLNs it owns; partner GLNs are checked by the identity layer, so drop odd ones here
    // rather than refuse to start over a label.
    glns.retain(|g| g.len() == 13 && g.bytes().all(|b| b.is_ascii_digit()));
    glns.sort();
    glns.dedup();
    let t = Telemetry::new(&TelemetryConfig {
        glns,
        reason_codes: reason_codes(),
    })
    .context("building the metrics registry")?;
    Ok(Arc::new(t))
}

/// Install the process-wide logger: filter `SAMMEN_LOG` or `[log] level`, format `SAMMEN_LOG_FORMAT` or
/// `[log] format` (default: text on a terminal, JSON otherwise), and the personal-data tripwire counting
/// into `telemetry`.
pub fn init_logging(cfg: &Config, telemetry: &Telemetry) -> Result<()> {
    let format = match std::env::var(LOG_FORMAT_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<LogFormat>()
            .with_context(|| format!("{LOG_FORMAT_ENV}={v:?}"))?,
        _ => match cfg.log.format {
            Some(sammen_config::LogFormat::Json) => LogFormat::Json,
            Some(sammen_config::LogFormat::Text) => LogFormat::Text,
            None if std::io::IsTerminal::is_terminal(&std::io::stderr()) => LogFormat::Text,
            None => LogFormat::Json,
        },
    };
    sammen_telemetry::init_tracing(
        &LogConfig {
            format,
            level: cfg.log.level.clone(),
        },
        Some(telemetry.tripwire_counter()),
    )
    .context("setting up logging")
}

/// Outbox transitions → metrics. Accepts, duplicates and resends are counted by the ingress, publishes
/// by the relay; every later state change lands here, whoever made it.
pub struct OutboxObserver {
    telemetry: SharedTelemetry,
    /// `limits.message_ttl`: a record that died at least this old died of its time to live.
    ttl: Duration,
}

impl OutboxObserver {
    /// Observer for `telemetry`.
    pub fn new(telemetry: SharedTelemetry, ttl: Duration) -> Arc<Self> {
        Arc::new(OutboxObserver { telemetry, ttl })
    }
}

impl TransitionObserver for OutboxObserver {
    fn on_transition(&self, _from: State, s: &Status) {
        let at = s
            .timeline
            .last()
            .map_or_else(SystemTime::now, |step| step.at);
        let since_accept = at.duration_since(s.meta.received).unwrap_or_default();
        let (message_id, family) = (s.meta.message_id.as_str(), s.meta.family);
        let receiver = s.meta.receiver.gln.as_deref();
        let t = &self.telemetry;
        match s.state {
            State::Delivered => t.emit(MessageDelivered {
                message_id,
                family,
                receiver,
                since_accept,
            }),
            State::Acknowledged(code) => t.emit(AckReceived {
                message_id,
                family,
                code,
                since_accept: Some(since_accept),
            }),
            State::Overdue => t.emit(MessageOverdue {
                message_id,
                family,
                receiver,
                since_accept,
            }),
            State::Dead => {
                let why = s.last_error.as_deref().unwrap_or_default();
                let reason = if why.starts_with("unroutable") {
                    DeadReason::Returns
                } else if since_accept >= self.ttl {
                    DeadReason::Ttl
                } else if s.attempts > 0 {
                    DeadReason::Attempts
                } else {
                    DeadReason::Manual
                };
                t.emit(MessageDead {
                    message_id,
                    record: s.id.0,
                    family,
                    reason,
                });
            }
            // Published: the relay's confirm histogram counts it; Accepted is never re-entered.
            State::Published | State::Accepted => {}
        }
    }
}

/// What the sampler looks at.
pub struct Sampled {
    /// The outbox (depth, oldest waiting message).
    pub outbox: SharedOutbox,
    /// The bus (link state, reconnects).
    pub bus: Arc<dyn Bus>,
    /// The embedded bus, when that is the bus: its inbox depths per receiver.
    pub embedded: Option<Arc<EmbeddedBus>>,
    /// RabbitMQ, when that is the bus: inbox depths by passive declare on a connection of its own.
    pub amqp: Option<AmqpDepths>,
    /// Receivers whose inbox depth to sample.
    pub receivers: Vec<String>,
    /// The audit log, when enabled.
    pub audit: Option<SharedLog>,
    /// The TLS identity layer, when HTTPS is on (certificate expiry).
    pub identity: Option<Arc<TlsIdentity>>,
    /// The HTTPS listener's handshake counts, when HTTPS is on.
    pub tls: Option<Arc<sammen_ingress::tls::TlsStats>>,
}

/// Inbox depths on RabbitMQ: `queue.declare(passive)` answers the ready count without touching the queue.
/// Its own connection (opened on demand), so sampling never competes with publishing. A failed declare
/// (say, a queue not there) closes only the channel; a dead connection is closed before the next one is
/// opened, so the sampler holds at most one connection.
pub struct AmqpDepths {
    url: String,
    topology: sammen_bus::Topology,
    conn: Option<lapin::Connection>,
    channel: Option<lapin::Channel>,
}

/// Longest wait for one AMQP operation of the sampler.
const AMQP_OP: Duration = Duration::from_secs(3);

impl AmqpDepths {
    /// Depths of the inboxes of `topology` on the broker at `url`.
    pub fn new(url: String, topology: sammen_bus::Topology) -> Self {
        AmqpDepths {
            url,
            topology,
            conn: None,
            channel: None,
        }
    }

    async fn channel(&mut self) -> Option<&lapin::Channel> {
        if !self.conn.as_ref().is_some_and(|c| c.status().connected()) {
            self.channel = None;
            if let Some(old) = self.conn.take() {
                // Dropping a lapin connection does not close its socket.
                let _ =
                    tokio::time::timeout(AMQP_OP, old.close(200, "sampler reconnecting".into()))
                        .await;
            }
            let props = lapin::ConnectionProperties::default()
                .with_connection_name("sammen-serve-metrics".into());
            let conn = sammen_bus::amqp_connect(&self.url, props, AMQP_OP)
                .await
                .ok()?;
            self.conn = Some(conn);
        }
        if !self
            .channel
            .as_ref()
            .is_some_and(|c| c.status().connected())
        {
            let conn = self.conn.as_ref()?;
            let ch = tokio::time::timeout(AMQP_OP, conn.create_channel())
                .await
                .ok()?
                .ok()?;
            self.channel = Some(ch);
        }
        self.channel.as_ref()
    }

    /// Ready messages in `gln`'s inbox; `None` while the broker or the queue is not there (a missing queue
    /// closes the channel: the next call opens another).
    async fn depth(&mut self, gln: &str) -> Option<u64> {
        let name = self.topology.inbox_queue(gln);
        let ch = self.channel().await?;
        let opts = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = tokio::time::timeout(
            AMQP_OP,
            ch.queue_declare(
                name.as_str().into(),
                opts,
                lapin::types::FieldTable::default(),
            ),
        )
        .await
        .ok()?
        .ok()?;
        Some(u64::from(q.message_count()))
    }
}

/// Take one sample of every gauge.
pub async fn sample(t: &Telemetry, s: &mut Sampled) {
    let now = SystemTime::now();
    let ob = s.outbox.clone();
    // The oldest-age and overdue lookups read the store: off the runtime workers.
    let (oldest, overdue) = tokio::task::spawn_blocking(move || {
        (
            ob.oldest_pending_age(now).ok().flatten(),
            ob.overdue_count().ok(),
        )
    })
    .await
    .unwrap_or((None, None));
    t.emit(OutboxSampled {
        depth: s.outbox.depth(),
        oldest_age: oldest,
        overdue,
    });
    let st = s.bus.status();
    t.emit(BusStatusSampled {
        backend: BusBackend::from_kind(st.kind),
        connected: st.state == LinkState::Connected,
        reconnects: st.reconnects,
        connect_failures: st.connect_failures,
    });
    if let Some(e) = &s.embedded {
        for gln in &s.receivers {
            if let Some((ready, unacked)) = e.depth(&Source::Inbox(gln.clone())) {
                t.emit(InboxSampled {
                    receiver: gln,
                    depth: (ready + unacked) as u64,
                });
            }
        }
    }
    if let Some(a) = s.amqp.as_mut() {
        for gln in &s.receivers {
            if let Some(depth) = a.depth(gln).await {
                t.emit(InboxSampled {
                    receiver: gln,
                    depth,
                });
            }
        }
    }
    if let Some(log) = &s.audit {
        let last = log
            .latest_checkpoint()
            .map(|cp| UNIX_EPOCH + Duration::from_millis(cp.checkpoint.time_ms));
        t.emit(AuditSampled {
            leaves: log.size(),
            last_checkpoint: last,
            now,
        });
    }
    if let Some(id) = &s.identity {
        observe_certificates(t, id, now);
    }
    if let Some(tls) = &s.tls {
        use std::sync::atomic::Ordering::Relaxed;
        t.emit(sammen_telemetry::events::TlsSampled {
            handshakes_ok: tls.handshakes_ok.load(Relaxed),
            handshakes_refused: tls.handshakes_refused.load(Relaxed),
            refusals_suppressed: tls.certificate_refusals_suppressed.load(Relaxed),
        });
    }
}

/// `sammen_certificate_expiry_days` for the server certificate and every partner certificate seen.
pub fn observe_certificates(t: &Telemetry, identity: &TlsIdentity, now: SystemTime) {
    for e in identity.expiries(now) {
        let owner = match &e.owner {
            ExpiryOwner::Server => CertOwner::Server,
            // Partners without a GLN are labelled `unregistered` by the label set.
            ExpiryOwner::Partner { gln, .. } => CertOwner::Partner(gln.as_deref().unwrap_or("")),
            _ => continue,
        };
        t.emit(CertificateObserved {
            owner,
            not_after: e.not_after,
            now,
        });
    }
}

/// Sample every `every` until `stop`.
pub async fn run_sampler(
    t: SharedTelemetry,
    mut s: Sampled,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        sample(&t, &mut s).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// `GET /metrics`.
pub fn router(t: SharedTelemetry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let t = t.clone();
            async move { render(&t) }
        }),
    )
}

fn render(t: &Telemetry) -> Response {
    match t.render() {
        Ok(body) => (
            [(header::CONTENT_TYPE, sammen_telemetry::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Bind the metrics listener: `http.metrics_listen` must bind; without it, the default address is tried
/// and a busy port only logged (another broker on this host has it).
pub async fn bind_metrics(cfg: &Config) -> Result<Option<TcpListener>> {
    match cfg.http.metrics_listen {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("binding http.metrics_listen {addr}")),
        None => {
            let addr: SocketAddr = sammen_config::DEFAULT_METRICS_LISTEN;
            match TcpListener::bind(addr).await {
                Ok(l) => Ok(Some(l)),
                Err(e) => {
                    warn!(%addr, error = %e, "metrics listener not started (set http.metrics_listen)");
                    Ok(None)
                }
            }
        }
    }
}

/// Serve `/metrics` and the `probes` routes (`/healthz`, `/readyz`) on `listener` until `stop`.
pub async fn serve_metrics(
    listener: TcpListener,
    t: SharedTelemetry,
    probes: Router,
    stop: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "operations listener (metrics, probes)");
    axum::serve(listener, router(t).merge(probes))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("metrics server")
}
