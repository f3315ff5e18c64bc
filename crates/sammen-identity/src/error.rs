//! Errors of loading and building the identity layer (never of a single handshake or request).

use std::path::PathBuf;

/// Why certificate material, a partner registry or the dev PKI could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// PEM without the expected section, or broken PEM.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate that x509-parser cannot read.
    #[error("certificate cannot be parsed: {0}")]
    Certificate(String),
    /// rustls refused the configuration (e.g. key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client CA bundle cannot make a verifier (e.g. empty).
    #[error("client CA: {0}")]
    ClientCa(String),
    /// The partner registry is invalid.
    #[error("partners: {0}")]
    Partners(#[from] sammen_config::ConfigError),
    /// rcgen could not generate a certificate.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Some, but not all, dev PKI files exist: nothing is overwritten.
    #[error("{0} exists but the dev PKI beside it is incomplete; remove the directory or complete it (nothing is overwritten)")]
    PartialDevPki(PathBuf),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}
