//! The compact document tree.
//!
//! Layout: all names, attribute values and texts are copied into one arena `String`; nodes and
//! attributes are fixed-size records pointing into it. Building costs one pass of quick-xml plus a few
//! amortised `Vec` pushes, and the tree owns its data (no lifetime ties to the input buffer).

use crate::error::{reason_of, XmlError};
use crate::Limits;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug, Clone)]
struct NodeRec {
    ns: u16,
    name: Span,
    parent: u32,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
    attrs_start: u32,
    attrs_len: u32,
    text: Span,
    offset: u32,
    opaque: bool,
}

#[derive(Debug, Clone)]
struct AttrRec {
    ns: u16,
    name: Span,
    value: Span,
}

/// A parsed document. Namespace id 0 is "no namespace".
#[derive(Debug, Clone)]
pub struct Document {
    arena: String,
    nodes: Vec<NodeRec>,
    attrs: Vec<AttrRec>,
    namespaces: Vec<String>,
}

impl Document {
    /// Parse `text` within `limits`. Elements in any of `opaque_ns` are kept as nodes, but their content is
    /// only checked for well-formedness, not stored.
    pub fn parse(text: &str, limits: &Limits, opaque_ns: &[&str]) -> Result<Document, XmlError> {
        if text.len() > limits.max_bytes {
            return Err(XmlError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        if text.len() >= u32::MAX as usize {
            return Err(XmlError::TooLarge {
                limit: u32::MAX as usize - 1,
            });
        }
        Builder::new(text, limits, opaque_ns).run()
    }

    /// The root element.
    pub fn root(&self) -> Node<'_> {
        Node { doc: self, id: 0 }
    }

    /// Number of stored elements.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true for a parsed document (it always has a root).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn str(&self, s: Span) -> &str {
        let start = s.start as usize;
        self.arena.get(start..start + s.len as usize).unwrap_or("")
    }
}

/// Could `s` be an XML name without a colon (NCName)? quick-xml accepts `< />` and `<:/>` (found by
/// fuzzing), so names are checked here. Only the first character is classified: quick-xml already ends a
/// name at whitespace, `/`, `>` and `=`, and a full scan per name cost ~10% of validation (callgrind).
fn is_ncname(s: &str) -> bool {
    match s.as_bytes().first() {
        Some(&c) if c.is_ascii() => c.is_ascii_alphabetic() || c == b'_',
        Some(_) => s.chars().next().is_some_and(|c| c.is_alphabetic()),
        None => false,
    }
}

/// Append `s` with XML 1.0 end-of-line handling (`\r\n` and lone `\r` become `\n`) straight into the
/// arena, instead of quick-xml's `xml10_content`, which allocates a new string for every text with a `\r`.
fn push_normalised_eols(arena: &mut String, s: &str) {
    if !s.as_bytes().contains(&b'\r') {
        arena.push_str(s);
        return;
    }
    let mut rest = s;
    while let Some(i) = rest.find('\r') {
        arena.push_str(&rest[..i]);
        arena.push('\n');
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('\n') {
            rest = r;
        }
    }
    arena.push_str(rest);
}

/// Split a qualified name (`NCName` or `NCName:NCName`) into (prefix or "", local); `None` if invalid.
fn split_qname(s: &str) -> Option<(&str, &str)> {
    let (prefix, local) = match s.as_bytes().iter().position(|&c| c == b':') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => ("", s),
    };
    ((prefix.is_empty() || is_ncname(prefix))
        && is_ncname(local)
        && (s.len() == local.len() || !prefix.is_empty()))
    .then_some((prefix, local))
}

/// True when the raw attribute text of a tag mentions `xmlns` (cheaper than a substring searcher per tag).
fn mentions_xmlns(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'x' && b[i..].starts_with(b"xmlns"))
}

/// A borrowed element of a [`Document`].
#[derive(Clone, Copy)]
pub struct Node<'d> {
    doc: &'d Document,
    id: u32,
}

impl std::fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: never values, which may be personal data.
        write!(f, "Node({{{}}}{})", self.namespace(), self.name())
    }
}

