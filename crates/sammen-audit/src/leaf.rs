//! The leaf: one lifecycle event, its canonical encoding and the keyed patient pseudonym.
//!
//! ## Encodings
//! Leaves written today are **version 3**, compact binary (layout and why in [`crate::leaf_bin`]: about
//! 110 instead of 430 bytes a FHIR message's leaf, in a log that is kept for good). Logs keep the
//! **version 2** (binary, ids as strings) and **version 1** leaves they already hold, and they keep
//! verifying. Version 1 is the compact JSON that `serde_json` writes for
//! [`Leaf`] with `v = 1` (fields in declaration order, absent optional fields omitted, integers only,
//! strings as `serde_json` escapes them), recognised by its first byte `{`. A leaf's `v` says which
//! encoding [`Leaf::encode`] writes.
//!
//! All are *canonical*: [`Leaf::decode`] refuses bytes that do not re-encode to themselves, so one event
//! has exactly one byte string per version and one leaf hash. An auditor reads leaves decoded, as JSON
//! (`sammen audit search`, the `decoded` part of a proof), with ordinary tools.
//!
//! ## Personal data
//! No field holds a name, clinical text or CPR number. The patient appears only as
//! `patient = hex(HMAC-SHA256(key, CPR))` with a secret [`PatientKey`] from the configuration: stable
//! (an auditor holding the key finds every event for one CPR number) but not reversible without the key.

use base64::Engine as _;
use sammen_model::{AckCode, Family, Party, PatientId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

use crate::error::AuditError;

/// Leaf format version written today ([`crate::leaf_bin`]).
pub const LEAF_VERSION: u8 = crate::leaf_bin::VERSION;

/// The JSON leaf format of logs written before version 2.
pub const LEAF_VERSION_JSON: u8 = 1;

/// Position of a leaf in the log (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeafIndex(pub u64);

/// What happened. Tagged by `kind` in the encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Event {
    /// The message arrived.
    Received,
    /// The message was refused at validation; `code` is the stable issue code.
    Rejected {
        /// Stable issue code (e.g. `id.gln.check-digit`).
        code: String,
    },
    /// The message was durably accepted.
    Accepted,
    /// Published to the bus (confirmed).
    Published,
    /// Delivered to the receiver.
    Delivered,
    /// The receiver's acknowledgement arrived.
    Acknowledged {
        /// The acknowledgement's response code.
        code: AckCode,
    },
    /// No acknowledgement within the deadline.
    Overdue,
    /// Given up (dead letter).
    Dead,
    /// The record (metadata, and its payload if still kept) removed by retention.
    Purged,
    /// Only the payload removed by retention; the record's metadata is kept.
    PayloadPurged,
    /// A resend of an earlier message (same message id, new Bundle id).
    Resend,
    /// A duplicate (same message id and Bundle id); nothing stored.
    Duplicate,
    /// A client certificate was refused: in the TLS handshake (`code` says why, e.g. `unknown-ca`,
    /// `no-certificate`) or after it (no `code`: a verified certificate that no partner names). Both
    /// fields are omitted when absent, so leaves written before they existed decode unchanged.
    CertificateRefused {
        /// Stable refusal reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// Refusals of the same certificate and reason not written as leaves of their own since the
        /// last such leaf (the handshake audit is rate-limited).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suppressed: Option<u64>,
    },
    /// A sender identity (GLN/SOR vs certificate) was refused.
    IdentityRefused,
    /// Operator: configuration reloaded.
    ConfigReload,
    /// Operator: messages replayed.
    Replay,
    /// The log was created; names the first checkpoint signing key. Always leaf 0.
    LogCreated {
        /// Ed25519 public key, base64.
        key: String,
    },
    /// Operator: the checkpoint signing key changes to `new_key`; `signature` is the old key's Ed25519
    /// signature over [`rotation_message`].
    KeyRotation {
        /// New Ed25519 public key, base64.
        new_key: String,
        /// Old key's signature, base64.
        signature: String,
    },
    /// This index was handed out but the batch carrying it failed; written so the tree stays contiguous.
    /// Records no change.
    LostWrite,
}

