//! HTTPS with client certificates: the listener, the verified peer on every request, and 403 refusals.
//!
//! Each connection takes one [`TlsSnapshot`](sammen_identity::TlsSnapshot) for its handshake (so a reload
//! applies to new handshakes only), and every request on it carries the peer's
//! [`PeerIdentity`] as a request extension. Handshake failures, slow handshakes, slow headers and slow
//! bodies only end their own connection; the accept loop keeps serving.

use crate::answer::ErrorBody;
use crate::state::Ingress;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use sammen_identity::{PeerIdentity, Refusal, TlsIdentity};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

pub use crate::handshake::{refusal_code, HandshakeAudit, HandshakeAuditLimits};

/// Called for every request refused by identity (403), so the caller can count it.
pub type RefusalHook = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// Limits of the HTTPS listener.
#[derive(Clone)]
pub struct TlsServeConfig {
    /// Longest TLS handshake, and longest wait for a request's headers.
    pub handshake_timeout: Duration,
    /// Longest time to read one request body (408 after).
    pub request_timeout: Duration,
    /// Called on every 403 refusal.
    pub on_refusal: Option<RefusalHook>,
    /// Counters.
    pub stats: Arc<TlsStats>,
    /// Writes a `certificate-refused` leaf for a certificate refused in the handshake (rate-limited);
    /// `None`: such refusals are only counted.
    pub handshake_audit: Option<Arc<HandshakeAudit>>,
}

impl Default for TlsServeConfig {
    fn default() -> Self {
        TlsServeConfig {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            on_refusal: None,
            stats: Arc::default(),
            handshake_audit: None,
        }
    }
}

impl std::fmt::Debug for TlsServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServeConfig")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// What the listener counted.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Handshakes that failed or timed out.
    pub handshakes_refused: AtomicU64,
    /// Handshakes that succeeded.
    pub handshakes_ok: AtomicU64,
    /// Requests refused with 403.
    pub requests_refused: AtomicU64,
    /// Handshake certificate refusals written as audit leaves.
    pub certificate_refusals_recorded: AtomicU64,
    /// Handshake certificate refusals the audit rate limit kept out of the log (see [`HandshakeAudit`]).
    pub certificate_refusals_suppressed: AtomicU64,
}

impl TlsStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Put on a 403 response: which refusal it was.
#[derive(Debug, Clone)]
pub struct Refused(pub Refusal);

/// The 403 answer for a refusal (body `{"error": code, "reason": ...}`, [`Refused`] in its extensions).
pub fn refused(r: &Refusal) -> Response {
    let mut resp = (
        StatusCode::FORBIDDEN,
        Json(ErrorBody {
            error: r.code().into(),
            reason: r.to_string(),
        }),
    )
        .into_response();
    resp.extensions_mut().insert(Refused(r.clone()));
    resp
}

/// The ingress routes for the HTTPS listener: [`crate::router`] plus a guard that refuses, with 403, any
/// request under `/v1/` from a certificate that no partner entry names (health checks stay open).
pub fn tls_router(state: Arc<Ingress>) -> Router {
    let guard = middleware::from_fn_with_state(state.clone(), require_partner);
    crate::router(state).layer(guard)
}

async fn require_partner(
    axum::extract::State(ing): axum::extract::State<Arc<Ingress>>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/v1/") {
        let peer = req.extensions().get::<PeerIdentity>();
        let partner = peer.and_then(|p| p.partner.as_ref());
        if partner.is_none() {
            // Audit leaf (issue #5): which certificate, never what it sent.
            let fp = peer.map(|p| p.cert.fingerprint.clone());
            let ev = sammen_outbox::sammen_audit::Event::CertificateRefused {
                code: None,
                suppressed: None,
            };
            crate::leaves::refused(&ing, None, &[], fp.as_deref(), ev).await;
            return refused(&Refusal::Certificate(
                sammen_identity::CertificateRefusal::Unregistered,
            ));
        }
    }
    next.run(req).await
}

