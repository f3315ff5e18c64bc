//! Writing (not reading) OIOXML: the XCTL03 positive receipt the broker sends when it is the receiving
//! system for a GLN (`auto_acknowledge`). The shape is that of MedCom's own samples
//! (`conformance/examples/oioxml/Flow2-XCTL03_*`), and the result passes this crate's validator.
//!
//! Every value is checked before it is written (ids are OIOXML identifiers, EANs are GLNs, the original
//! version code is one Sammen knows), so nothing from a letter can change the structure; values are
//! still escaped. All values are ASCII, so the ISO-8859-1 declaration of the samples is kept.

use sammen_model::ident;
use std::fmt::Write as _;
use std::time::SystemTime;

/// The XCTL03 letter's version code.
pub const XCTL03_VERSION_CODE: &str = "XC0330Q";
/// Longest OIOXML envelope / letter identifier (MedCom's schema: 1–14 characters).
pub const MAX_IDENTIFIER_LEN: usize = 14;
const NS: &str = "http://rep.oio.dk/sundcom.dk/medcom.dk/xml/schemas/2005/08/07/";

/// What a positive receipt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptSpec {
    /// The receipt's own envelope identifier.
    pub envelope_id: String,
    /// The receipt's own letter identifier.
    pub letter_id: String,
    /// The receipt's sender (the original letter's receiver), EAN / GLN.
    pub sender_ean: String,
    /// The receipt's receiver (the original letter's sender), EAN / GLN.
    pub receiver_ean: String,
    /// `Envelope/Identifier` of the acknowledged Emessage.
    pub original_envelope_id: String,
    /// `Letter/Identifier` of the acknowledged letter.
    pub original_letter_id: String,
    /// `Letter/VersionCode` of the acknowledged letter.
    pub original_version_code: String,
    /// Envelope Sent date and time (written in UTC).
    pub time: SystemTime,
}

/// Why no receipt was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An identifier is empty, longer than 14 characters or not ASCII letters/digits.
    #[error("{0} is not an OIOXML identifier (1-14 ASCII letters or digits)")]
    Identifier(&'static str),
    /// An EAN is not a valid GLN (13 digits, check digit).
    #[error("{0} is not a valid EAN / GLN")]
    Ean(&'static str),
    /// The original version code is not a version code of a letter type Sammen knows.
    #[error("the original version code is not one Sammen knows")]
    VersionCode,
    /// Sammen's OIOXML tables could not be read.
    #[error("Sammen's OIOXML tables could not be read")]
    Tables,
}

/// True when `s` is an OIOXML identifier as Sammen writes them: 1–14 ASCII letters or digits.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_IDENTIFIER_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn id(s: &str, what: &'static str) -> Result<(), BuildError> {
    if is_identifier(s) {
        Ok(())
    } else {
        Err(BuildError::Identifier(what))
    }
}

fn ean(s: &str, what: &'static str) -> Result<(), BuildError> {
    if ident::check_gln(s).is_none() {
        Ok(())
    } else {
        Err(BuildError::Ean(what))
    }
}

/// `(YYYY-MM-DD, HH:MM)` in UTC.
fn date_time(t: SystemTime) -> (String, String) {
    let f = sammen_model::time::utc_fields(t);
    (
        format!("{:04}-{:02}-{:02}", f.year, f.month, f.day),
        format!("{:02}:{:02}", f.hour, f.minute),
    )
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// The XCTL03 PositiveReceipt Emessage for `spec` (ISO-8859-1 declaration; every byte is ASCII).
pub fn positive_receipt(spec: &ReceiptSpec) -> Result<String, BuildError> {
    id(&spec.envelope_id, "the envelope identifier")?;
    id(&spec.letter_id, "the letter identifier")?;
    id(
        &spec.original_envelope_id,
        "the original envelope identifier",
    )?;
    id(&spec.original_letter_id, "the original letter identifier")?;
    ean(&spec.sender_ean, "the sender")?;
    ean(&spec.receiver_ean, "the receiver")?;
    let t = crate::tables::tables().map_err(|_| BuildError::Tables)?;
    if !t.is_known_version_code(&spec.original_version_code) {
        return Err(BuildError::VersionCode);
    }
    let (date, time) = date_time(spec.time);
    let mut x = String::with_capacity(1400);
    // write! to a String cannot fail.
    let _ = write!(
        x,
        r#"<?xml version="1.0" encoding="ISO-8859-1"?>
<Emessage xmlns="{NS}">
  <Envelope>
    <Sent>
      <Date>{date}</Date>
      <Time>{time}</Time>
    </Sent>
    <Identifier>{env}</Identifier>
    <AcknowledgementCode>minuspositivkvitt</AcknowledgementCode>
  </Envelope>
  <PositiveReceipt>
    <Letter>
      <Identifier>{letter}</Identifier>
      <VersionCode>{XCTL03_VERSION_CODE}</VersionCode>
      <StatisticalCode>XCTL03</StatisticalCode>
    </Letter>
    <Sender>
      <EANIdentifier>{sender}</EANIdentifier>
    </Sender>
    <Receiver>
      <EANIdentifier>{receiver}</EANIdentifier>
    </Receiver>
    <OriginalEmessage>
      <OriginalEnvelopeIdentifier>{oenv}</OriginalEnvelopeIdentifier>
      <OriginalSender>
        <EANIdentifier>{receiver}</EANIdentifier>
      </OriginalSender>
      <OriginalReceiver>
        <EANIdentifier>{sender}</EANIdentifier>
      </OriginalReceiver>
      <OriginalLetter>
        <OriginalLetterIdentifier>{oletter}</OriginalLetterIdentifier>
        <OriginalVersionCode>{over}</OriginalVersionCode>
      </OriginalLetter>
    </OriginalEmessage>
  </PositiveReceipt>
</Emessage>
"#,
        env = esc(&spec.envelope_id),
        letter = esc(&spec.letter_id),
        sender = esc(&spec.sender_ean),
        receiver = esc(&spec.receiver_ean),
        oenv = esc(&spec.original_envelope_id),
        oletter = esc(&spec.original_letter_id),
        over = esc(&spec.original_version_code),
    );
    Ok(x)
}

/// `Letter/VersionCode` of the OIOXML letter in `bytes` (a bare Emessage; undeclared non-UTF-8 is read as
/// ISO-8859-1, as inside envelopes), read with the bounded reader; `None` when it is not an Emessage or
/// has none. Reading only: no validation happens here.
pub fn letter_version_code(bytes: &[u8]) -> Option<String> {
    let text = sammen_xml::decode(bytes, true).ok()?.text;
    let doc = sammen_xml::Document::parse(&text, &sammen_xml::Limits::default(), &[]).ok()?;
    let root = doc.root();
    let t = crate::tables::tables().ok()?;
    if !crate::is_emessage(root) {
        return None;
    }
    let letter = root
        .children()
        .find(|c| c.name() != "Envelope" && t.is_oioxml_ns(c.namespace()))?;
    let meta = letter
        .children()
        .find(|c| c.name() == "Letter" && t.is_oioxml_ns(c.namespace()))?;
    let v = meta
        .children()
        .find(|c| c.name() == "VersionCode" && t.is_oioxml_ns(c.namespace()))?
        .text()
        .trim();
    (!v.is_empty()).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("031120PWE62528"));
        assert!(!is_identifier("031120PWE625281"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a<b"));
    }

    #[test]
    fn sent_date_and_time_are_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(date_time(t), ("2023-11-14".into(), "22:13".into()));
    }
}
