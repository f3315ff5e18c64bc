//! Base64 of envelope payloads, via the `base64` crate.
//!
//! Senders wrap long base64 lines; XML Schema's base64Binary allows whitespace, the `base64` engines do
//! not, so whitespace is stripped first (one copy, only when there is whitespace). Padding is optional.

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode base64 text, ignoring ASCII whitespace. `None` when it is not base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if b.iter().any(u8::is_ascii_whitespace) {
        let compact: Vec<u8> = b
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        ENGINE.decode(compact).ok()
    } else {
        ENGINE.decode(b).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_and_padding() {
        assert_eq!(decode("PGEv\nPg==").as_deref(), Some(&b"<a/>"[..]));
        assert_eq!(decode("PGEvPg").as_deref(), Some(&b"<a/>"[..]));
        assert_eq!(decode("PGEv*Pg=="), None);
    }
}
