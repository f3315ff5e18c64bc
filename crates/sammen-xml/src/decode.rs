//! Byte encodings: everything becomes UTF-8 text before parsing.
//!
//! MedCom OIOXML letters are often ISO-8859-1; a region's VANS envelope may even carry an ISO-8859-1
//! letter without an XML declaration (the XDIS21 sample). Transcoding up front keeps the parser and every
//! adapter UTF-8 only. encoding_rs does the transcoding; only the small declaration sniffing is ours,
//! because no crate reads just the `encoding` pseudo-attribute of a prolog without parsing the document.

use crate::error::XmlError;
use std::borrow::Cow;

/// The encoding the bytes were read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (with or without BOM).
    Utf8,
    /// ISO-8859-1 (decoded as its superset windows-1252, as the WHATWG encoding standard does).
    Latin1,
}

/// Decoded text plus what was learned about its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// UTF-8 text (borrowed when the input already was UTF-8).
    pub text: Cow<'a, str>,
    /// The encoding the bytes were in.
    pub charset: Charset,
    /// True when no declaration named the encoding and it was inferred (only allowed inside envelopes).
    pub inferred: bool,
}

/// Decode `bytes` to UTF-8.
///
/// - A declared encoding must be UTF-8 or ISO-8859-1 (or an alias such as `latin1`, `windows-1252`).
/// - Without a declaration, valid UTF-8 is UTF-8. Otherwise, if `infer_latin1` is set (the inner
///   message of an envelope), the bytes are read as ISO-8859-1 and `inferred` is set; if not, the bytes
///   are refused, as the XML specification requires UTF-8 for undeclared documents.
pub fn decode(bytes: &[u8], infer_latin1: bool) -> Result<Decoded<'_>, XmlError> {
    if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]) {
        return Err(XmlError::Encoding {
            reason: "UTF-16 is not supported; send UTF-8 or ISO-8859-1",
        });
    }
    let bom = bytes.starts_with(&[0xEF, 0xBB, 0xBF]);
    let body = if bom { &bytes[3..] } else { bytes };
    match declared_encoding(body) {
        Some(label) if is_utf8_label(label) => utf8(body, false),
        Some(label) if is_latin1_label(label) => {
            if bom {
                return Err(XmlError::Encoding {
                    reason: "a UTF-8 byte order mark contradicts the declared ISO-8859-1 encoding",
                });
            }
            Ok(latin1(body, false))
        }
        Some(_) => Err(XmlError::Encoding {
            reason: "declared encoding is not supported; use UTF-8 or ISO-8859-1",
        }),
        None => match std::str::from_utf8(body) {
            Ok(s) => Ok(Decoded {
                text: Cow::Borrowed(s),
                charset: Charset::Utf8,
                inferred: false,
            }),
            Err(_) if infer_latin1 && !bom => Ok(latin1(body, true)),
            Err(_) => Err(XmlError::Encoding {
                reason: "bytes are not valid UTF-8 and no encoding is declared",
            }),
        },
    }
}

fn utf8(body: &[u8], inferred: bool) -> Result<Decoded<'_>, XmlError> {
    std::str::from_utf8(body)
        .map(|s| Decoded {
            text: Cow::Borrowed(s),
            charset: Charset::Utf8,
            inferred,
        })
        .map_err(|_| XmlError::Encoding {
            reason: "bytes are not valid UTF-8 as declared",
        })
}

fn latin1(body: &[u8], inferred: bool) -> Decoded<'_> {
    // Most letters are plain ASCII: std's word-at-a-time test is several times faster on them than
    // encoding_rs's ASCII prefix scan (4% of validating a 1.2 KB XCTL03), and the text is borrowed alike.
    let text = match body.is_ascii().then(|| std::str::from_utf8(body)) {
        Some(Ok(s)) => Cow::Borrowed(s),
        // windows-1252 maps every byte, so decoding cannot fail.
        _ => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(body)
                .0
        }
    };
    Decoded {
        text,
        charset: Charset::Latin1,
        inferred,
    }
}

fn is_utf8_label(l: &str) -> bool {
    l.eq_ignore_ascii_case("utf-8") || l.eq_ignore_ascii_case("utf8")
}

