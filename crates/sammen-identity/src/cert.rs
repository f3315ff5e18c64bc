//! What the broker reads from a certificate: fingerprint, issuer, the OCES subject attributes, validity.

use crate::error::IdentityError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// OID 2.5.4.5 (subject serialNumber; OCES2 `CVR:…-UID:…`).
const SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
/// OID 2.5.4.97 (organizationIdentifier; OCES3 `NTRDK-…`).
const ORGANIZATION_IDENTIFIER: &[u64] = &[2, 5, 4, 97];

/// The facts about one certificate that identity decisions and metrics use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// SHA-256 of the DER, lower-case hex without separators.
    pub fingerprint: String,
    /// Subject DN (RFC 4514 text as x509-parser prints it).
    pub subject: String,
    /// Issuer DN, normalised with [`normalize_dn`].
    pub issuer: String,
    /// Subject serialNumber attribute.
    pub serial_number: Option<String>,
    /// Subject organizationIdentifier attribute.
    pub organization_identifier: Option<String>,
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

impl CertSummary {
    /// Read a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Ok(CertSummary {
            fingerprint: fingerprint(der),
            subject: cert.subject().to_string(),
            issuer: normalize_dn(&cert.issuer().to_string()),
            serial_number: attr(cert.subject(), SERIAL_NUMBER),
            organization_identifier: attr(cert.subject(), ORGANIZATION_IDENTIFIER),
            not_before: unix(cert.validity().not_before.timestamp()),
            not_after: unix(cert.validity().not_after.timestamp()),
        })
    }

    /// Days until notAfter (negative once expired).
    pub fn days_to_expiry(&self, now: SystemTime) -> f64 {
        days_between(now, self.not_after)
    }
}

pub(crate) fn days_between(now: SystemTime, then: SystemTime) -> f64 {
    let secs = match then.duration_since(now) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    secs / 86_400.0
}

fn unix(ts: i64) -> SystemTime {
    match u64::try_from(ts) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(ts.unsigned_abs()),
    }
}

fn attr(name: &X509Name<'_>, oid: &[u64]) -> Option<String> {
    let oid = Oid::from(oid).ok()?;
    name.iter_by_oid(&oid)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
}

/// SHA-256 of `der`, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fingerprint as written in a config (any case, with or without colons) in [`fingerprint`]'s form.
pub fn normalize_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `cn=Test CA,O=Sammen,  C=DK` → `CN=Test CA, O=Sammen, C=DK`: attribute names upper-cased, one space
/// after each unescaped comma. Values are compared exactly.
pub fn normalize_dn(s: &str) -> String {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| {
            let p = p.trim();
            match p.split_once('=') {
                Some((k, v)) => format!("{}={}", k.trim().to_ascii_uppercase(), v.trim()),
                None => p.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let bytes = std::fs::read(path).map_err(crate::error::io(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(IdentityError::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE section".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let bytes = std::fs::read(path).map_err(crate::error::io(path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| IdentityError::Pem {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_normalisation() {
        assert_eq!(
            normalize_dn("cn=Test CA,O=Sammen\\, A/S,  c=DK"),
            "CN=Test CA, O=Sammen\\, A/S, C=DK"
        );
        assert_eq!(normalize_fingerprint("AB:cd"), "abcd");
    }
}
