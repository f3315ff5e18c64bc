//! Audit leaves for client certificates refused in the TLS handshake (issue #5).
//!
//! rustls refuses an unknown CA, an expired or not-yet-valid certificate, a missing certificate or one
//! without clientAuth before any request exists, so the 403 path ([`crate::leaves::refused`]) never sees
//! them. The listener classifies the handshake error ([`refusal_code`]), takes the presented end-entity
//! certificate's fingerprint from the verifier ([`sammen_identity::PresentedSlot`]) and writes one
//! `certificate-refused` leaf with `code` and `cert_fingerprint` through the same path as the other
//! refusal leaves (`Outbox::record_all`, its own durable batch, off the async workers). No peer address,
//! no certificate content: fingerprint and reason code only.
//!
//! ## Rate limit
//! An unauthenticated peer causes these, and every leaf costs a durable commit and stays in the log
//! for good, so writes are bounded twice over ([`HandshakeAuditLimits`]):
//! - per (fingerprint, reason): at most one leaf per `interval`; the next leaf of that pair carries how
//!   many refusals of it were not written in between (`suppressed`);
//! - overall: at most `max_leaves_per_interval` leaves per `interval`, because a peer can mint a fresh
//!   self-signed certificate (a new fingerprint) for every attempt.
//!
//! Every refusal without a leaf of its own is counted in
//! [`TlsStats::certificate_refusals_suppressed`](crate::tls::TlsStats). At most `max_tracked` pairs are
//! remembered (expired ones are dropped first), so memory is bounded too; a pair that finds the table
//! full is bounded by the overall limit only, and its suppressed refusals are in the counter only.

use crate::leaves::millis;
use crate::state::SharedOutbox;
use crate::tls::TlsStats;
use sammen_identity::rustls::{CertificateError as C, Error as E};
use sammen_outbox::sammen_audit::{Event, LeafEvent, Outcome};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tracing::warn;

/// Why a handshake refused the client certificate, as a stable code; `None` when the handshake failed
/// for another reason (protocol error, timeout, the client hanging up), which gets no leaf.
pub fn refusal_code(e: &std::io::Error) -> Option<&'static str> {
    let err = e.get_ref()?.downcast_ref::<E>()?;
    Some(match err {
        E::NoCertificatesPresented => "no-certificate",
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "unknown-ca",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not-yet-valid",
            C::Revoked => "revoked",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "bad-purpose",
            C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => "bad-signature",
            C::BadEncoding => "bad-encoding",
            _ => "invalid-certificate",
        },
        _ => return None,
    })
}

/// Bounds on handshake-refusal leaves (see the module docs).
#[derive(Debug, Clone)]
pub struct HandshakeAuditLimits {
    /// The window of both limits.
    pub interval: Duration,
    /// Most leaves per window, over all certificates.
    pub max_leaves_per_interval: u64,
    /// Most (fingerprint, reason) pairs remembered.
    pub max_tracked: usize,
}

impl Default for HandshakeAuditLimits {
    fn default() -> Self {
        HandshakeAuditLimits {
            interval: Duration::from_secs(60),
            max_leaves_per_interval: 60,
            max_tracked: 4096,
        }
    }
}

type Pair = (Option<String>, &'static str);

struct Seen {
    since: Instant,
    suppressed: u64,
}

#[derive(Default)]
struct Limiter {
    window: Option<Instant>,
    written: u64,
    pairs: HashMap<Pair, Seen>,
}

impl Limiter {
    /// `Some(suppressed since the pair's last leaf)` when this refusal gets a leaf now.
    fn admit(&mut self, pair: Pair, now: Instant, l: &HandshakeAuditLimits) -> Option<u64> {
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= l.interval)
        {
            self.window = Some(now);
            self.written = 0;
        }
        let fresh = |s: &Seen| now.duration_since(s.since) < l.interval;
        if let Some(s) = self.pairs.get_mut(&pair) {
            if fresh(s) || self.written >= l.max_leaves_per_interval {
                s.suppressed += 1;
                return None;
            }
        } else if self.written >= l.max_leaves_per_interval {
            return None;
        }
        self.written += 1;
        let carried = self.pairs.remove(&pair).map_or(0, |s| s.suppressed);
        if self.pairs.len() >= l.max_tracked {
            self.pairs.retain(|_, s| fresh(s));
        }
        if self.pairs.len() < l.max_tracked {
            let seen = Seen {
                since: now,
                suppressed: 0,
            };
            self.pairs.insert(pair, seen);
        }
        Some(carried)
    }
}

