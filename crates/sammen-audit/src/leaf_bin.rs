//! Leaf encodings version 3 (written today) and 2: compact binary.
//!
//! Why: the log is kept for good, three leaves per message, and every byte of a leaf is also copied into
//! the journal, a memtable, a flushed table and later compactions on the accept path. Version 1 JSON
//! spends about 430 bytes on a leaf (field names, hashes as hex); this spends about 160 on the same facts,
//! and no JSON escaping. (Whether it lowers the audit's CPU share measurably is open: README "Audit cost".) Version-1 leaves keep decoding and verifying unchanged; `sammen audit
//! search` and `prove` show every leaf decoded as JSON, so an auditor still reads them with ordinary tools.
//!
//! Written by hand because no crate gives a canonical binary form of our own struct with a strict,
//! allocation-light decoder; the format is small and fuzzed (`fuzz/fuzz_targets/audit_leaf.rs`).
//!
//! ## Layout
//! | part | bytes |
//! |---|---|
//! | version | `0x03` (`0x02`: older logs) |
//! | time_ms | u64 BE |
//! | outcome | u8, the ATNA code (0, 4, 8, 12) |
//! | event | u8 kind ([`kind_code`]), then the kind's fields (below) |
//! | present | u16 BE, a bit per optional field in this order: message id, Bundle id, family, event code, sender, receiver, certificate fingerprint, payload SHA-256, patient |
//! | fields | each present field in that order |
//!
//! The message id and the Bundle id (version 3) are a u8 form: `0` and 16 raw bytes when the value is a
//! UUID in canonical text (lower-case, hyphenated; MedCom's FHIR ids), `1` and a string otherwise
//! (OIOXML letter ids). Why: the two ids were 74 of a FHIR message leaf's ~130 bytes, in a log kept for
//! good. Version 2 writes both as strings; its leaves keep their bytes and hashes.
//!
//! A string is a LEB128 length (at most 5 bytes, minimal) and UTF-8. A family is its stable name as a
//! string. A party is a u8 (bit 0 GLN, bit 1 SOR) and those strings. The three hash fields
//! (fingerprint, payload SHA-256, patient) are a u8 form: `0` and 32 raw bytes when the value is 64
//! lower-case hex digits (always, when Sammen wrote it), `1` and a string otherwise. Event fields:
//! `rejected` a string; `acknowledged` a u8 (0 ok, 1 transient-error, 2 fatal-error);
//! `certificate-refused` a u8 (bit 0 code, bit 1 suppressed), the string, a u64 BE; `log-created` a
//! string; `key-rotation` two strings. Nothing may follow the last field.
//!
//! Canonical: [`crate::Leaf::decode`] re-encodes and refuses bytes that differ (a longer length
//! encoding, a hash or id in string form that fits the raw form, unknown bits), so one event has one
//! byte string per version and one leaf hash.

use sammen_model::{AckCode, Family, Party};

use crate::leaf::{hex, Event, Leaf, LeafDecodeError, Outcome};

/// First byte of a leaf written today (version 3).
pub(crate) const VERSION: u8 = 3;
/// First byte of a version-2 leaf: the same layout with the two ids always as strings.
pub(crate) const VERSION_2: u8 = 2;

const MESSAGE_ID: u16 = 1 << 0;
const BUNDLE_ID: u16 = 1 << 1;
const FAMILY: u16 = 1 << 2;
const EVENT_CODE: u16 = 1 << 3;
const SENDER: u16 = 1 << 4;
const RECEIVER: u16 = 1 << 5;
const CERT: u16 = 1 << 6;
const PAYLOAD: u16 = 1 << 7;
const PATIENT: u16 = 1 << 8;
const KNOWN: u16 = (1 << 9) - 1;

/// The kind byte of each event.
fn kind_code(e: &Event) -> u8 {
    match e {
        Event::Received => 0,
        Event::Rejected { .. } => 1,
        Event::Accepted => 2,
        Event::Published => 3,
        Event::Delivered => 4,
        Event::Acknowledged { .. } => 5,
        Event::Overdue => 6,
        Event::Dead => 7,
        Event::Purged => 8,
        Event::PayloadPurged => 9,
        Event::Resend => 10,
        Event::Duplicate => 11,
        Event::CertificateRefused { .. } => 12,
        Event::IdentityRefused => 13,
        Event::ConfigReload => 14,
        Event::Replay => 15,
        Event::LogCreated { .. } => 16,
        Event::KeyRotation { .. } => 17,
        Event::LostWrite => 18,
    }
}

