//! # sammen-xml: bounded, safe XML reading for the adapters
//!
//! Why it exists: every MedCom format Sammen accepts (FHIR XML, OIOXML letters, VANS and SBDH envelopes)
//! arrives as untrusted bytes from the network. This crate is the one place where those bytes become a
//! tree, so that the hard rules are enforced once:
//!
//! - **No DOCTYPE, no entities.** A document type declaration is refused outright; no entity is ever
//!   expanded and no external resource is read. Only the five predefined entities and character
//!   references are resolved (quick-xml does no DTD processing of its own).
//! - **Limits while streaming.** Size is checked before parsing; element depth, attributes per element
//!   and element count are checked as each start tag is read, so a hostile document costs at most the
//!   configured budget before it is refused.
//! - **Namespace-aware.** Elements and attributes are matched on namespace URI + local name, never on a
//!   prefix: MedCom senders move prefixes between versions.
//! - **Encodings.** UTF-8 and ISO-8859-1 (declared, or — inside an envelope — undeclared and detected),
//!   transcoded to UTF-8 before parsing, see [`decode`].
//! - **Compact tree.** One arena string and three vectors per document; subtrees in "opaque" namespaces
//!   (the XHTML narrative of FHIR resources) are checked for well-formedness but not stored, so clinical
//!   narrative never lands in the tree. An element's text is gathered until its end tag and stored once,
//!   so the arena stays within about the size of the input (text around many children stays linear);
//!   a text that is one unaltered piece of the input is not copied at all (the tree borrows the input).
//! - **Attributes as quick-xml reads them.** The builder scans attributes itself (no allocation per
//!   tag) and accepts and refuses exactly what quick-xml's attribute iterator does; unit, property and
//!   fuzz tests compare the two.
//!
//! Errors ([`XmlError`]) describe what is wrong and where (line:column); they never echo document
//! content, which may be personal data.
#![forbid(unsafe_code)]

mod decode;
mod error;
mod tree;

pub use decode::{decode, Charset, Decoded};
pub use error::{line_col, XmlError};
#[doc(hidden)]
pub use tree::attribute_scan_mismatch;
pub use tree::{Children, Document, LocalChildren, Node};

/// Limits enforced while reading. Defaults suit MedCom messages with generous headroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes (default 10 MiB).
    pub max_bytes: usize,
    /// Deepest element nesting (default 128).
    pub max_depth: usize,
    /// Most attributes on one element (default 64).
    pub max_attributes: usize,
    /// Most elements stored in one document (default 1,000,000).
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 10 * 1024 * 1024,
            max_depth: 128,
            max_attributes: 64,
            max_elements: 1_000_000,
        }
    }
}

/// Namespace URIs used across MedCom formats.
pub mod ns {
    /// FHIR.
    pub const FHIR: &str = "http://hl7.org/fhir";
    /// XHTML (FHIR narrative).
    pub const XHTML: &str = "http://www.w3.org/1999/xhtml";
    /// VANS envelope 1.0.4.
    pub const VANS: &str = "urn:oio:medcom:vans-envelope:1.0.4";
    /// UN/CEFACT Standard Business Document Header.
    pub const SBDH: &str = "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader";
    /// PEPPOL envelope (`BinaryContent`).
    pub const PEPPOL_ENVELOPE: &str = "http://peppol.eu/xsd/ticc/envelope/1.0";
}
