//! The rustls server config (required client certificates) and its reload without restart.

use crate::authz::PeerIdentity;
use crate::cert::{days_between, load_certs, load_key, CertSummary};
use crate::error::IdentityError;
use crate::registry::PartnerRegistry;
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The crypto provider: ring (no C toolchain beyond ring's own, no aws-lc-sys).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files the TLS layer is built from, re-read on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundles client certificates must chain to.
    pub client_ca: Vec<PathBuf>,
    /// Optional `[[partner]]` file.
    pub partners_file: Option<PathBuf>,
    /// Partners from the main config (not re-read: the main config is not reloaded).
    pub partners: Vec<sammen_config::Partner>,
}

impl TlsFiles {
    /// From `[tls]` and `[[partner]]`. With no certificate material named, the dev PKI in `pki_dir` (its
    /// `partners.toml` is used when no partners file is named).
    pub fn from_config(
        tls: &sammen_config::TlsConfig,
        partners: &[sammen_config::Partner],
        pki_dir: &Path,
    ) -> Self {
        if tls.uses_dev_pki() {
            let d = crate::devpki::DevPki::paths(pki_dir);
            TlsFiles {
                cert: d.server_cert,
                key: d.server_key,
                client_ca: vec![d.ca_cert],
                partners_file: tls.partners_file.clone().or(Some(d.partners_file)),
                partners: partners.to_vec(),
            }
        } else {
            TlsFiles {
                cert: tls.cert.clone().unwrap_or_default(),
                key: tls.key.clone().unwrap_or_default(),
                client_ca: tls.client_ca.clone(),
                partners_file: tls.partners_file.clone(),
                partners: partners.to_vec(),
            }
        }
    }

    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.iter().map(PathBuf::as_path));
        v.extend(self.partners_file.as_deref());
        v
    }

    /// Modification time and length of every file: what the file watch compares.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.all()
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// One consistent generation of the TLS layer: a handshake and the requests on its connection use one.
#[derive(Debug)]
pub struct TlsSnapshot {
    /// For `tokio_rustls::TlsAcceptor::from`.
    pub server_config: Arc<ServerConfig>,
    /// Partners of this generation.
    pub registry: Arc<PartnerRegistry>,
    /// The server's own certificate.
    pub server_cert: CertSummary,
    /// Reload generation, from 0.
    pub generation: u64,
}

/// Whose certificate an expiry belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpiryOwner {
    /// The broker's server certificate.
    Server,
    /// A partner's client certificate as last seen in a handshake.
    Partner {
        /// Partner label (name or GLN).
        name: String,
        /// Its primary GLN (the metrics label).
        gln: Option<String>,
    },
}

/// Days to expiry of one certificate (feed `sammen_telemetry::CertificateObserved`).
#[derive(Debug, Clone, PartialEq)]
pub struct CertExpiry {
    /// Whose.
    pub owner: ExpiryOwner,
    /// notAfter.
    pub not_after: SystemTime,
    /// Days from `now` (negative when expired).
    pub days: f64,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Nothing changed on disk (file watch).
    Unchanged,
    /// A new generation is in use.
    Reloaded {
        /// Its number.
        generation: u64,
    },
}

/// The reloadable TLS layer: swap in a new server config + registry without dropping connections.
///
/// Invariant: a failed reload leaves the previous generation in use (a half-written certificate never
/// takes the listener down).
#[derive(Debug)]
pub struct TlsIdentity {
    files: TlsFiles,
    current: ArcSwap<TlsSnapshot>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
    seen: Mutex<HashMap<String, (Option<String>, SystemTime)>>,
}