/// Writes (rate-limited) `certificate-refused` leaves for handshake refusals; put it in
/// [`TlsServeConfig::handshake_audit`](crate::tls::TlsServeConfig).
pub struct HandshakeAudit {
    outbox: SharedOutbox,
    limits: HandshakeAuditLimits,
    limiter: Mutex<Limiter>,
}

impl std::fmt::Debug for HandshakeAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeAudit")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl HandshakeAudit {
    /// Leaves go to `outbox`'s audit log (nothing is written when it has none).
    pub fn new(outbox: SharedOutbox, limits: HandshakeAuditLimits) -> Self {
        HandshakeAudit {
            outbox,
            limits,
            limiter: Mutex::default(),
        }
    }

    /// Record one refusal: a durable leaf, or a count in `stats` when the limit suppresses it.
    pub(crate) async fn record(
        &self,
        fingerprint: Option<String>,
        code: &'static str,
        stats: &TlsStats,
    ) {
        if self.outbox.audit().is_none() {
            return;
        }
        let admitted = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit((fingerprint.clone(), code), Instant::now(), &self.limits);
        let Some(suppressed) = admitted else {
            stats
                .certificate_refusals_suppressed
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let event = Event::CertificateRefused {
            code: Some(code.to_owned()),
            suppressed: (suppressed > 0).then_some(suppressed),
        };
        let mut leaf = LeafEvent::new(millis(SystemTime::now()), event, Outcome::SeriousFailure);
        leaf.cert_fingerprint = fingerprint.map(Into::into);
        let ob = self.outbox.clone();
        match tokio::task::spawn_blocking(move || ob.record_all(vec![leaf])).await {
            Ok(Ok(_)) => {
                stats
                    .certificate_refusals_recorded
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => warn!(error = %e, "audit: recording a handshake refusal failed"),
            Err(_) => warn!("audit: recording a handshake refusal was aborted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u64, tracked: usize) -> HandshakeAuditLimits {
        HandshakeAuditLimits {
            interval: Duration::from_secs(60),
            max_leaves_per_interval: max,
            max_tracked: tracked,
        }
    }

    #[test]
    fn one_leaf_per_pair_per_interval_and_the_next_carries_the_count() {
        let (l, t0) = (limits(100, 16), Instant::now());
        let mut lim = Limiter::default();
        let a = || (Some("aa".to_owned()), "unknown-ca");
        assert_eq!(lim.admit(a(), t0, &l), Some(0));
        for s in 1..=5 {
            assert_eq!(lim.admit(a(), t0 + Duration::from_secs(s), &l), None);
        }
        // Another reason or another certificate is another pair.
        assert_eq!(lim.admit((Some("aa".into()), "expired"), t0, &l), Some(0));
        assert_eq!(lim.admit((None, "no-certificate"), t0, &l), Some(0));
        assert_eq!(lim.admit(a(), t0 + Duration::from_secs(60), &l), Some(5));
        assert_eq!(lim.admit(a(), t0 + Duration::from_secs(61), &l), None);
    }

    #[test]
    fn fresh_fingerprints_cannot_exceed_the_overall_budget() {
        let (l, t0) = (limits(3, 2), Instant::now());
        let mut lim = Limiter::default();
        let written = (0..1000)
            .filter(|i| {
                lim.admit((Some(format!("{i:x}")), "unknown-ca"), t0, &l)
                    .is_some()
            })
            .count();
        assert_eq!(written, 3);
        assert!(lim.pairs.len() <= 2);
        // A new window gives a new budget.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            lim.admit((Some("new".into()), "unknown-ca"), later, &l),
            Some(0)
        );
    }

    #[test]
    fn refusals_over_budget_are_carried_by_a_known_pair() {
        let (l, t0) = (limits(1, 16), Instant::now());
        let mut lim = Limiter::default();
        let a = || (Some("aa".to_owned()), "unknown-ca");
        assert_eq!(lim.admit(a(), t0, &l), Some(0));
        assert_eq!(lim.admit(a(), t0 + Duration::from_secs(30), &l), None);
        // Window over, budget renewed: the pair's count comes along.
        assert_eq!(lim.admit(a(), t0 + Duration::from_secs(61), &l), Some(1));
    }
}