fn ack_code(c: AckCode) -> u8 {
    match c {
        AckCode::Ok => 0,
        AckCode::TransientError => 1,
        AckCode::FatalError => 2,
    }
}

/// A 32-byte hash field as [`encode`] gets it: raw bytes (a [`crate::LeafEvent`]'s payload hash), or
/// text as a [`Leaf`] holds it (64 lower-case hex digits when Sammen wrote it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum HashField<'a> {
    Raw(&'a [u8; 32]),
    Text(&'a str),
}

/// The fields [`encode`] writes, borrowed: from a decoded [`Leaf`] ([`Leaf::view`]) or straight from a
/// [`crate::LeafEvent`] when it is staged. Why: staging built a `Leaf` (moving every string, hexing the
/// payload hash) only to encode it and parse the hex back; the accept path stages three leaves a message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) version: u8,
    pub(crate) time_ms: u64,
    pub(crate) outcome: Outcome,
    pub(crate) event: &'a Event,
    pub(crate) message_id: Option<&'a str>,
    pub(crate) bundle_id: Option<&'a str>,
    pub(crate) family: Option<Family>,
    pub(crate) event_code: Option<&'a str>,
    pub(crate) sender: Option<&'a Party>,
    pub(crate) receiver: Option<&'a Party>,
    pub(crate) cert_fingerprint: Option<HashField<'a>>,
    pub(crate) payload_sha256: Option<HashField<'a>>,
    pub(crate) patient: Option<HashField<'a>>,
}

impl Leaf {
    /// This leaf's fields for [`encode`]: version 2 when its `v` says so, else version 3.
    pub(crate) fn view(&self) -> View<'_> {
        View {
            version: if self.v == VERSION_2 {
                VERSION_2
            } else {
                VERSION
            },
            time_ms: self.time_ms,
            outcome: self.outcome,
            event: &self.event,
            message_id: self.message_id.as_deref(),
            bundle_id: self.bundle_id.as_deref(),
            family: self.family,
            event_code: self.event_code.as_deref(),
            sender: self.sender.as_ref(),
            receiver: self.receiver.as_ref(),
            cert_fingerprint: self.cert_fingerprint.as_deref().map(HashField::Text),
            payload_sha256: self.payload_sha256.as_deref().map(HashField::Text),
            patient: self.patient.as_deref().map(HashField::Text),
        }
    }
}

