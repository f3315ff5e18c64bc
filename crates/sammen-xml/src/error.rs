//! Typed XML errors with stable codes. Texts never include document content.

/// Why a document could not be read. Offsets are byte offsets into the decoded (UTF-8) text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The document declares a DOCTYPE; refused so no entity can ever be expanded.
    #[error("a DOCTYPE declaration is not allowed (entities are never expanded)")]
    DoctypeForbidden {
        /// Where the declaration starts.
        offset: usize,
    },
    /// A reference to an entity other than the five predefined ones.
    #[error("reference to an undefined entity (only &lt; &gt; &amp; &apos; &quot; and character references are allowed)")]
    EntityUndefined {
        /// Where the reference is.
        offset: usize,
    },
    /// The bytes are not well-formed XML.
    #[error("not well-formed XML: {reason}")]
    Malformed {
        /// Where the parser stopped.
        offset: usize,
        /// What the parser expected (no document content).
        reason: &'static str,
    },
    /// Input is larger than the configured limit.
    #[error("document is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Elements nest deeper than the configured limit.
    #[error("elements nest deeper than the limit of {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        offset: usize,
    },
    /// One element has more attributes than the configured limit.
    #[error("an element has more than {limit} attributes")]
    TooManyAttributes {
        /// The limit.
        limit: usize,
        /// The element.
        offset: usize,
    },
    /// More elements than the configured limit.
    #[error("document has more than {limit} elements")]
    TooManyElements {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        offset: usize,
    },
    /// The byte encoding is unsupported, or the bytes do not match the declared encoding.
    #[error("encoding problem: {reason}")]
    Encoding {
        /// What is wrong.
        reason: &'static str,
    },
    /// No root element.
    #[error("document has no root element")]
    Empty,
    /// A second root element, or text after the root.
    #[error("content after the root element")]
    ContentAfterRoot {
        /// Where it starts.
        offset: usize,
    },
    /// A prefix was used that no `xmlns:` declaration binds.
    #[error("namespace prefix is not declared")]
    UnboundPrefix {
        /// The element or attribute.
        offset: usize,
    },
}

impl XmlError {
    /// Stable issue code.
    pub const fn code(&self) -> &'static str {
        match self {
            XmlError::DoctypeForbidden { .. } => "xml.doctype-forbidden",
            XmlError::EntityUndefined { .. } => "xml.entity-undefined",
            XmlError::Malformed { .. } => "xml.malformed",
            XmlError::TooLarge { .. } => "xml.too-large",
            XmlError::TooDeep { .. } => "xml.too-deep",
            XmlError::TooManyAttributes { .. } => "xml.too-many-attributes",
            XmlError::TooManyElements { .. } => "xml.too-many-elements",
            XmlError::Encoding { .. } => "xml.encoding",
            XmlError::Empty => "xml.empty",
            XmlError::ContentAfterRoot { .. } => "xml.content-after-root",
            XmlError::UnboundPrefix { .. } => "xml.namespace-unbound",
        }
    }

    /// Byte offset into the decoded text, when known.
    pub const fn offset(&self) -> Option<usize> {
        match self {
            XmlError::DoctypeForbidden { offset }
            | XmlError::EntityUndefined { offset }
            | XmlError::Malformed { offset, .. }
            | XmlError::TooDeep { offset, .. }
            | XmlError::TooManyAttributes { offset, .. }
            | XmlError::TooManyElements { offset, .. }
            | XmlError::ContentAfterRoot { offset }
            | XmlError::UnboundPrefix { offset } => Some(*offset),
            XmlError::TooLarge { .. } | XmlError::Encoding { .. } | XmlError::Empty => None,
        }
    }

    /// `line:column` (1-based) of the error in `text`, or `document` when there is no position.
    pub fn location(&self, text: &str) -> String {
        match self.offset() {
            Some(off) => {
                let (l, c) = line_col(text, off);
                format!("{l}:{c}")
            }
            None => "document".to_owned(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset into `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Map a quick-xml error to a reason that holds no document content.
pub(crate) fn reason_of(e: &quick_xml::Error) -> &'static str {
    use quick_xml::errors::{IllFormedError as I, SyntaxError as S};
    use quick_xml::Error as E;
    match e {
        E::Syntax(s) => match s {
            S::InvalidBangMarkup => "unknown markup after '<!'",
            S::UnclosedPI => "unclosed processing instruction",
            S::UnclosedXmlDecl => "unclosed XML declaration",
            S::UnclosedComment => "unclosed comment",
            S::UnclosedDoctype => "unclosed DOCTYPE",
            S::UnclosedCData => "unclosed CDATA section",
            S::UnclosedTag => "unclosed tag",
            _ => "syntax error",
        },
        E::IllFormed(i) => match i {
            I::MissingDeclVersion(_) => "XML declaration without version",
            I::MissingDoctypeName => "DOCTYPE without name",
            I::MissingEndTag(_) => "element is not closed",
            I::UnmatchedEndTag(_) => "end tag without start tag",
            I::MismatchedEndTag { .. } => "end tag does not match start tag",
            I::DoubleHyphenInComment => "'--' inside a comment",
            _ => "ill-formed document",
        },
        E::InvalidAttr(_) => "malformed attribute (duplicate, unquoted or without value)",
        E::Encoding(_) => "invalid character encoding",
        E::Escape(_) => "invalid character or entity reference",
        E::Namespace(_) => "invalid namespace declaration",
        E::Io(_) => "read error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("æø\nx", 2), (1, 2));
        assert_eq!(line_col("x", 99), (1, 2));
    }
}
