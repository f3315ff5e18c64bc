//! Base64 of envelope payloads, via the `base64` crate's SIMD engine (AVX2/NEON when the CPU has it,
//! else its scalar engine; both accept exactly the same input).
//!
//! Senders wrap long base64 lines; XML Schema's base64Binary allows whitespace, the `base64` engines do
//! not, so whitespace is stripped first (one copy, only when there is whitespace). Padding is optional.

use base64::engine::{DecodePaddingMode, GeneralPurposeConfig, Simd};
use base64::Engine;
use std::sync::LazyLock;

const CONFIG: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);

/// The scalar engine decoded a region's 25 KB payload at a third of the speed of reading the whole
/// envelope; the SIMD one picks its instruction set once, at first use.
static ENGINE: LazyLock<Simd> = LazyLock::new(|| Simd::standard(CONFIG));

/// Decode base64 text, ignoring ASCII whitespace. `None` when it is not base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    // Most payloads are one line: decode at once rather than scan for whitespace first (a byte loop
    // as long as the payload). Whitespace is outside the alphabet, so wrapped base64 fails here at its
    // first line break and is decoded again without whitespace: the same result as stripping first.
    if let Ok(bytes) = ENGINE.decode(b) {
        return Some(bytes);
    }
    if !b.iter().any(u8::is_ascii_whitespace) {
        return None;
    }
    let compact: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    ENGINE.decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whitespace_and_padding() {
        assert_eq!(decode("PGEv\nPg==").as_deref(), Some(&b"<a/>"[..]));
        assert_eq!(decode("PGEvPg").as_deref(), Some(&b"<a/>"[..]));
        assert_eq!(decode("PGEv*Pg=="), None);
        assert_eq!(decode("PGEv\n*Pg=="), None);
        assert_eq!(decode(" \t\r\n"), Some(Vec::new()));
    }

    /// What this module did before the SIMD engine: strip whitespace, then base64 0.22's scalar engine.
    fn reference(text: &str) -> Option<Vec<u8>> {
        use base64_022::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        use base64_022::Engine as _;
        const OLD: GeneralPurpose = GeneralPurpose::new(
            &base64_022::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let compact: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        OLD.decode(compact).ok()
    }

    proptest! {
        // Long valid runs (so the SIMD path runs), broken by the odd stray byte, padding or whitespace.
        #[test]
        fn accepts_and_decodes_as_the_scalar_engine_did(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(
                vec![b'=', b'\n', b' ', b'\t', b'\r', 0x0C, b'*', b'-', b'_', 0xC3, b'A'])), 0..4),
            trim in 0usize..4,
        ) {
            let mut text = STANDARD_ENCODE.encode(&data).into_bytes();
            text.truncate(text.len().saturating_sub(trim));
            for (at, byte) in edits {
                if !text.is_empty() {
                    let i = at.index(text.len());
                    text.insert(i, byte);
                }
            }
            let text = String::from_utf8_lossy(&text).into_owned();
            prop_assert_eq!(decode(&text), reference(&text));
        }
    }

    const STANDARD_ENCODE: base64::engine::GeneralPurpose =
        base64::engine::general_purpose::STANDARD;
}