/// The binary bytes of a leaf (its `version`: 2 or 3).
pub(crate) fn encode(leaf: &View<'_>) -> Vec<u8> {
    let version = leaf.version;
    let mut w = Vec::with_capacity(160);
    w.push(version);
    w.extend_from_slice(&leaf.time_ms.to_be_bytes());
    w.push(leaf.outcome.atna_code());
    w.push(kind_code(leaf.event));
    match leaf.event {
        Event::Rejected { code } => put_str(&mut w, code),
        Event::Acknowledged { code } => w.push(ack_code(*code)),
        Event::CertificateRefused { code, suppressed } => {
            w.push(u8::from(code.is_some()) | (u8::from(suppressed.is_some()) << 1));
            if let Some(c) = code {
                put_str(&mut w, c);
            }
            if let Some(n) = suppressed {
                w.extend_from_slice(&n.to_be_bytes());
            }
        }
        Event::LogCreated { key } => put_str(&mut w, key),
        Event::KeyRotation { new_key, signature } => {
            put_str(&mut w, new_key);
            put_str(&mut w, signature);
        }
        _ => {}
    }
    let present = [
        (leaf.message_id.is_some(), MESSAGE_ID),
        (leaf.bundle_id.is_some(), BUNDLE_ID),
        (leaf.family.is_some(), FAMILY),
        (leaf.event_code.is_some(), EVENT_CODE),
        (leaf.sender.is_some(), SENDER),
        (leaf.receiver.is_some(), RECEIVER),
        (leaf.cert_fingerprint.is_some(), CERT),
        (leaf.payload_sha256.is_some(), PAYLOAD),
        (leaf.patient.is_some(), PATIENT),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(0u16, |bits, (_, bit)| bits | bit);
    w.extend_from_slice(&present.to_be_bytes());
    for s in [leaf.message_id, leaf.bundle_id].into_iter().flatten() {
        if version == VERSION_2 {
            put_str(&mut w, s);
        } else {
            put_id(&mut w, s);
        }
    }
    if let Some(f) = leaf.family {
        put_str(&mut w, f.as_str());
    }
    if let Some(c) = leaf.event_code {
        put_str(&mut w, c);
    }
    for p in [leaf.sender, leaf.receiver].into_iter().flatten() {
        w.push(u8::from(p.gln.is_some()) | (u8::from(p.sor.is_some()) << 1));
        for s in [&p.gln, &p.sor].into_iter().flatten() {
            put_str(&mut w, s);
        }
    }
    for h in [leaf.cert_fingerprint, leaf.payload_sha256, leaf.patient]
        .into_iter()
        .flatten()
    {
        match h {
            HashField::Raw(raw) => {
                w.push(0);
                w.extend_from_slice(raw);
            }
            HashField::Text(t) => match raw32(t) {
                Some(raw) => {
                    w.push(0);
                    w.extend_from_slice(&raw);
                }
                None => {
                    w.push(1);
                    put_str(&mut w, t);
                }
            },
        }
    }
    w
}

/// Decode version-2 bytes (the caller checks they re-encode to themselves).
pub(crate) fn decode(bytes: &[u8]) -> Result<Leaf, LeafDecodeError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    let id = match version {
        VERSION => Reader::id,
        VERSION_2 => Reader::string,
        _ => return Err(LeafDecodeError::Malformed),
    };
    let time_ms = r.u64()?;
    let outcome = match r.u8()? {
        0 => Outcome::Success,
        4 => Outcome::MinorFailure,
        8 => Outcome::SeriousFailure,
        12 => Outcome::MajorFailure,
        _ => return Err(LeafDecodeError::Malformed),
    };
    let event = match r.u8()? {
        0 => Event::Received,
        1 => Event::Rejected { code: r.string()? },
        2 => Event::Accepted,
        3 => Event::Published,
        4 => Event::Delivered,
        5 => Event::Acknowledged {
            code: match r.u8()? {
                0 => AckCode::Ok,
                1 => AckCode::TransientError,
                2 => AckCode::FatalError,
                _ => return Err(LeafDecodeError::Malformed),
            },
        },
        6 => Event::Overdue,
        7 => Event::Dead,
        8 => Event::Purged,
        9 => Event::PayloadPurged,
        10 => Event::Resend,
        11 => Event::Duplicate,
        12 => {
            let flags = r.u8()?;
            if flags & !3 != 0 {
                return Err(LeafDecodeError::Malformed);
            }
            Event::CertificateRefused {
                code: r.opt(flags & 1 != 0, Reader::string)?,
                suppressed: r.opt(flags & 2 != 0, Reader::u64)?,
            }
        }
        13 => Event::IdentityRefused,
        14 => Event::ConfigReload,
        15 => Event::Replay,
        16 => Event::LogCreated { key: r.string()? },
        17 => Event::KeyRotation {
            new_key: r.string()?,
            signature: r.string()?,
        },
        18 => Event::LostWrite,
        _ => return Err(LeafDecodeError::Malformed),
    };
    let present = u16::from_be_bytes(r.array()?);
    if present & !KNOWN != 0 {
        return Err(LeafDecodeError::Malformed);
    }
    let has = |bit: u16| present & bit != 0;
    // Fields are read in the order they are written (a struct literal evaluates in order).
    let leaf = Leaf {
        v: version,
        time_ms,
        event,
        message_id: r.opt(has(MESSAGE_ID), id)?,
        bundle_id: r.opt(has(BUNDLE_ID), id)?,
        family: r.opt(has(FAMILY), Reader::family)?,
        event_code: r.opt(has(EVENT_CODE), Reader::string)?,
        sender: r.opt(has(SENDER), Reader::party)?,
        receiver: r.opt(has(RECEIVER), Reader::party)?,
        cert_fingerprint: r.opt(has(CERT), Reader::hash)?,
        payload_sha256: r.opt(has(PAYLOAD), Reader::hash)?,
        outcome,
        patient: r.opt(has(PATIENT), Reader::hash)?,
    };
    if !r.0.is_empty() {
        return Err(LeafDecodeError::Malformed);
    }
    Ok(leaf)
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    // Lengths past u32 cannot occur (leaf fields are bounded far below); saturate rather than wrap.
    let mut n = u32::try_from(s.len()).unwrap_or(u32::MAX);
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            w.push(low);
            break;
        }
        w.push(low | 0x80);
    }
    w.extend_from_slice(s.as_bytes());
}