impl Event {
    /// Stable kind name, as in the encoding.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Received => "received",
            Event::Rejected { .. } => "rejected",
            Event::Accepted => "accepted",
            Event::Published => "published",
            Event::Delivered => "delivered",
            Event::Acknowledged { .. } => "acknowledged",
            Event::Overdue => "overdue",
            Event::Dead => "dead",
            Event::Purged => "purged",
            Event::PayloadPurged => "payload-purged",
            Event::Resend => "resend",
            Event::Duplicate => "duplicate",
            Event::CertificateRefused { .. } => "certificate-refused",
            Event::IdentityRefused => "identity-refused",
            Event::ConfigReload => "config-reload",
            Event::Replay => "replay",
            Event::LogCreated { .. } => "log-created",
            Event::KeyRotation { .. } => "key-rotation",
            Event::LostWrite => "lost-write",
        }
    }
}

/// Outcome, as the DICOM/ATNA `EventOutcomeIndicator` (0, 4, 8, 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Outcome {
    /// 0: success.
    Success,
    /// 4: minor failure (e.g. a transient error, will retry).
    MinorFailure,
    /// 8: serious failure (refused).
    SeriousFailure,
    /// 12: major failure (given up).
    MajorFailure,
}

impl Outcome {
    /// ATNA code.
    pub const fn atna_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::MinorFailure => 4,
            Outcome::SeriousFailure => 8,
            Outcome::MajorFailure => 12,
        }
    }
}

/// A decoded leaf. See the module docs for the encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leaf {
    /// Format version ([`LEAF_VERSION`]).
    pub v: u8,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The event.
    pub event: Event,
    /// Message id (FHIR MessageHeader.id, OIOXML letter id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Envelope id (FHIR Bundle.id, OIOXML envelope id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    /// Message family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    /// Event code within the family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_code: Option<String>,
    /// Sender GLN/SOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Party>,
    /// Receiver GLN/SOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Party>,
    /// Client certificate fingerprint (hex SHA-256 of the DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
    /// Payload SHA-256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// Patient pseudonym: hex HMAC-SHA256 of the CPR number with the configured key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

impl Leaf {
    /// Canonical bytes: version-1 JSON when `v` is 1, else version 2.
    pub fn encode(&self) -> Vec<u8> {
        if self.v == LEAF_VERSION_JSON {
            // Serialising a struct of strings, integers and unit enums cannot fail.
            serde_json::to_vec(self).unwrap_or_default()
        } else {
            crate::leaf_bin::encode(&self.view())
        }
    }

    /// Decode canonical bytes of either version; refuses non-canonical input.
    pub fn decode(bytes: &[u8]) -> Result<Leaf, LeafDecodeError> {
        let leaf = match bytes.first() {
            Some(b'{') => {
                let leaf: Leaf =
                    serde_json::from_slice(bytes).map_err(|_| LeafDecodeError::Malformed)?;
                if leaf.v != LEAF_VERSION_JSON {
                    return Err(LeafDecodeError::UnknownVersion(leaf.v));
                }
                leaf
            }
            Some(&crate::leaf_bin::VERSION | &crate::leaf_bin::VERSION_2) => {
                crate::leaf_bin::decode(bytes)?
            }
            Some(&v) if v < b' ' => return Err(LeafDecodeError::UnknownVersion(v)),
            _ => return Err(LeafDecodeError::Malformed),
        };
        if leaf.encode() != bytes {
            return Err(LeafDecodeError::NotCanonical);
        }
        Ok(leaf)
    }

    /// The RFC 6962 leaf hash of the canonical bytes.
    pub fn hash(&self) -> crate::Hash {
        crate::tree::leaf_hash(&self.encode())
    }
}

/// Why leaf bytes do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeafDecodeError {
    /// Not a JSON leaf.
    #[error("not a well-formed leaf")]
    Malformed,
    /// Unknown format version.
    #[error("unknown leaf version {0}")]
    UnknownVersion(u8),
    /// Decodes, but is not the canonical encoding.
    #[error("leaf is not canonically encoded")]
    NotCanonical,
}