impl<'d> Node<'d> {
    fn rec(&self) -> &'d NodeRec {
        &self.doc.nodes[self.id as usize]
    }

    /// The document this node belongs to.
    pub fn document(&self) -> &'d Document {
        self.doc
    }

    /// Local name.
    pub fn name(&self) -> &'d str {
        self.doc.str(self.rec().name)
    }

    /// Namespace URI ("" when unbound).
    pub fn namespace(&self) -> &'d str {
        &self.doc.namespaces[self.rec().ns as usize]
    }

    /// True when this element is `{ns}local`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.name() == local && self.namespace() == ns
    }

    /// Parent element.
    pub fn parent(&self) -> Option<Node<'d>> {
        let p = self.rec().parent;
        (p != NONE).then_some(Node {
            doc: self.doc,
            id: p,
        })
    }

    /// Child elements in document order.
    pub fn children(&self) -> Children<'d> {
        Children {
            doc: self.doc,
            next: self.rec().first_child,
        }
    }

    /// First child `{ns}local` where `ns` is this element's own namespace.
    pub fn child(&self, local: &str) -> Option<Node<'d>> {
        let ns = self.rec().ns;
        self.children()
            .find(|c| c.rec().ns == ns && c.name() == local)
    }

    /// All children `{ns}local` in this element's own namespace.
    pub fn children_named(&self, local: &'d str) -> impl Iterator<Item = Node<'d>> + 'd {
        let ns = self.rec().ns;
        self.children()
            .filter(move |c| c.rec().ns == ns && c.name() == local)
    }

    /// First child `{ns}local` in a given namespace.
    pub fn child_ns(&self, ns: &str, local: &str) -> Option<Node<'d>> {
        self.children().find(|c| c.is(ns, local))
    }

    /// Follow a path of local names in this element's namespace (`["period", "start"]`).
    pub fn at(&self, path: &[&str]) -> Option<Node<'d>> {
        path.iter().try_fold(*self, |n, p| n.child(p))
    }

    /// Attribute without namespace (`value`, `url`, ...).
    pub fn attr(&self, local: &str) -> Option<&'d str> {
        self.attrs()
            .find(|(ns, n, _)| ns.is_empty() && *n == local)
            .map(|(_, _, v)| v)
    }

    /// All attributes as (namespace, local name, value). `xmlns` declarations are not included.
    pub fn attrs(&self) -> impl Iterator<Item = (&'d str, &'d str, &'d str)> + 'd {
        let r = self.rec();
        let doc = self.doc;
        let range = r.attrs_start as usize..(r.attrs_start + r.attrs_len) as usize;
        doc.attrs[range].iter().map(move |a| {
            (
                doc.namespaces[a.ns as usize].as_str(),
                doc.str(a.name),
                doc.str(a.value),
            )
        })
    }

    /// The FHIR `value` attribute.
    pub fn value(&self) -> Option<&'d str> {
        self.attr("value")
    }

    /// `value` attribute of the child `local` (FHIR primitive: `<status value="..."/>`).
    pub fn child_value(&self, local: &str) -> Option<&'d str> {
        self.child(local).and_then(|c| c.value())
    }

    /// Text directly inside this element (not its children), trimmed. Empty for opaque elements.
    pub fn text(&self) -> &'d str {
        self.doc.str(self.rec().text).trim()
    }

    /// Trimmed text of the child `local` in this element's namespace, if that child exists.
    pub fn child_text(&self, local: &str) -> Option<&'d str> {
        self.child(local).map(|c| c.text())
    }

    /// True when the element's content was not stored (opaque namespace); it did contain well-formed XML.
    pub fn is_opaque(&self) -> bool {
        self.rec().opaque
    }

    /// True when the element has child elements or non-blank text (opaque elements: when non-empty).
    pub fn has_content(&self) -> bool {
        let r = self.rec();
        r.first_child != NONE || r.text.len > 0 || (r.opaque && r.text.start == 1)
    }

    /// Byte offset of the start tag in the parsed text.
    pub fn offset(&self) -> usize {
        self.rec().offset as usize
    }

    /// A stable identity within the document (for sets and maps of nodes).
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// Iterator over child elements.
pub struct Children<'d> {
    doc: &'d Document,
    next: u32,
}

