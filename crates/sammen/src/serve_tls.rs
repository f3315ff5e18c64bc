//! The listeners of `sammen serve`: HTTPS with client certificates (default; a dev PKI when none is
//! configured) and, only when asked for, plain HTTP on loopback.

use anyhow::{bail, Context, Result};
use sammen_config::{Config, TlsConfig};
use sammen_identity::{generate_dev_pki, ExpiryOwner, TlsFiles, TlsIdentity};
use sammen_ingress::tls::{
    serve_tls, tls_router, watch_reload, HandshakeAudit, HandshakeAuditLimits, TlsServeConfig,
};
use sammen_ingress::Ingress;
use sammen_telemetry::events::MessageRejected;
use sammen_telemetry::SharedTelemetry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Bound listeners, before serving.
pub struct Front {
    plain: Option<(TcpListener, SocketAddr)>,
    tls: Option<TlsFront>,
    telemetry: SharedTelemetry,
}

struct TlsFront {
    listener: TcpListener,
    addr: SocketAddr,
    identity: Arc<TlsIdentity>,
    cfg: TlsServeConfig,
    reload_interval: Duration,
}

/// `[tls]`, or the zero-config default when plain HTTP was not asked for.
fn tls_config(cfg: &Config) -> Option<TlsConfig> {
    match (&cfg.tls, cfg.http.plain) {
        (Some(t), _) => Some(t.clone()),
        (None, false) => Some(TlsConfig::default()),
        (None, true) => None,
    }
}

/// Generate the dev PKI when needed, load the TLS layer and bind. Prints the dev PKI's whereabouts.
pub async fn bind(cfg: &Config, telemetry: &SharedTelemetry) -> Result<Front> {
    let plain = if cfg.http.plain {
        if !cfg.http.listen.ip().is_loopback() {
            bail!("http.listen: plain HTTP is only allowed on a loopback address");
        }
        let l = TcpListener::bind(cfg.http.listen)
            .await
            .with_context(|| format!("binding {}", cfg.http.listen))?;
        let a = l.local_addr()?;
        Some((l, a))
    } else {
        None
    };
    let tls = match tls_config(cfg) {
        None => None,
        Some(t) => {
            let pki_dir = cfg.data_dir.join("pki");
            if t.uses_dev_pki() {
                let pki = generate_dev_pki(&pki_dir)
                    .with_context(|| format!("dev PKI in {}", pki_dir.display()))?;
                let verb = if pki.created { "generated" } else { "using" };
                println!(
                    "sammen: {verb} dev PKI in {} (not for production)",
                    pki.dir.display()
                );
                println!(
                    "sammen:   CA {}  hospital {} + {}  municipality {} + {}  partners {}",
                    pki.ca_cert.display(),
                    pki.hospital_cert.display(),
                    pki.hospital_key.display(),
                    pki.municipality_cert.display(),
                    pki.municipality_key.display(),
                    pki.partners_file.display()
                );
            }
            let files = TlsFiles::from_config(&t, &cfg.partners, &pki_dir);
            let identity = Arc::new(TlsIdentity::load(files).context("loading TLS certificates")?);
            let listener = TcpListener::bind(t.listen)
                .await
                .with_context(|| format!("binding {}", t.listen))?;
            let addr = listener.local_addr()?;
            let snap = identity.snapshot();
            info!(
                partners = snap.registry.len(),
                "TLS: client certificates required"
            );
            log_expiries(&identity);
            Some(TlsFront {
                listener,
                addr,
                identity,
                cfg: TlsServeConfig {
                    handshake_timeout: t.handshake_timeout,
                    request_timeout: t.request_timeout,
                    on_refusal: Some(refusal_hook(telemetry.clone())),
                    ..TlsServeConfig::default()
                },
                reload_interval: t.reload_interval,
            })
        }
    };
    if plain.is_none() && tls.is_none() {
        bail!("no listener: enable [tls] or plain HTTP (--plain-http)");
    }
    Ok(Front {
        plain,
        tls,
        telemetry: telemetry.clone(),
    })
}

/// Identity refusals (403) count as rejections with their `identity.*` code.
fn refusal_hook(t: SharedTelemetry) -> sammen_ingress::tls::RefusalHook {
    Arc::new(move |r: &sammen_identity::Refusal| {
        t.emit(MessageRejected {
            message_id: None,
            family: None,
            code: Some(r.code()),
            status: 403,
        });
    })
}