/// What a caller records. The log turns it into a [`Leaf`], hashing the patient id with its key.
///
/// Its strings and parties may be borrowed (`'a`): the outbox records three events a message from the
/// record it already holds, and cloning every id and party for each was most of the audit's allocations
/// on the accept path. `LeafEvent<'static>` owns them ([`Self::into_owned`]).
#[derive(Debug, Clone)]
pub struct LeafEvent<'a> {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// What happened.
    pub event: Event,
    /// Message id.
    pub message_id: Option<Cow<'a, str>>,
    /// Bundle / envelope id.
    pub bundle_id: Option<Cow<'a, str>>,
    /// Family.
    pub family: Option<Family>,
    /// Event code within the family.
    pub event_code: Option<Cow<'a, str>>,
    /// Sender.
    pub sender: Option<Cow<'a, Party>>,
    /// Receiver.
    pub receiver: Option<Cow<'a, Party>>,
    /// Certificate fingerprint, hex.
    pub cert_fingerprint: Option<Cow<'a, str>>,
    /// Payload SHA-256.
    pub payload_sha256: Option<[u8; 32]>,
    /// Outcome.
    pub outcome: Outcome,
    /// The patient, hashed with the log's [`PatientKey`]; never stored as is.
    pub patient: Option<PatientId>,
    /// An already computed pseudonym ([`PatientKey::pseudonym`]), for events after the one that saw the
    /// patient id (the outbox keeps only this). Used when `patient` is `None`.
    pub patient_pseudonym: Option<Cow<'a, str>>,
}

impl<'a> LeafEvent<'a> {
    /// An event with only time, kind and outcome set.
    pub fn new(time_ms: u64, event: Event, outcome: Outcome) -> Self {
        LeafEvent {
            time_ms,
            event,
            message_id: None,
            bundle_id: None,
            family: None,
            event_code: None,
            sender: None,
            receiver: None,
            cert_fingerprint: None,
            payload_sha256: None,
            outcome,
            patient: None,
            patient_pseudonym: None,
        }
    }

    /// The same event owning its strings (e.g. to outlive the record it was read from).
    pub fn into_owned(self) -> LeafEvent<'static> {
        let own = |s: Option<Cow<'a, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        let own_party = |p: Option<Cow<'a, Party>>| p.map(|p| Cow::Owned(p.into_owned()));
        LeafEvent {
            time_ms: self.time_ms,
            event: self.event,
            message_id: own(self.message_id),
            bundle_id: own(self.bundle_id),
            family: self.family,
            event_code: own(self.event_code),
            sender: own_party(self.sender),
            receiver: own_party(self.receiver),
            cert_fingerprint: own(self.cert_fingerprint),
            payload_sha256: self.payload_sha256,
            outcome: self.outcome,
            patient: self.patient,
            patient_pseudonym: own(self.patient_pseudonym),
        }
    }

    /// The fields this event's leaf encodes, `pseudonym` its patient's (from `patient` hashed with the
    /// log's key, or `patient_pseudonym`): what [`Self::into_leaf`] gives, without building the leaf.
    pub(crate) fn view<'v>(&'v self, pseudonym: Option<&'v str>) -> crate::leaf_bin::View<'v> {
        use crate::leaf_bin::HashField;
        crate::leaf_bin::View {
            version: LEAF_VERSION,
            time_ms: self.time_ms,
            outcome: self.outcome,
            event: &self.event,
            message_id: self.message_id.as_deref(),
            bundle_id: self.bundle_id.as_deref(),
            family: self.family,
            event_code: self.event_code.as_deref(),
            sender: self.sender.as_deref().filter(|p| !p.is_empty()),
            receiver: self.receiver.as_deref().filter(|p| !p.is_empty()),
            cert_fingerprint: self.cert_fingerprint.as_deref().map(HashField::Text),
            payload_sha256: self.payload_sha256.as_ref().map(HashField::Raw),
            patient: pseudonym.map(HashField::Text),
        }
    }

    /// This event's patient pseudonym: `patient` hashed with `key`, else `patient_pseudonym`.
    pub(crate) fn pseudonym(&self, key: &PatientKey) -> Option<Cow<'_, str>> {
        match &self.patient {
            Some(p) => Some(Cow::Owned(key.pseudonym(p.expose()))),
            None => self.patient_pseudonym.as_deref().map(Cow::Borrowed),
        }
    }

    /// Build the leaf; the patient id becomes its keyed hash.
    pub fn into_leaf(self, key: &PatientKey) -> Leaf {
        let patient = self.pseudonym(key).map(Cow::into_owned);
        let own = |s: Option<Cow<'a, str>>| s.map(Cow::into_owned);
        let party = |p: Option<Cow<'a, Party>>| p.map(Cow::into_owned).filter(|p| !p.is_empty());
        Leaf {
            v: LEAF_VERSION,
            time_ms: self.time_ms,
            event: self.event,
            message_id: own(self.message_id),
            bundle_id: own(self.bundle_id),
            family: self.family,
            event_code: own(self.event_code),
            sender: party(self.sender),
            receiver: party(self.receiver),
            cert_fingerprint: own(self.cert_fingerprint),
            payload_sha256: self.payload_sha256.map(|h| hex(&h)),
            outcome: self.outcome,
            patient,
        }
    }
}