impl TlsIdentity {
    /// Load every file and build generation 0.
    pub fn load(files: TlsFiles) -> Result<Self, IdentityError> {
        let stamp = files.stamp();
        let snap = build(&files, 0)?;
        Ok(TlsIdentity {
            files,
            current: ArcSwap::from_pointee(snap),
            stamp: Mutex::new(stamp),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// The files this layer reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The generation in use. Take it once per connection.
    pub fn snapshot(&self) -> Arc<TlsSnapshot> {
        self.current.load_full()
    }

    /// Re-read everything and swap (SIGHUP). On error the old generation stays.
    pub fn reload(&self) -> Result<ReloadOutcome, IdentityError> {
        let stamp = self.files.stamp();
        let generation = self.current.load().generation + 1;
        let snap = build(&self.files, generation)?;
        self.current.store(Arc::new(snap));
        *lock(&self.stamp) = stamp;
        Ok(ReloadOutcome::Reloaded { generation })
    }

    /// Reload when a file's modification time or length changed (the file-watch poll).
    pub fn reload_if_changed(&self) -> Result<ReloadOutcome, IdentityError> {
        if self.files.stamp() == *lock(&self.stamp) {
            return Ok(ReloadOutcome::Unchanged);
        }
        self.reload()
    }

    /// Identify the peer of a finished handshake (certificates as rustls hands them over, end entity first)
    /// and remember its partner's expiry. `None` without a client certificate (cannot happen with the
    /// verifier built here, which requires one).
    pub fn identify(
        &self,
        snapshot: &TlsSnapshot,
        peer_certs: &[CertificateDer<'_>],
    ) -> Option<PeerIdentity> {
        let cert = CertSummary::parse(peer_certs.first()?).ok()?;
        let partner = snapshot.registry.identify(&cert);
        if let Some(p) = &partner {
            lock(&self.seen).insert(
                p.label().to_string(),
                (p.primary_gln().map(str::to_string), cert.not_after),
            );
        }
        Some(PeerIdentity {
            cert: Arc::new(cert),
            partner,
        })
    }

    /// Days to expiry of the server certificate and of every partner certificate seen so far (partners
    /// no longer in the registry are left out).
    pub fn expiries(&self, now: SystemTime) -> Vec<CertExpiry> {
        let snap = self.snapshot();
        let mut out = vec![CertExpiry {
            owner: ExpiryOwner::Server,
            not_after: snap.server_cert.not_after,
            days: snap.server_cert.days_to_expiry(now),
        }];
        let seen = lock(&self.seen);
        let mut partners: Vec<_> = seen
            .iter()
            .filter(|(name, _)| {
                snap.registry
                    .partners()
                    .iter()
                    .any(|p| p.label() == name.as_str())
            })
            .map(|(name, (gln, not_after))| CertExpiry {
                owner: ExpiryOwner::Partner {
                    name: name.clone(),
                    gln: gln.clone(),
                },
                not_after: *not_after,
                days: days_between(now, *not_after),
            })
            .collect();
        partners.sort_by_key(|e| e.not_after);
        out.extend(partners);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain inserts/assignments).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn build(files: &TlsFiles, generation: u64) -> Result<TlsSnapshot, IdentityError> {
    let mut specs = files.partners.clone();
    if let Some(pf) = &files.partners_file {
        let text = std::fs::read_to_string(pf).map_err(crate::error::io(pf))?;
        specs.extend(sammen_config::parse_partners(&text)?);
    }
    let registry = PartnerRegistry::new(&specs)?;
    let chain = load_certs(&files.cert)?;
    let server_cert = CertSummary::parse(chain.first().map(|c| c.as_ref()).unwrap_or_default())?;
    let key = load_key(&files.key)?;
    let mut cas = Vec::new();
    for f in &files.client_ca {
        cas.extend(load_certs(f)?);
    }
    let server_config = server_config(chain, key, &cas)?;
    Ok(TlsSnapshot {
        server_config,
        registry: Arc::new(registry),
        server_cert,
        generation,
    })
}

/// A server config: TLS 1.3 and 1.2, ring, HTTP/1.1 ALPN, client certificates required and verified
/// against `client_cas` (validity, chain, signature, and the clientAuth extended key usage).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    client_cas: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, IdentityError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for ca in client_cas {
        roots.add(ca.clone())?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| IdentityError::ClientCa(e.to_string()))?;
    let verifier = Arc::new(RequireClientAuthEku { inner });
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// webpki's client verifier, plus: the end-entity certificate must carry an extendedKeyUsage extension
/// naming clientAuth. webpki accepts a certificate without the extension; a broker whose peers are
/// organisations should not.
#[derive(Debug)]
struct RequireClientAuthEku {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequireClientAuthEku {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Before verifying: a refused certificate is the one the audit leaf must name.
        crate::presented::note(end_entity);
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let client_auth = X509Certificate::from_der(end_entity)
            .ok()
            .and_then(|(_, c)| {
                c.extended_key_usage()
                    .ok()
                    .flatten()
                    .map(|e| e.value.client_auth)
            })
            .unwrap_or(false);
        if client_auth {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client config for `sammen send` and tests: client certificate + key, server verified against `cas`.
pub fn client_config(
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    cas: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// [`client_config`] from PEM files.
pub fn client_config_from_files(
    cert: &Path,
    key: &Path,
    cas: &[PathBuf],
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let mut roots = Vec::new();
    for ca in cas {
        roots.extend(load_certs(ca)?);
    }
    client_config(load_certs(cert)?, load_key(key)?, &roots)
}