/// Serve `app` over TLS on `listener` until `shutdown` completes, then let open requests finish (up to
/// `request_timeout`).
pub async fn serve_tls(
    listener: TcpListener,
    identity: Arc<TlsIdentity>,
    app: Router,
    cfg: TlsServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let tcp = match tcp {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let snap = identity.snapshot();
        let (identity, app, cfg) = (identity.clone(), app.clone(), cfg.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(snap.server_config.clone());
            let presented = sammen_identity::PresentedSlot::new();
            let accept = Presented {
                slot: presented.clone(),
                inner: acceptor.accept(tcp),
            };
            let tls = match tokio::time::timeout(cfg.handshake_timeout, accept).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    TlsStats::bump(&cfg.stats.handshakes_refused);
                    debug!(error = %e, "TLS handshake refused");
                    if let (Some(audit), Some(code)) = (&cfg.handshake_audit, refusal_code(&e)) {
                        audit
                            .record(presented.fingerprint(), code, &cfg.stats)
                            .await;
                    }
                    return;
                }
                Err(_) => {
                    TlsStats::bump(&cfg.stats.handshakes_refused);
                    debug!("TLS handshake timed out");
                    return;
                }
            };
            let peer = identity.identify(
                &snap,
                tls.get_ref().1.peer_certificates().unwrap_or_default(),
            );
            let Some(peer) = peer else {
                // Cannot happen with a verifier that requires a certificate; never serve without one.
                TlsStats::bump(&cfg.stats.handshakes_refused);
                return;
            };
            TlsStats::bump(&cfg.stats.handshakes_ok);
            let header_timeout = cfg.handshake_timeout;
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (app, cfg, peer) = (app.clone(), cfg.clone(), peer.clone());
                    async move {
                        let mut req =
                            req.map(|b| Body::new(DeadlineBody::new(b, cfg.request_timeout)));
                        req.extensions_mut().insert(peer);
                        let resp = match tower_service::Service::call(&mut app.clone(), req).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        };
                        if let Some(Refused(r)) = resp.extensions().get::<Refused>() {
                            TlsStats::bump(&cfg.stats.requests_refused);
                            info!(code = r.code(), "request refused by identity");
                            if let Some(hook) = &cfg.on_refusal {
                                hook(r);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn).await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(cfg.request_timeout, graceful.shutdown()).await;
    Ok(())
}

/// Reload the TLS layer when its files change (every `interval`; zero: never by polling) and on SIGHUP,
/// until `stop` completes. `on_reload` runs after each successful reload (e.g. to emit certificate
/// expiry metrics).
pub async fn watch_reload(
    identity: Arc<TlsIdentity>,
    interval: Duration,
    on_reload: impl Fn(&TlsIdentity) + Send,
    stop: impl Future<Output = ()> + Send,
) {
    let mut stop = std::pin::pin!(stop);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let poll = if interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        interval
    };
    loop {
        #[cfg(unix)]
        let hup_fut = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_fut = std::future::pending::<()>();
        let forced = tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(poll) => false,
            () = hup_fut => true,
        };
        let r = if forced {
            identity.reload()
        } else if interval.is_zero() {
            continue;
        } else {
            identity.reload_if_changed()
        };
        match r {
            Ok(sammen_identity::ReloadOutcome::Reloaded { generation }) => {
                info!(generation, "TLS certificates and partners reloaded");
                on_reload(&identity);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "TLS reload failed; the previous certificates stay in use"),
        }
    }
}

/// A TLS accept polled with `slot` installed, so the verifier can name the certificate it refuses.
struct Presented<F> {
    slot: sammen_identity::PresentedSlot,
    inner: F,
}

impl<F: Future + Unpin> Future for Presented<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        sammen_identity::observe_presented(&this.slot, || Pin::new(&mut this.inner).poll(cx))
    }
}

/// The body did not arrive within the request timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// True when a body-read error was caused by [`BodyTimeout`].
pub(crate) fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<BodyTimeout>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes (slow-body defence).
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: hyper::body::Incoming, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