/// The secret HMAC key for patient pseudonyms. `Debug` never prints it.
#[derive(Clone)]
pub struct PatientKey {
    /// SHA-256 states after the key's inner and outer pad blocks: every pseudonym starts from them
    /// instead of hashing both pads again (half the compressions of an HMAC, once per accept). Boxed:
    /// the key travels by value in small enums (`ops::Search`).
    pads: Box<(Sha256, Sha256)>,
}

impl std::fmt::Debug for PatientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientKey(<redacted>)")
    }
}

impl PatientKey {
    /// A key from configuration bytes; at least 16 bytes, so it cannot be guessed.
    pub fn new(secret: &[u8]) -> Result<Self, AuditError> {
        if secret.len() < 16 {
            return Err(AuditError::Config(
                "patient HMAC key must be at least 16 bytes".into(),
            ));
        }
        let block = hmac_block(secret);
        let (mut inner, mut outer) = (Sha256::new(), Sha256::new());
        inner.update(block.map(|b| b ^ 0x36));
        outer.update(block.map(|b| b ^ 0x5c));
        Ok(PatientKey {
            pads: Box::new((inner, outer)),
        })
    }

    /// `hex(HMAC-SHA256(key, cpr))`, whitespace and a `-` after the date removed first.
    pub fn pseudonym(&self, cpr: &str) -> String {
        let norm: String = cpr
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let mut inner = self.pads.0.clone();
        inner.update(norm.as_bytes());
        let mut outer = self.pads.1.clone();
        outer.update(inner.finalize());
        hex(&outer.finalize())
    }
}

/// The key as one 64-byte block (RFC 2104: hashed first when longer).
fn hmac_block(key: &[u8]) -> [u8; 64] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    block
}

/// HMAC-SHA256 (RFC 2104).
#[cfg(test)]
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let block = hmac_block(key);
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    // A table rather than `write!`, and bytes rather than `String::push` (which encodes each char as
    // UTF-8): several hex strings per accepted message; callgrind counted 2,700 instructions a message.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut v = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        v.push(DIGITS[usize::from(b >> 4)]);
        v.push(DIGITS[usize::from(b & 0x0f)]);
    }
    // Only ASCII digits went in.
    String::from_utf8(v).unwrap_or_default()
}

/// Parse lower- or upper-case hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    // By pairs of bytes, not `from_str_radix` on sub-strings: once per `published` leaf (1,900
    // instructions a message under callgrind).
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let b = s.as_bytes();
    if b.len() % 2 == 1 {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some((digit(p[0])? << 4) | digit(p[1])?))
        .collect()
}