/// An operator action is an audit leaf: the certificates and partners in force changed. Written off the
/// async workers (the leaf waits for its durable commit); a failure is logged, the reload stands.
fn record_reload(outbox: &sammen_ingress::SharedOutbox) {
    use sammen_outbox::sammen_audit::{Event, LeafEvent, Outcome};
    let ob = outbox.clone();
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    tokio::task::spawn_blocking(move || {
        let mut leaf = LeafEvent::new(now_ms, Event::ConfigReload, Outcome::Success);
        leaf.event_code = Some("tls-partners".into());
        if let Err(e) = ob.record(leaf) {
            warn!(error = %e, "audit: recording the reload failed");
        }
    });
}

fn log_expiries(identity: &TlsIdentity) {
    for e in identity.expiries(SystemTime::now()) {
        let who = match &e.owner {
            ExpiryOwner::Server => "server".to_string(),
            ExpiryOwner::Partner { name, .. } => name.clone(),
            _ => "other".to_string(),
        };
        if e.days < 30.0 {
            warn!(certificate = %who, days = e.days.floor(), "certificate expires soon");
        } else {
            info!(certificate = %who, days = e.days.floor(), "certificate valid");
        }
    }
}

impl Front {
    /// The addresses, for the start-up log line.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(t) = &self.tls {
            v.push(format!("https://{}", t.addr));
        }
        if let Some((_, a)) = &self.plain {
            v.push(format!("http://{a}"));
        }
        v.join(" ")
    }

    /// One machine-readable line per listener on stdout (tests and scripts read the bound port from it).
    pub fn announce(&self) {
        if let Some(t) = &self.tls {
            println!("sammen: listening on https://{}", t.addr);
        }
        if let Some((_, a)) = &self.plain {
            println!("sammen: listening on http://{a}");
        }
    }

    /// The HTTPS listener's handshake counts, when HTTPS is on (for the telemetry sampler).
    pub fn tls_stats(&self) -> Option<Arc<sammen_ingress::tls::TlsStats>> {
        self.tls.as_ref().map(|t| t.cfg.stats.clone())
    }

    /// The identity layer, when HTTPS is on (certificate expiry for the telemetry sampler).
    pub fn identity(&self) -> Option<Arc<TlsIdentity>> {
        self.tls.as_ref().map(|t| t.identity.clone())
    }

    /// Serve until `shutdown`, then drain.
    pub async fn run(
        self,
        ingress: Arc<Ingress>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        // Handlers find the registry as an extension (the ingress counts what it answers).
        let ext = axum::Extension(self.telemetry.clone());
        if let Some((listener, _)) = self.plain {
            // Plain HTTP is loopback-only, so /metrics may ride along (it is never on the HTTPS listener:
            // partners have no business reading other partners' GLNs).
            let app = sammen_ingress::router(ingress.clone())
                .merge(crate::telemetry::router(self.telemetry.clone()))
                .layer(ext.clone());
            let s = stop.clone();
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { s.cancelled().await })
                    .await
                    .context("http server")
            });
        }
        if let Some(mut t) = self.tls {
            // Certificates refused in the handshake get (rate-limited) audit leaves too.
            let audit =
                HandshakeAudit::new(ingress.outbox().clone(), HandshakeAuditLimits::default());
            t.cfg.handshake_audit = Some(Arc::new(audit));
            let s = stop.clone();
            let (identity, every) = (t.identity.clone(), t.reload_interval);
            let outbox = ingress.outbox().clone();
            tasks.spawn(async move {
                watch_reload(
                    identity,
                    every,
                    move |id: &TlsIdentity| {
                        log_expiries(id);
                        record_reload(&outbox);
                    },
                    async move { s.cancelled().await },
                )
                .await;
                Ok(())
            });
            let s = stop.clone();
            let app = tls_router(ingress).layer(ext);
            tasks.spawn(async move {
                serve_tls(t.listener, t.identity, app, t.cfg, async move {
                    s.cancelled().await
                })
                .await
                .context("https server")
            });
        }
        shutdown.await;
        stop.cancel();
        let mut result = Ok(());
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(anyhow::anyhow!("listener task: {e}")),
                Ok(Ok(())) => {}
            }
        }
        result
    }
}