fn is_latin1_label(l: &str) -> bool {
    [
        "iso-8859-1",
        "iso8859-1",
        "iso_8859-1",
        "latin1",
        "l1",
        "windows-1252",
        "cp1252",
        "us-ascii",
        "ascii",
    ]
    .iter()
    .any(|k| l.eq_ignore_ascii_case(k))
}

/// The `encoding` value of a leading `<?xml ...?>` declaration, if any.
fn declared_encoding(body: &[u8]) -> Option<&str> {
    let rest = body.strip_prefix(b"<?xml")?;
    if !rest.first().is_some_and(u8::is_ascii_whitespace) {
        return None;
    }
    // `?>` starting within the first 256 bytes; byte searches instead of `windows` and a substring
    // searcher, which were a tenth of validating a small letter (callgrind).
    let head = rest.get(..rest.len().min(257))?;
    let end = memchr::memchr_iter(b'?', head).find(|&i| head.get(i + 1) == Some(&b'>'))?;
    let decl = std::str::from_utf8(&rest[..end]).ok()?;
    let at =
        memchr::memchr_iter(b'e', decl.as_bytes()).find(|&i| decl[i..].starts_with("encoding"))?;
    let after = &decl[at + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let val = &after[1..];
    Some(&val[..val.find(quote)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_latin1_is_transcoded() {
        let bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>K\xf8benhavn</a>";
        let d = decode(bytes, false).unwrap();
        assert_eq!(d.charset, Charset::Latin1);
        assert!(!d.inferred);
        assert!(d.text.contains("København"));
    }

    #[test]
    fn ascii_latin1_is_borrowed_and_windows_1252_bytes_still_decode() {
        let ascii = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>Kobenhavn</a>";
        let d = decode(ascii, false).unwrap();
        assert!(matches!(d.text, Cow::Borrowed(_)));
        assert_eq!(d.text.as_bytes(), ascii);
        // 0x80 is the euro sign in windows-1252 (what the decoder has always used for ISO-8859-1).
        let high = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\x80 \xe6\xf8\xe5</a>";
        assert!(decode(high, false).unwrap().text.contains("\u{20ac} æøå"));
    }

    #[test]
    fn undeclared_latin1_only_when_inferring() {
        let bytes = b"<a>K\xf8benhavn</a>";
        assert_eq!(
            decode(bytes, false).unwrap_err().to_string(),
            "encoding problem: bytes are not valid UTF-8 and no encoding is declared"
        );
        let d = decode(bytes, true).unwrap();
        assert!(d.inferred);
        assert_eq!(d.charset, Charset::Latin1);
    }

    #[test]
    fn utf8_declared_but_invalid_is_refused() {
        let bytes = b"<?xml version='1.0' encoding='utf-8'?><a>\xf8</a>";
        assert!(matches!(
            decode(bytes, true),
            Err(XmlError::Encoding { .. })
        ));
    }

    #[test]
    fn declaration_is_read_only_in_its_first_256_bytes() {
        let decl = |pad: usize| {
            let mut b =
                format!("<?xml version='1.0'{}encoding='latin1'?>", " ".repeat(pad)).into_bytes();
            b.extend_from_slice(b"<a>\xf8</a>");
            b
        };
        // `?>` at offset 255 of what follows `<?xml` is found; at 256 it is not.
        let fits = decl(255 - "version='1.0'encoding='latin1'".len() - 1);
        assert_eq!(decode(&fits, false).unwrap().charset, Charset::Latin1);
        let too_long = decl(256 - "version='1.0'encoding='latin1'".len() - 1);
        assert!(decode(&too_long, false).is_err());
    }

    #[test]
    fn bom_and_unsupported() {
        let d = decode(b"\xEF\xBB\xBF<a/>", false).unwrap();
        assert_eq!(d.text, "<a/>");
        assert!(decode(b"\xFF\xFE<\0a\0/\0>\0", false).is_err());
        assert!(decode(b"<?xml version='1.0' encoding='EBCDIC'?><a/>", false).is_err());
    }
}