/// The bytes the old key signs to hand over to `new_key` (raw 32-byte Ed25519 public key).
pub fn rotation_message(origin: &str, new_key: &[u8; 32]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(new_key);
    format!("sammen-audit key rotation v1\n{origin}\n{b64}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn encoding_is_canonical_and_round_trips() {
        let key = PatientKey::new(&[7u8; 32]).unwrap();
        let mut ev = LeafEvent::new(
            1_700_000_000_000,
            Event::Acknowledged { code: AckCode::Ok },
            Outcome::Success,
        );
        ev.message_id = Some("a5e5b880-c087-4055-b9ec-99108695f81d".into());
        ev.family = Some(Family::CareCommunication);
        ev.patient = Some(PatientId::new("urn:oid:1.2.208.176.1.2", "2512489996"));
        let leaf = ev.into_leaf(&key);
        let bytes = leaf.encode();
        assert_eq!(bytes[0], LEAF_VERSION);
        assert_eq!(Leaf::decode(&bytes).unwrap(), leaf);
        assert!(!String::from_utf8_lossy(&bytes).contains("2512489996"));
        // The same leaf as version 1 (as older logs hold it) is JSON and decodes as such.
        let v1 = Leaf {
            v: LEAF_VERSION_JSON,
            ..leaf
        };
        let bytes = v1.encode();
        assert!(bytes.starts_with(b"{\"v\":1,\"time_ms\":1700000000000,\"event\":{\"kind\":\"acknowledged\",\"code\":\"ok\"}"));
        assert_eq!(Leaf::decode(&bytes).unwrap(), v1);
        let spaced = String::from_utf8(bytes).unwrap().replacen(':', ": ", 1);
        assert_eq!(
            Leaf::decode(spaced.as_bytes()),
            Err(LeafDecodeError::NotCanonical)
        );
        assert_eq!(key.pseudonym("251248-9996"), key.pseudonym("2512489996"));
    }

    #[test]
    fn pseudonym_is_hmac_sha256_of_the_normalised_cpr() {
        for secret in [&[7u8; 32][..], &[9u8; 100][..], b"0123456789abcdef"] {
            let key = PatientKey::new(secret).unwrap();
            let want = hex(&hmac_sha256(secret, b"2512489996"));
            assert_eq!(key.pseudonym("251248-9996"), want);
        }
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn unhex_reads_what_hex_writes_in_either_case_and_nothing_else() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&all)), Some(all.clone()));
        assert_eq!(unhex(&hex(&all).to_uppercase()), Some(all));
        assert_eq!(unhex(""), Some(Vec::new()));
        assert_eq!(unhex("0fA5"), Some(vec![0x0f, 0xa5]));
        // `from_str_radix` took a leading `+` in a pair; a hash is digits only.
        for bad in ["0", "abc", "+f", "0g", " 0", "0x", "é0", "éé"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn certificate_refused_without_code_keeps_its_old_encoding() {
        let key = PatientKey::new(&[7u8; 32]).unwrap();
        let plain = Event::CertificateRefused {
            code: None,
            suppressed: None,
        };
        let leaf = LeafEvent::new(1, plain, Outcome::SeriousFailure).into_leaf(&key);
        let bytes = Leaf {
            v: LEAF_VERSION_JSON,
            ..leaf
        }
        .encode();
        let old = br#"{"v":1,"time_ms":1,"event":{"kind":"certificate-refused"},"outcome":"serious-failure"}"#;
        assert_eq!(bytes, old);
        assert!(Leaf::decode(old).is_ok());
        let coded = Event::CertificateRefused {
            code: Some("unknown-ca".into()),
            suppressed: Some(3),
        };
        let mut leaf = LeafEvent::new(1, coded, Outcome::SeriousFailure).into_leaf(&key);
        assert_eq!(Leaf::decode(&leaf.encode()).unwrap(), leaf);
        leaf.v = LEAF_VERSION_JSON;
        let bytes = leaf.encode();
        assert!(String::from_utf8_lossy(&bytes)
            .contains(r#"{"kind":"certificate-refused","code":"unknown-ca","suppressed":3}"#));
        assert_eq!(Leaf::decode(&bytes).unwrap(), leaf);
    }
}