/// An id: `0` and 16 raw bytes when it is a UUID in its canonical text (lower-case hex, hyphens at 8, 13,
/// 18 and 23, as MedCom's FHIR ids are), `1` and a string otherwise (OIOXML letter ids, anything else).
fn put_id(w: &mut Vec<u8>, s: &str) {
    match uuid_raw(s) {
        Some(raw) => {
            w.push(0);
            w.extend_from_slice(&raw);
        }
        None => {
            w.push(1);
            put_str(w, s);
        }
    }
}

/// Where the hyphens of a UUID's canonical text are.
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// The 16 bytes of a UUID in canonical text; `None` for any other text (upper case, braces, no hyphens).
/// By hand: the `uuid` crate and `sammen_model::check_uuid` also accept those other forms (either
/// case, `urn:uuid:`), and both directions must be exact here.
fn uuid_raw(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || UUID_HYPHENS.iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut digits = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !UUID_HYPHENS.contains(i))
        .map(|(_, &c)| hex_digit(c));
    let mut out = [0u8; 16];
    for o in &mut out {
        *o = (digits.next()?? << 4) | digits.next()??;
    }
    Some(out)
}

/// The canonical text of a UUID's 16 bytes.
fn uuid_text(raw: &[u8]) -> String {
    let h = hex(raw);
    let mut out = String::with_capacity(36);
    for (i, c) in h.chars().enumerate() {
        if [8, 12, 16, 20].contains(&i) {
            out.push('-');
        }
        out.push(c);
    }
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The 32 bytes behind 64 lower-case hex digits.
fn raw32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

/// A cursor over the bytes; every read fails with `Malformed` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LeafDecodeError> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(LeafDecodeError::Malformed)?;
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LeafDecodeError> {
        self.take(N)?
            .try_into()
            .map_err(|_| LeafDecodeError::Malformed)
    }

    fn u8(&mut self) -> Result<u8, LeafDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, LeafDecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, LeafDecodeError> {
        let mut n: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(n).map_err(|_| LeafDecodeError::Malformed);
            }
        }
        Err(LeafDecodeError::Malformed)
    }

    fn str(&mut self) -> Result<&'a str, LeafDecodeError> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| LeafDecodeError::Malformed)
    }

    fn string(&mut self) -> Result<String, LeafDecodeError> {
        self.str().map(str::to_owned)
    }

    /// `read` when `present`.
    fn opt<T>(
        &mut self,
        present: bool,
        read: fn(&mut Self) -> Result<T, LeafDecodeError>,
    ) -> Result<Option<T>, LeafDecodeError> {
        present.then(|| read(self)).transpose()
    }

    fn family(&mut self) -> Result<Family, LeafDecodeError> {
        self.str()?
            .parse::<Family>()
            .map_err(|_| LeafDecodeError::Malformed)
    }

    fn party(&mut self) -> Result<Party, LeafDecodeError> {
        let flags = self.u8()?;
        if flags & !3 != 0 {
            return Err(LeafDecodeError::Malformed);
        }
        Ok(Party {
            gln: self.opt(flags & 1 != 0, Reader::string)?,
            sor: self.opt(flags & 2 != 0, Reader::string)?,
        })
    }

    fn id(&mut self) -> Result<String, LeafDecodeError> {
        match self.u8()? {
            0 => Ok(uuid_text(self.take(16)?)),
            1 => self.string(),
            _ => Err(LeafDecodeError::Malformed),
        }
    }

    fn hash(&mut self) -> Result<String, LeafDecodeError> {
        match self.u8()? {
            0 => Ok(hex(self.take(32)?)),
            1 => self.string(),
            _ => Err(LeafDecodeError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf::{LeafEvent, PatientKey, LEAF_VERSION_JSON};
    use proptest::prelude::*;
    use sammen_model::PatientId;

    fn every_event() -> Vec<Event> {
        vec![
            Event::Received,
            Event::Rejected {
                code: "id.gln.check-digit".into(),
            },
            Event::Accepted,
            Event::Published,
            Event::Delivered,
            Event::Acknowledged { code: AckCode::Ok },
            Event::Acknowledged {
                code: AckCode::TransientError,
            },
            Event::Acknowledged {
                code: AckCode::FatalError,
            },
            Event::Overdue,
            Event::Dead,
            Event::Purged,
            Event::PayloadPurged,
            Event::Resend,
            Event::Duplicate,
            Event::CertificateRefused {
                code: None,
                suppressed: None,
            },
            Event::CertificateRefused {
                code: Some("unknown-ca".into()),
                suppressed: None,
            },
            Event::CertificateRefused {
                code: None,
                suppressed: Some(7),
            },
            Event::CertificateRefused {
                code: Some("no-certificate".into()),
                suppressed: Some(u64::MAX),
            },
            Event::IdentityRefused,
            Event::ConfigReload,
            Event::Replay,
            Event::LogCreated {
                key: "EzJg9HNGSK/fFn8hIrk7ySyLhmR6ca9WgIbkjk0lvvs=".into(),
            },
            Event::KeyRotation {
                new_key: "k".into(),
                signature: "s".repeat(300),
            },
            Event::LostWrite,
        ]
    }

    fn full(event: Event) -> Leaf {
        let mut e = LeafEvent::new(1_795_495_655_188, event, Outcome::Success);
        e.message_id = Some("a5e5b880-c087-4055-b9ec-99108695f81d".into());
        e.bundle_id = Some("WhdPdptsrxrj56".into());
        e.family = Some(Family::Xdis91);
        e.event_code = Some("nytbrev".into());
        e.sender = Some(std::borrow::Cow::Owned(Party {
            gln: Some("5790001382445".into()),
            sor: Some("1234567890".into()),
        }));
        e.receiver = Some(std::borrow::Cow::Owned(Party {
            gln: Some("5790000121441".into()),
            sor: None,
        }));
        e.cert_fingerprint = Some("AB".repeat(32).into());
        e.payload_sha256 = Some([0x9d; 32]);
        e.patient = Some(PatientId::new("urn:oid:1.2.208.176.1.2", "2512489996"));
        e.into_leaf(&PatientKey::new(&[7u8; 32]).unwrap())
    }

    #[test]
    fn every_event_round_trips_with_and_without_the_optional_fields() {
        for ev in every_event() {
            for leaf in [
                full(ev.clone()),
                LeafEvent::new(0, ev.clone(), Outcome::MajorFailure)
                    .into_leaf(&PatientKey::new(&[1u8; 16]).unwrap()),
            ] {
                let bytes = leaf.encode();
                assert_eq!(bytes[0], VERSION);
                assert_eq!(Leaf::decode(&bytes).as_ref(), Ok(&leaf), "{ev:?}");
            }
        }
    }

    #[test]
    fn a_message_leaf_is_less_than_half_its_json() {
        let leaf = full(Event::Accepted);
        let json = Leaf {
            v: LEAF_VERSION_JSON,
            ..leaf.clone()
        }
        .encode();
        let bin = leaf.encode();
        assert!(
            bin.len() * 2 < json.len(),
            "{} vs {}",
            bin.len(),
            json.len()
        );
        // Upper-case hex does not fit the raw form; it is kept as written.
        assert_eq!(
            leaf.cert_fingerprint.as_deref(),
            Some("AB".repeat(32).as_str())
        );
    }

    #[test]
    fn other_byte_strings_for_the_same_leaf_are_refused() {
        let leaf = full(Event::Rejected { code: "x".into() });
        let bytes = leaf.encode();
        // Trailing byte.
        let mut b = bytes.clone();
        b.push(0);
        assert_eq!(Leaf::decode(&b), Err(LeafDecodeError::Malformed));
        // A length in two bytes where one does (0x81 0x00 is 1 in a longer form).
        let at = 1 + 8 + 1 + 1; // version, time, outcome, kind: then the code's length
        assert_eq!(bytes[at], 1);
        let mut b = bytes.clone();
        b.splice(at..=at, [0x81, 0x00]);
        assert_eq!(Leaf::decode(&b), Err(LeafDecodeError::NotCanonical));
        // The payload hash in string form although it fits the raw form.
        let mut l = LeafEvent::new(5, Event::Accepted, Outcome::Success)
            .into_leaf(&PatientKey::new(&[1u8; 16]).unwrap());
        l.payload_sha256 = Some("9d".repeat(32));
        let raw = l.encode();
        let mut as_string = raw[..raw.len() - 33].to_vec();
        as_string.push(1);
        put_str(&mut as_string, &"9d".repeat(32));
        assert_eq!(Leaf::decode(&raw).unwrap(), l);
        assert_eq!(Leaf::decode(&as_string), Err(LeafDecodeError::NotCanonical));
        // Unknown presence bit, unknown kind, unknown outcome, cut short.
        let mut b = raw.clone();
        b[11] |= 0x80;
        assert_eq!(Leaf::decode(&b), Err(LeafDecodeError::Malformed));
        let mut b = raw.clone();
        b[10] = 200;
        assert_eq!(Leaf::decode(&b), Err(LeafDecodeError::Malformed));
        let mut b = raw.clone();
        b[9] = 1;
        assert_eq!(Leaf::decode(&b), Err(LeafDecodeError::Malformed));
        for n in 0..raw.len() {
            assert!(Leaf::decode(&raw[..n]).is_err(), "{n}");
        }
        assert_eq!(Leaf::decode(&[4]), Err(LeafDecodeError::UnknownVersion(4)));
    }

    #[test]
    fn uuid_ids_take_16_bytes_and_version_2_leaves_keep_their_bytes() {
        let mut leaf = full(Event::Accepted);
        let uuid = "0b9f4c2e-5d7a-4e31-9c0a-7f3e2d1b8a64";
        leaf.bundle_id = Some(uuid.into());
        let v3 = leaf.encode();
        assert_eq!(v3[0], VERSION);
        assert_eq!(Leaf::decode(&v3).as_ref(), Ok(&leaf));
        // The same leaf as an older log holds it (version 2): both ids as strings, 2 × 19 bytes more.
        let old = Leaf {
            v: VERSION_2,
            ..leaf.clone()
        };
        let v2 = old.encode();
        assert_eq!(v2[0], VERSION_2);
        assert_eq!(v2.len(), v3.len() + 2 * (37 - 17));
        assert_eq!(
            Leaf::decode(&v2).as_ref(),
            Ok(&old),
            "read back as version 2"
        );
        assert_ne!(old.hash(), leaf.hash(), "one byte string, one hash");
        // Raw only for the canonical text: upper case, braces or no hyphens stay strings.
        for id in [
            uuid.to_uppercase(),
            format!("{{{uuid}}}"),
            uuid.replace('-', ""),
            "0b9f4c2e-5d7a-4e31-9c0a-7f3e2d1b8a6".into(),
            "0b9f4c2e-5d7a-4e31-9c0a-7f3e2d1b8a6g".into(),
            "0b9f4c2e_5d7a-4e31-9c0a-7f3e2d1b8a64".into(),
        ] {
            let mut l = leaf.clone();
            l.bundle_id = Some(id.clone());
            let b = l.encode();
            assert_eq!(b.len(), v3.len() + 1 + id.len() - 16, "{id}");
            assert_eq!(
                Leaf::decode(&b).unwrap().bundle_id.as_deref(),
                Some(&id[..])
            );
        }
        // A canonical UUID in string form although it fits 16 bytes: another byte string, refused.
        let mut l = LeafEvent::new(5, Event::Accepted, Outcome::Success)
            .into_leaf(&PatientKey::new(&[1u8; 16]).unwrap());
        l.message_id = Some(uuid.into());
        let raw = l.encode();
        assert_eq!(
            &raw[raw.len() - 17..],
            &[&[0u8][..], &uuid_raw(uuid).unwrap()].concat()[..]
        );
        let mut as_string = raw[..raw.len() - 17].to_vec();
        as_string.push(1);
        put_str(&mut as_string, uuid);
        assert_eq!(Leaf::decode(&as_string), Err(LeafDecodeError::NotCanonical));
        // An unknown id form.
        let mut b = raw.clone();
        let at = b.len() - 17;
        b[at] = 2;
        assert_eq!(Leaf::decode(&b), Err(LeafDecodeError::Malformed));
    }

    /// What staging writes ([`View`] of the event) is byte for byte what the built leaf encodes to.
    fn staged_bytes_are_the_leafs(e: &LeafEvent<'_>, key: &PatientKey) -> (Vec<u8>, Vec<u8>) {
        let pseudonym = e.pseudonym(key);
        let staged = encode(&e.view(pseudonym.as_deref()));
        (staged, e.clone().into_leaf(key).encode())
    }

    #[test]
    fn an_events_view_encodes_to_the_bytes_of_its_leaf() {
        let key = PatientKey::new(&[7u8; 32]).unwrap();
        for ev in every_event() {
            let mut full = LeafEvent::new(5, ev.clone(), Outcome::Success);
            full.message_id = Some("0b8d7c6e-2f3a-4b5c-9d8e-7f6a5b4c3d2e".into());
            full.bundle_id = Some("letter-77".into());
            full.family = Some(Family::HospitalNotification);
            full.event_code = Some("STIN".into());
            full.sender = Some(std::borrow::Cow::Owned(Party {
                gln: Some("5790001348120".into()),
                sor: Some("1234567890".into()),
            }));
            // An empty party is left out, as `into_leaf` leaves it out.
            full.receiver = Some(std::borrow::Cow::Owned(Party {
                gln: None,
                sor: None,
            }));
            full.cert_fingerprint = Some("ab".repeat(32).into());
            full.payload_sha256 = Some([0x9d; 32]);
            full.patient = Some(PatientId::new("urn:oid:1.2.208.176.1.2", "2512489996"));
            let mut by_pseudonym = full.clone();
            by_pseudonym.patient = None;
            by_pseudonym.patient_pseudonym = Some(key.pseudonym("2512489996").into());
            // A fingerprint that is not 64 lower-case hex digits keeps its string form.
            let mut odd = full.clone();
            odd.cert_fingerprint = Some("AB".repeat(32).into());
            for e in [
                full,
                by_pseudonym,
                odd,
                LeafEvent::new(0, ev, Outcome::MajorFailure),
            ] {
                let (staged, built) = staged_bytes_are_the_leafs(&e, &key);
                assert_eq!(staged, built, "{e:?}");
                assert!(Leaf::decode(&staged).is_ok());
            }
        }
    }

    proptest! {
        #[test]
        fn an_arbitrary_events_view_encodes_to_the_bytes_of_its_leaf(
            time in any::<u64>(),
            mid in proptest::option::of("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-fA-F]{4}-[0-9a-f]{4}-[0-9a-f]{12}|.{0,80}"),
            code in ".{0,40}",
            gln in proptest::option::of("[0-9]{13}"),
            sor in proptest::option::of(".{0,20}"),
            hash in proptest::option::of("[0-9a-fA-F]{60,66}"),
            payload in proptest::option::of(any::<[u8; 32]>()),
            cpr in proptest::option::of("[0-9]{10}"),
        ) {
            let key = PatientKey::new(&[3u8; 16]).unwrap();
            let mut e = LeafEvent::new(time, Event::Rejected { code }, Outcome::SeriousFailure);
            e.message_id = mid.map(Into::into);
            e.sender = Some(std::borrow::Cow::Owned(Party { gln: gln.clone(), sor }));
            e.receiver = Some(std::borrow::Cow::Owned(Party { gln, sor: None }));
            e.cert_fingerprint = hash.map(Into::into);
            e.payload_sha256 = payload;
            e.patient = cpr.map(|c| PatientId::new("urn:oid:1.2.208.176.1.2", &c));
            let (staged, built) = staged_bytes_are_the_leafs(&e, &key);
            prop_assert_eq!(staged, built);
        }

        #[test]
        fn arbitrary_fields_round_trip(
            time in any::<u64>(),
            mid in proptest::option::of("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-fA-F]{4}-[0-9a-f]{4}-[0-9a-f]{12}|.{0,80}"),
            v2 in any::<bool>(),
            code in ".{0,200}",
            gln in proptest::option::of("[0-9]{13}"),
            sor in proptest::option::of(".{0,20}"),
            hash in proptest::option::of("[0-9a-fA-F]{60,66}"),
        ) {
            let mut e = LeafEvent::new(time, Event::Rejected { code }, Outcome::SeriousFailure);
            e.message_id = mid.map(Into::into);
            e.sender = Some(std::borrow::Cow::Owned(Party { gln, sor }));
            e.cert_fingerprint = hash.map(Into::into);
            let mut leaf = e.into_leaf(&PatientKey::new(&[3u8; 16]).unwrap());
            if v2 {
                leaf.v = VERSION_2;
            }
            prop_assert_eq!(Leaf::decode(&leaf.encode()), Ok(leaf));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), v2 in any::<bool>()) {
            let mut b = bytes;
            if let Some(first) = b.first_mut() {
                *first = if v2 { VERSION_2 } else { VERSION };
            }
            if let Ok(leaf) = Leaf::decode(&b) {
                prop_assert_eq!(leaf.encode(), b);
            }
        }
    }
}
