//! Signed checkpoints in the transparency-log note style (C2SP `tlog-checkpoint` / `signed-note`).
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//! time <unix milliseconds>
//!
//! — <origin> <base64(key hash ‖ Ed25519 signature)>
//! ```
//! The signed message is the body: every line up to and including the newline before the blank line. The
//! key hash is the first 4 bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)` (0x01 = Ed25519), so a
//! verifier can tell which key signed. The signer name is the origin. `time` is an extension line, which
//! tlog-checkpoint allows after the root.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::tree::Hash;

/// An unsigned tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity (e.g. `sammen.example.dk/audit`).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root of the first `size` leaves.
    pub root: Hash,
    /// Unix time in milliseconds when it was signed.
    pub time_ms: u64,
}

impl Checkpoint {
    /// The signed body.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.time_ms
        )
    }

    /// Sign with `key`, producing the full note.
    pub fn sign(&self, key: &SigningKey) -> SignedCheckpoint {
        let body = self.body();
        let sig = key.sign(body.as_bytes());
        let kh = key_hash(&self.origin, &key.verifying_key());
        let mut blob = kh.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        let text = format!("{body}\n\u{2014} {} {}\n", self.origin, B64.encode(blob));
        SignedCheckpoint {
            checkpoint: self.clone(),
            key_hash: kh,
            signature: sig.to_bytes(),
            text,
        }
    }
}

/// A checkpoint with its (first) signature and the exact note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The tree head.
    pub checkpoint: Checkpoint,
    /// Key hash from the signature line.
    pub key_hash: [u8; 4],
    /// Ed25519 signature over the body.
    pub signature: [u8; 64],
    /// The note as written.
    pub text: String,
}

/// The 4-byte signed-note key hash of an Ed25519 key under `name`.
pub fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn bad(msg: &str) -> AuditError {
    AuditError::Checkpoint(msg.to_owned())
}

impl SignedCheckpoint {
    /// Parse a note strictly (no signature check). The first signature line whose name is the origin is used.
    pub fn parse(text: &str) -> Result<SignedCheckpoint, AuditError> {
        let (body, sigs) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size_s = lines.next().ok_or_else(|| bad("no size"))?;
        if size_s.is_empty()
            || !size_s.bytes().all(|b| b.is_ascii_digit())
            || (size_s.len() > 1 && size_s.starts_with('0'))
        {
            return Err(bad("size is not a canonical decimal"));
        }
        let size: u64 = size_s.parse().map_err(|_| bad("size out of range"))?;
        let root_s = lines.next().ok_or_else(|| bad("no root"))?;
        let root: Hash = B64
            .decode(root_s)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("root is not a base64 SHA-256"))?;
        let time_s = lines
            .next()
            .and_then(|l| l.strip_prefix("time "))
            .ok_or_else(|| bad("no time line"))?;
        if time_s.is_empty() || !time_s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("time is not decimal"));
        }
        let time_ms: u64 = time_s.parse().map_err(|_| bad("time out of range"))?;
        if lines.next().is_some() {
            return Err(bad("unexpected extension line"));
        }
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            time_ms,
        };
        if checkpoint.body() != format!("{body}\n") {
            return Err(bad("body is not canonical"));
        }
        if !sigs.ends_with('\n') {
            return Err(bad("signature block must end with a newline"));
        }
        for line in sigs.trim_end_matches('\n').split('\n') {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| bad("malformed signature line"))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| bad("malformed signature line"))?;
            if name != origin {
                continue;
            }
            let blob = B64
                .decode(blob)
                .map_err(|_| bad("signature is not base64"))?;
            if blob.len() != 68 {
                return Err(bad("signature has the wrong length"));
            }
            let mut key_hash = [0u8; 4];
            key_hash.copy_from_slice(&blob[..4]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&blob[4..]);
            return Ok(SignedCheckpoint {
                checkpoint,
                key_hash,
                signature,
                text: text.to_owned(),
            });
        }
        Err(bad("no signature by the origin"))
    }

    /// Check the signature with `key` (strict Ed25519; the key hash must match too).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), AuditError> {
        if key_hash(&self.checkpoint.origin, key) != self.key_hash {
            return Err(bad("signed by another key"));
        }
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(self.checkpoint.body().as_bytes(), &sig)
            .map_err(|_| bad("bad signature"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_round_trips_and_detects_changes() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let cp = Checkpoint {
            origin: "sammen.test/audit".into(),
            size: 42,
            root: [9u8; 32],
            time_ms: 1_700_000_000_000,
        };
        let signed = cp.sign(&key);
        assert!(signed.text.starts_with("sammen.test/audit\n42\n"));
        assert!(signed.text.contains("\n\n\u{2014} sammen.test/audit "));
        let parsed = SignedCheckpoint::parse(&signed.text).unwrap();
        assert_eq!(parsed, signed);
        parsed.verify(&key.verifying_key()).unwrap();
        let other = SigningKey::from_bytes(&[4u8; 32]);
        assert!(parsed.verify(&other.verifying_key()).is_err());
        let tampered = signed.text.replacen("\n42\n", "\n43\n", 1);
        let t = SignedCheckpoint::parse(&tampered).unwrap();
        assert!(t.verify(&key.verifying_key()).is_err());
        assert!(SignedCheckpoint::parse(&signed.text.replacen("\n42\n", "\n042\n", 1)).is_err());
    }
}
