//! Signing keys on disk: PKCS#8 PEM private key, SPKI PEM public key, fingerprints.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::leaf::hex;

/// File name of the private key written by [`keygen`].
pub const PRIVATE_KEY_FILE: &str = "audit-signing-key.pem";
/// File name of the public key written by [`keygen`].
pub const PUBLIC_KEY_FILE: &str = "audit-signing-key.pub.pem";

/// What [`keygen`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// PKCS#8 PEM private key (mode 0600).
    pub private_key: PathBuf,
    /// SPKI PEM public key.
    pub public_key: PathBuf,
    /// [`fingerprint`] of the public key.
    pub fingerprint: String,
}

/// `SHA256:` + hex SHA-256 of the raw 32-byte public key.
pub fn fingerprint(key: &VerifyingKey) -> String {
    format!("SHA256:{}", hex(&Sha256::digest(key.as_bytes())))
}

/// A fresh key from the OS random generator.
pub fn generate() -> Result<SigningKey, AuditError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| AuditError::Config(format!("no OS randomness: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Write a new signing key pair into `out_dir` (created if needed); refuses to overwrite.
pub fn keygen(out_dir: &Path) -> Result<KeyFiles, AuditError> {
    let key = generate()?;
    write_key_pair(&key, out_dir)
}

/// Write `key` as a PEM pair into `out_dir`; refuses to overwrite an existing private key.
pub fn write_key_pair(key: &SigningKey, out_dir: &Path) -> Result<KeyFiles, AuditError> {
    fs::create_dir_all(out_dir).map_err(|e| AuditError::io("create key dir", e))?;
    let private_key = out_dir.join(PRIVATE_KEY_FILE);
    let public_key = out_dir.join(PUBLIC_KEY_FILE);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| AuditError::Config(format!("encode private key: {e}")))?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| AuditError::Config(format!("encode public key: {e}")))?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&private_key)
        .map_err(|e| AuditError::io(format!("create {}", private_key.display()), e))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| AuditError::io("write private key", e))?;
    crate::export::write_atomic(&public_key, pub_pem.as_bytes())?;
    Ok(KeyFiles {
        private_key,
        public_key,
        fingerprint: fingerprint(&key.verifying_key()),
    })
}

/// Read a PKCS#8 PEM Ed25519 private key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, AuditError> {
    let pem = fs::read_to_string(path)
        .map_err(|e| AuditError::io(format!("read {}", path.display()), e))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        AuditError::Config(format!(
            "{} is not a PKCS#8 Ed25519 key: {e}",
            path.display()
        ))
    })
}

/// Read an SPKI PEM Ed25519 public key.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, AuditError> {
    let pem = fs::read_to_string(path)
        .map_err(|e| AuditError::io(format!("read {}", path.display()), e))?;
    parse_public_key(&pem)
}

/// Parse an SPKI PEM Ed25519 public key.
pub fn parse_public_key(pem: &str) -> Result<VerifyingKey, AuditError> {
    VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| AuditError::Config(format!("not an Ed25519 public key: {e}")))
}