impl<'d> Iterator for Children<'d> {
    type Item = Node<'d>;
    fn next(&mut self) -> Option<Node<'d>> {
        if self.next == NONE {
            return None;
        }
        let n = Node {
            doc: self.doc,
            id: self.next,
        };
        self.next = self.doc.nodes[self.next as usize].next_sibling;
        Some(n)
    }
}

struct Builder<'t> {
    text: &'t str,
    limits: &'t Limits,
    opaque_ns: &'t [&'t str],
    doc: Document,
    /// Stack of stored open elements.
    stack: Vec<u32>,
    /// Depth inside an opaque element (0 = not inside one).
    opaque_depth: usize,
    /// Namespace bindings in scope: (prefix span in `prefixes`, namespace id); "" is the default.
    bindings: Vec<(Span, u16)>,
    /// Prefix text of the bindings, as a stack (no allocation per declaration).
    prefixes: String,
    /// How many bindings each open stored element pushed.
    frames: Vec<u32>,
    root_closed: bool,
}

impl<'t> Builder<'t> {
    fn new(text: &'t str, limits: &'t Limits, opaque_ns: &'t [&'t str]) -> Self {
        Builder {
            text,
            limits,
            opaque_ns,
            doc: Document {
                // Sized from the examples (callgrind): growing these was ~5% of validation.
                arena: String::with_capacity(text.len() / 2),
                nodes: Vec::with_capacity(text.len() / 24),
                attrs: Vec::with_capacity(text.len() / 32),
                namespaces: vec![String::new()],
            },
            stack: Vec::with_capacity(32),
            opaque_depth: 0,
            bindings: Vec::new(),
            prefixes: String::new(),
            frames: Vec::with_capacity(32),
            root_closed: false,
        }
    }

    fn intern_ns(&mut self, uri: &str, offset: usize) -> Result<u16, XmlError> {
        if let Some(i) = self.doc.namespaces.iter().position(|n| n == uri) {
            return Ok(i as u16);
        }
        if self.doc.namespaces.len() >= usize::from(u16::MAX) {
            return Err(XmlError::Malformed {
                offset,
                reason: "too many distinct namespaces",
            });
        }
        self.doc.namespaces.push(uri.to_owned());
        Ok((self.doc.namespaces.len() - 1) as u16)
    }

    /// Push the `xmlns` declarations of a start tag; returns how many. quick-xml's NsReader re-parses
    /// every start tag's attributes to find declarations; MedCom messages declare namespaces on a
    /// handful of elements, so looking only when the raw tag mentions `xmlns` saves a pass per element.
    fn declare(&mut self, e: &BytesStart<'_>, offset: usize) -> Result<u32, XmlError> {
        if !mentions_xmlns(e.attributes_raw()) {
            return Ok(0);
        }
        let mut pushed = 0;
        for a in e.attributes() {
            let a = a.map_err(|err| XmlError::Malformed {
                offset,
                reason: reason_of(&err.into()),
            })?;
            let key: &str = a.key.as_ref();
            let prefix = match key.strip_prefix("xmlns") {
                Some("") => "",
                Some(p) if p.starts_with(':') => &p[1..],
                _ => continue,
            };
            let raw: &str = &a.value;
            let uri = if raw
                .bytes()
                .any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r'))
            {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|_| XmlError::Malformed {
                        offset,
                        reason: "invalid namespace declaration",
                    })?
            } else {
                std::borrow::Cow::Borrowed(raw)
            };
            if uri.is_empty() && !prefix.is_empty() {
                return Err(XmlError::Malformed {
                    offset,
                    reason: "a prefix cannot be bound to no namespace",
                });
            }
            let id = if uri.is_empty() {
                0
            } else {
                self.intern_ns(&uri, offset)?
            };
            let span = Span {
                start: self.prefixes.len() as u32,
                len: prefix.len() as u32,
            };
            self.prefixes.push_str(prefix);
            self.bindings.push((span, id));
            pushed += 1;
        }
        Ok(pushed)
    }

    /// Namespace of a prefix ("" = default) in scope; `xml` is predeclared.
    fn resolve_prefix(&mut self, prefix: &str, offset: usize) -> Result<u16, XmlError> {
        let prefixes = &self.prefixes;
        let bound = |sp: &Span| {
            prefixes.get(sp.start as usize..(sp.start + sp.len) as usize) == Some(prefix)
        };
        if let Some((_, id)) = self.bindings.iter().rev().find(|(sp, _)| bound(sp)) {
            return Ok(*id);
        }
        match prefix {
            "" => Ok(0),
            "xml" => self.intern_ns("http://www.w3.org/XML/1998/namespace", offset),
            _ => Err(XmlError::UnboundPrefix { offset }),
        }
    }

    fn pop_bindings(&mut self, n: u32) {
        let keep = self.bindings.len().saturating_sub(n as usize);
        if let Some((first_removed, _)) = self.bindings.get(keep) {
            self.prefixes.truncate(first_removed.start as usize);
        }
        self.bindings.truncate(keep);
    }

    fn push_str(&mut self, s: &str) -> Span {
        let start = self.doc.arena.len() as u32;
        self.doc.arena.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    /// Note that an opaque element has content, without storing it (start=1 is the marker, len stays 0).
    fn mark_opaque_content(&mut self) {
        if let Some(&top) = self.stack.last() {
            self.doc.nodes[top as usize].text = Span { start: 1, len: 0 };
        }
    }

    /// Append text to the innermost stored element, keeping its text contiguous in the arena.
    fn push_text(&mut self, s: &str, offset: usize) -> Result<(), XmlError> {
        let Some(&top) = self.stack.last() else {
            if !s.trim().is_empty() {
                return Err(XmlError::ContentAfterRoot { offset });
            }
            return Ok(());
        };
        if self.opaque_depth > 0 {
            if !s.trim().is_empty() {
                self.mark_opaque_content();
            }
            return Ok(());
        }
        let cur = self.doc.nodes[top as usize].text;
        if cur.len == 0 && s.trim().is_empty() {
            return Ok(());
        }
        let end = (cur.start + cur.len) as usize;
        let start = if cur.len > 0 && end == self.doc.arena.len() {
            cur.start
        } else {
            let start = self.doc.arena.len() as u32;
            if cur.len > 0 {
                let old = self.doc.str(cur).to_owned();
                self.doc.arena.push_str(&old);
            }
            start
        };
        push_normalised_eols(&mut self.doc.arena, s);
        let len = self.doc.arena.len() as u32 - start;
        self.doc.nodes[top as usize].text = Span { start, len };
        Ok(())
    }

    fn start(
        &mut self,
        ns: u16,
        e: &BytesStart<'_>,
        offset: usize,
        empty: bool,
    ) -> Result<(), XmlError> {
        if self.root_closed {
            return Err(XmlError::ContentAfterRoot { offset });
        }
        let depth = self.stack.len() + self.opaque_depth + 1;
        if depth > self.limits.max_depth {
            return Err(XmlError::TooDeep {
                limit: self.limits.max_depth,
                offset,
            });
        }
        let storing = self.opaque_depth == 0;
        if storing && self.doc.nodes.len() >= self.limits.max_elements {
            return Err(XmlError::TooManyElements {
                limit: self.limits.max_elements,
                offset,
            });
        }
        // One pass over the attributes: well-formedness (quotes, duplicates), the limit, entity
        // references (checked even in opaque content, so an undefined entity is always refused), and —
        // for stored elements — the values, normalised only when they contain a reference or a
        // whitespace character the XML rules rewrite.
        let attrs_start = self.doc.attrs.len() as u32;
        let mut n_attrs = 0usize;
        for a in e.attributes() {
            let a = a.map_err(|err| XmlError::Malformed {
                offset,
                reason: reason_of(&err.into()),
            })?;
            n_attrs += 1;
            if n_attrs > self.limits.max_attributes {
                return Err(XmlError::TooManyAttributes {
                    limit: self.limits.max_attributes,
                    offset,
                });
            }
            let raw: &str = &a.value;
            let needs_normalising = raw
                .bytes()
                .any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r'));
            let normalised = if needs_normalising {
                Some(
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|err| match err {
                            quick_xml::Error::Escape(
                                quick_xml::escape::EscapeError::UnrecognizedEntity(..),
                            ) => XmlError::EntityUndefined { offset },
                            other => XmlError::Malformed {
                                offset,
                                reason: reason_of(&other),
                            },
                        })?,
                )
            } else {
                None
            };
            let key: &str = a.key.as_ref();
            let Some((prefix, local)) = split_qname(key) else {
                return Err(XmlError::Malformed {
                    offset,
                    reason: "attribute name is not a valid XML name",
                });
            };
            if !storing || prefix == "xmlns" || (prefix.is_empty() && local == "xmlns") {
                continue;
            }
            let ans = if prefix.is_empty() {
                0
            } else {
                self.resolve_prefix(prefix, offset)?
            };
            let name = self.push_str(local);
            let value = self.push_str(normalised.as_deref().unwrap_or(raw));
            self.doc.attrs.push(AttrRec {
                ns: ans,
                name,
                value,
            });
        }
        if !storing {
            if !empty {
                self.opaque_depth += 1;
            }
            self.mark_opaque_content();
            return Ok(());
        }
        let opaque = self
            .opaque_ns
            .contains(&self.doc.namespaces[ns as usize].as_str());
        let name = self.push_str(e.local_name().as_ref());
        let id = self.doc.nodes.len() as u32;
        let parent = self.stack.last().copied().unwrap_or(NONE);
        self.doc.nodes.push(NodeRec {
            ns,
            name,
            parent,
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
            attrs_start,
            attrs_len: self.doc.attrs.len() as u32 - attrs_start,
            text: Span::default(),
            offset: offset as u32,
            opaque,
        });
        if parent != NONE {
            let p = &mut self.doc.nodes[parent as usize];
            if p.last_child == NONE {
                p.first_child = id;
            } else {
                let last = p.last_child as usize;
                self.doc.nodes[last].next_sibling = id;
            }
            self.doc.nodes[parent as usize].last_child = id;
        }
        if empty {
            if self.stack.is_empty() {
                self.root_closed = true;
            }
        } else {
            self.stack.push(id);
            if opaque {
                self.opaque_depth = 1;
            }
        }
        Ok(())
    }

    /// A start tag: resolve its namespace (outside opaque content) and store it.
    fn open(&mut self, e: &BytesStart<'_>, offset: usize, empty: bool) -> Result<(), XmlError> {
        let qname = e.name();
        let Some((prefix, _)) = split_qname(qname.as_ref()) else {
            return Err(XmlError::Malformed {
                offset,
                reason: "element name is not a valid XML name",
            });
        };
        if self.opaque_depth > 0 {
            return self.start(0, e, offset, empty);
        }
        let pushed = self.declare(e, offset)?;
        let ns = self.resolve_prefix(prefix, offset)?;
        self.start(ns, e, offset, empty)?;
        if empty {
            self.pop_bindings(pushed);
        } else {
            self.frames.push(pushed);
        }
        Ok(())
    }

    fn end(&mut self) {
        if self.opaque_depth > 1 {
            self.opaque_depth -= 1;
            return;
        }
        self.opaque_depth = 0;
        self.stack.pop();
        if let Some(n) = self.frames.pop() {
            self.pop_bindings(n);
        }
        if self.stack.is_empty() {
            self.root_closed = true;
        }
    }

    fn run(mut self) -> Result<Document, XmlError> {
        let mut reader = Reader::from_str(self.text);
        let config = reader.config_mut();
        config.enable_all_checks(true);
        loop {
            let offset = reader.buffer_position() as usize;
            let event = match reader.read_event() {
                Ok(e) => e,
                Err(err) => {
                    let at = reader.error_position() as usize;
                    return Err(XmlError::Malformed {
                        offset: at,
                        reason: reason_of(&err),
                    });
                }
            };
            match event {
                Event::DocType(_) => return Err(XmlError::DoctypeForbidden { offset }),
                Event::Start(e) => self.open(&e, offset, false)?,
                Event::Empty(e) => self.open(&e, offset, true)?,
                Event::End(_) => self.end(),
                Event::Text(t) if self.opaque_depth > 0 => {
                    if !t.as_ref().trim().is_empty() {
                        self.mark_opaque_content();
                    }
                }
                // Indentation between elements: skipped before any normalisation work.
                Event::Text(t) if t.as_ref().bytes().all(|b| b.is_ascii_whitespace()) => {}
                Event::Text(t) => self.push_text(&t, offset)?,
                Event::CData(c) => self.push_text(&c.xml10_content(), offset)?,
                Event::GeneralRef(r) => {
                    let ch = match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        Ok(None) => match quick_xml::escape::resolve_predefined_entity(&r) {
                            Some(s) => {
                                self.push_text(s, offset)?;
                                continue;
                            }
                            None => return Err(XmlError::EntityUndefined { offset }),
                        },
                        Err(_) => {
                            return Err(XmlError::Malformed {
                                offset,
                                reason: "invalid character reference",
                            })
                        }
                    };
                    let mut buf = [0u8; 4];
                    self.push_text(ch.encode_utf8(&mut buf), offset)?;
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if self.doc.nodes.is_empty() {
            return Err(XmlError::Empty);
        }
        if !self.stack.is_empty() {
            return Err(XmlError::Malformed {
                offset: self.text.len(),
                reason: "element is not closed",
            });
        }
        Ok(self.doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    fn parse(s: &str) -> Result<Document, XmlError> {
        Document::parse(s, &Limits::default(), &[ns::XHTML])
    }

    #[test]
    fn namespaces_match_on_uri_not_prefix() {
        let a = parse(r#"<a:Emessage xmlns:a="urn:x"><a:Letter v="1"/></a:Emessage>"#).unwrap();
        let b = parse(r#"<Emessage xmlns="urn:x"><Letter v="1"/></Emessage>"#).unwrap();
        for d in [&a, &b] {
            assert!(d.root().is("urn:x", "Emessage"));
            let l = d.root().child("Letter").unwrap();
            assert_eq!(l.attr("v"), Some("1"));
        }
        let c = parse(r#"<Emessage xmlns="urn:x"><Letter xmlns="urn:y"/></Emessage>"#).unwrap();
        assert!(c.root().child("Letter").is_none());
        assert!(c.root().child_ns("urn:y", "Letter").is_some());
    }

    #[test]
    fn namespace_scopes_end_with_their_element() {
        let d = parse(r#"<r xmlns="urn:r"><a xmlns="urn:a"><b/></a><c/><d xmlns=""/><p:e xmlns:p="urn:p" p:k="1"/></r>"#).unwrap();
        let kids: Vec<_> = d
            .root()
            .children()
            .map(|n| (n.namespace().to_owned(), n.name().to_owned()))
            .collect();
        assert_eq!(kids[0], ("urn:a".to_owned(), "a".to_owned()));
        assert_eq!(
            d.root()
                .children()
                .next()
                .unwrap()
                .children()
                .next()
                .unwrap()
                .namespace(),
            "urn:a"
        );
        assert_eq!(kids[1], ("urn:r".to_owned(), "c".to_owned()));
        assert_eq!(kids[2], (String::new(), "d".to_owned()));
        let e = d.root().children().nth(3).unwrap();
        assert!(e.is("urn:p", "e"));
        assert_eq!(e.attrs().next(), Some(("urn:p", "k", "1")));
        // a prefix declared on a sibling is not in scope
        assert_eq!(
            parse(r#"<r><a xmlns:p="urn:p"/><p:b/></r>"#)
                .unwrap_err()
                .code(),
            "xml.namespace-unbound"
        );
        assert_eq!(
            parse(r#"<r xmlns:p=""/>"#).unwrap_err().code(),
            "xml.malformed"
        );
    }

    #[test]
    fn doctype_is_refused_and_entities_never_expanded() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><a>&lol2;</a>"#;
        assert!(matches!(
            parse(bomb),
            Err(XmlError::DoctypeForbidden { .. })
        ));
        let ext = r#"<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>"#;
        assert_eq!(parse(ext).unwrap_err().code(), "xml.doctype-forbidden");
        assert_eq!(
            parse("<a>&custom;</a>").unwrap_err().code(),
            "xml.entity-undefined"
        );
        assert_eq!(
            parse(r#"<a b="&custom;"/>"#).unwrap_err().code(),
            "xml.entity-undefined"
        );
        let ok = parse(r#"<a b="x&amp;y">1 &lt; 2 &#x41;</a>"#).unwrap();
        assert_eq!(ok.root().attr("b"), Some("x&y"));
        assert_eq!(ok.root().text(), "1 < 2 A");
    }

    #[test]
    fn limits_are_enforced() {
        let deep = "<a>".repeat(200) + &"</a>".repeat(200);
        assert_eq!(parse(&deep).unwrap_err().code(), "xml.too-deep");
        let attrs: String = (0..100).map(|i| format!(" a{i}=\"1\"")).collect();
        assert_eq!(
            parse(&format!("<a{attrs}/>")).unwrap_err().code(),
            "xml.too-many-attributes"
        );
        let small = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            Document::parse("<a>0123456789</a>", &small, &[])
                .unwrap_err()
                .code(),
            "xml.too-large"
        );
        let few = Limits {
            max_elements: 2,
            ..Limits::default()
        };
        assert_eq!(
            Document::parse("<a><b/><c/></a>", &few, &[])
                .unwrap_err()
                .code(),
            "xml.too-many-elements"
        );
    }

    #[test]
    fn malformed_documents() {
        for (doc, code) in [
            ("", "xml.empty"),
            ("<a>", "xml.malformed"),
            ("<a></b>", "xml.malformed"),
            ("<a/><b/>", "xml.content-after-root"),
            ("<a/>text", "xml.content-after-root"),
            ("<x:a/>", "xml.namespace-unbound"),
            ("<a b='1' b='2'/>", "xml.malformed"),
            ("<a b=1/>", "xml.malformed"),
            // found by fuzzing: quick-xml accepts empty names
            ("< />", "xml.malformed"),
            ("<:/>", "xml.malformed"),
            ("<a:/>", "xml.malformed"),
            ("<a :b='1'/>", "xml.malformed"),
            ("<1a/>", "xml.malformed"),
            ("<-a/>", "xml.malformed"),
        ] {
            assert_eq!(parse(doc).map(|_| ()).unwrap_err().code(), code, "{doc}");
        }
    }

    #[test]
    fn opaque_subtrees_are_checked_not_stored() {
        let d = parse(r#"<r xmlns="urn:r"><text><div xmlns="http://www.w3.org/1999/xhtml"><p>secret name</p></div></text><v value="1"/></r>"#).unwrap();
        let div = d
            .root()
            .child("text")
            .unwrap()
            .child_ns(ns::XHTML, "div")
            .unwrap();
        assert!(div.is_opaque());
        assert!(div.has_content());
        assert_eq!(div.children().count(), 0);
        assert!(!d.arena.contains("secret"));
        assert_eq!(d.root().child_value("v"), Some("1"));
        let bad = r#"<r><div xmlns="http://www.w3.org/1999/xhtml"><p></div></r>"#;
        assert_eq!(parse(bad).unwrap_err().code(), "xml.malformed");
        let empty = parse(r#"<r><div xmlns="http://www.w3.org/1999/xhtml"/></r>"#).unwrap();
        assert!(!empty.root().children().next().unwrap().has_content());
    }

    #[test]
    fn mixed_content_text_is_joined() {
        let d = parse("<a>one<b/>two<![CDATA[<3>]]></a>").unwrap();
        assert_eq!(d.root().text(), "onetwo<3>");
        assert_eq!(d.root().child("b").unwrap().offset(), 6);
    }

    #[test]
    fn end_of_line_handling() {
        let d = parse("<a>x\r\ny\rz\r</a>").unwrap();
        assert_eq!(d.root().text(), "x\ny\nz");
    }

    #[test]
    fn line_columns() {
        let text = "<a>\n  <b/>\n</a>";
        let d = parse(text).unwrap();
        let b = d.root().child("b").unwrap();
        assert_eq!(crate::line_col(text, b.offset()), (2, 3));
        let e = parse("<a>\n<b></c></a>").unwrap_err();
        assert_eq!(e.location("<a>\n<b></c></a>").split(':').next(), Some("2"));
    }
}
