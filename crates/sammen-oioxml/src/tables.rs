//! The table-driven part of OIOXML validation: letter types and value sets from `schemas/oioxml/*.toml`.
//!
//! The TOML files are embedded at compile time and parsed once. A test checks they parse, so at run time
//! a parse failure is impossible in a released build; it is still reported as an issue, never a panic.

use sammen_model::Family;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::OnceLock;

const LETTERS: &str = include_str!("../../../schemas/oioxml/letters.toml");
const VALUESETS: &str = include_str!("../../../schemas/oioxml/valuesets.toml");

/// Whether a letter type carries `Letter/StatusCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusRule {
    /// Must be present.
    Required,
    /// May be absent (real XDIS18/XDIS21 letters carry none).
    Optional,
    /// Receipts: none expected.
    Absent,
}

/// Polarity of a receipt letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Receipt {
    /// XCTL03.
    Positive,
    /// XCTL01/XCTL02.
    Negative,
}

/// One OIOXML letter type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LetterType {
    /// `Letter/TypeCode`, e.g. `XDIS20`.
    pub type_code: String,
    /// Local name of the letter element under `Emessage`, e.g. `NotificationOfAdmission`.
    pub root: String,
    /// Family name as in [`Family::as_str`].
    pub family: String,
    /// `Letter/VersionCode` values that belong to this type.
    pub version_codes: Vec<String>,
    /// `Letter/StatisticalCode` values that belong to this type.
    pub statistical_codes: Vec<String>,
    /// StatusCode rule.
    pub status_code: StatusRule,
    /// Receipt polarity, for XCTL letters.
    #[serde(default)]
    pub receipt: Option<Receipt>,
    /// Required element paths relative to the letter element.
    #[serde(default)]
    pub required: Vec<String>,
    /// `Emessage.` and `root`: where this letter's issue locations start. Built once with the tables
    /// rather than per message (an allocation per letter).
    #[serde(skip)]
    pub base: String,
}

/// How an `Identifier` is checked, by its `IdentifierCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    /// GLN / lokationsnummer.
    Gln,
    /// Kommunenummer.
    Kommunenummer,
    /// Ydernummer.
    Ydernummer,
    /// SOR code.
    Sor,
    /// SKS shak code (sygehus/afdeling).
    Shak,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LettersFile {
    letter: Vec<LetterType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueSetsFile {
    namespaces: Vec<String>,
    status_codes: Vec<String>,
    acknowledgement_codes: Vec<String>,
    identifier_codes: HashMap<String, IdKind>,
}

/// All tables, parsed.
#[derive(Debug)]
pub struct Tables {
    /// Letter types, with their family resolved.
    pub letters: Vec<(LetterType, Family)>,
    /// Known Emessage namespaces.
    pub namespaces: Vec<String>,
    /// StatusCode value set.
    pub status_codes: Vec<String>,
    /// AcknowledgementCode value set.
    pub acknowledgement_codes: Vec<String>,
    /// IdentifierCode value set and how each identifier is checked.
    pub identifier_codes: HashMap<String, IdKind>,
}

impl Tables {
    /// The letter type whose element has this local name.
    pub fn by_root(&self, root: &str) -> Option<&(LetterType, Family)> {
        self.letters.iter().find(|(l, _)| l.root == root)
    }

    /// The letter type with this TypeCode.
    pub fn by_type_code(&self, code: &str) -> Option<&(LetterType, Family)> {
        self.letters.iter().find(|(l, _)| l.type_code == code)
    }

    /// True when `ns` is a known Emessage namespace.
    pub fn is_oioxml_ns(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == ns)
    }

    /// True when some letter type lists this VersionCode.
    pub fn is_known_version_code(&self, code: &str) -> bool {
        self.letters
            .iter()
            .any(|(l, _)| l.version_codes.iter().any(|v| v == code))
    }
}

fn parse() -> Result<Tables, String> {
    let letters: LettersFile = toml::from_str(LETTERS).map_err(|e| format!("letters.toml: {e}"))?;
    let vs: ValueSetsFile =
        toml::from_str(VALUESETS).map_err(|e| format!("valuesets.toml: {e}"))?;
    let mut resolved = Vec::with_capacity(letters.letter.len());
    for mut l in letters.letter {
        l.base = ["Emessage.", l.root.as_str()].concat();
        let fam: Family = l
            .family
            .parse()
            .map_err(|_| format!("letters.toml: unknown family for {}", l.type_code))?;
        resolved.push((l, fam));
    }
    Ok(Tables {
        letters: resolved,
        namespaces: vs.namespaces,
        status_codes: vs.status_codes,
        acknowledgement_codes: vs.acknowledgement_codes,
        identifier_codes: vs.identifier_codes,
    })
}

/// The parsed tables (parsed on first use).
pub fn tables() -> Result<&'static Tables, &'static str> {
    static T: OnceLock<Result<Tables, String>> = OnceLock::new();
    T.get_or_init(parse).as_ref().map_err(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_and_are_consistent() {
        let t = tables().expect("tables parse");
        assert!(t.letters.len() >= 10);
        for (l, fam) in &t.letters {
            assert_eq!(l.type_code, fam.as_str(), "family matches type code");
            assert_eq!(l.base, format!("Emessage.{}", l.root));
            assert!(!l.version_codes.is_empty(), "{}", l.type_code);
            assert!(!l.statistical_codes.is_empty(), "{}", l.type_code);
            assert_eq!(
                l.receipt.is_some(),
                l.status_code == StatusRule::Absent,
                "{}",
                l.type_code
            );
        }
        assert_eq!(
            t.by_root("NotificationOfAdmission")
                .map(|(l, _)| l.type_code.as_str()),
            Some("XDIS20")
        );
        assert_eq!(
            t.identifier_codes.get("lokationsnummer"),
            Some(&IdKind::Gln)
        );
        assert!(t.is_oioxml_ns("urn:oio:medcom:municipality:1.0.3"));
    }
}
