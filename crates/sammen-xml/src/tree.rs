//! The compact document tree.
//!
//! Layout: names, attribute values and texts that are not one unaltered piece of the input are copied
//! into one arena `String`; other texts point into the input, which the tree borrows. Nodes and
//! attributes are fixed-size records pointing there. Building costs one pass of quick-xml plus a few
//! amortised `Vec` pushes.

use crate::error::{reason_of, XmlError};
use crate::Limits;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::QName;
use quick_xml::Reader;
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;

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
    /// `name` spans the input rather than the arena (always, in practice: names are never rewritten).
    name_in_input: bool,
    parent: u32,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
    attrs_start: u32,
    attrs_len: u32,
    text: Span,
    /// `text` spans the input rather than the arena (see [`Document`]).
    text_in_input: bool,
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
///
/// It borrows the parsed text: an element whose text is one unaltered piece of the input (the usual
/// case) points there instead of holding a copy: copying a VANS envelope's base64 payload, one 25 KB
/// text, was 3% of validating the envelope (callgrind).
#[derive(Debug, Clone, Default)]
pub struct Document<'t> {
    input: &'t str,
    /// Its own buffers, in a type of their own: that type's `Drop` hands them on to the next parse
    /// (see [`DocBufs`]) without making `Document` itself a type with `Drop`, which would change
    /// borrowing for every caller.
    store: DocBufs,
}

impl<'t> Document<'t> {
    /// Parse `text` within `limits`. Elements in any of `opaque_ns` are kept as nodes, but their content is
    /// only checked for well-formedness, not stored.
    pub fn parse(
        text: &'t str,
        limits: &Limits,
        opaque_ns: &[&str],
    ) -> Result<Document<'t>, XmlError> {
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
        self.store.nodes.len()
    }

    /// Never true for a parsed document (it always has a root).
    pub fn is_empty(&self) -> bool {
        self.store.nodes.is_empty()
    }

    /// The bytes of an element's name (no char-boundary checks: for comparisons).
    #[inline]
    fn name_bytes(&self, r: &NodeRec) -> &[u8] {
        let buf = if r.name_in_input {
            self.input.as_bytes()
        } else {
            self.store.arena.as_bytes()
        };
        let start = r.name.start as usize;
        buf.get(start..start + r.name.len as usize).unwrap_or(&[])
    }

    /// The bytes of a span (no char-boundary checks: for comparisons).
    fn bytes(&self, s: Span) -> &[u8] {
        let start = s.start as usize;
        self.store
            .arena
            .as_bytes()
            .get(start..start + s.len as usize)
            .unwrap_or(&[])
    }

    fn namespace(&self, id: u16) -> &str {
        self.store
            .namespaces
            .get(usize::from(id))
            .map_or("", |&s| self.str(s))
    }

    fn str(&self, s: Span) -> &str {
        let start = s.start as usize;
        self.store
            .arena
            .get(start..start + s.len as usize)
            .unwrap_or("")
    }

    /// A span of the parsed text.
    #[inline]
    fn input_str(&self, s: Span) -> &'t str {
        let start = s.start as usize;
        self.input.get(start..start + s.len as usize).unwrap_or("")
    }
}

/// Could `s` be an XML name without a colon (NCName)? quick-xml accepts `< />` and `<:/>` (found by
/// fuzzing), so names are checked here. Only the first character is classified: quick-xml already ends a
/// name at whitespace, `/`, `>` and `=`, and a full scan per name cost ~10% of validation (callgrind).
#[inline]
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
    // memchr: the standard library's byte search was ~2% of validation (callgrind).
    if memchr::memchr(b'\r', s.as_bytes()).is_none() {
        arena.push_str(s);
        return;
    }
    let mut rest = s;
    while let Some(i) = memchr::memchr(b'\r', rest.as_bytes()) {
        arena.push_str(&rest[..i]);
        arena.push('\n');
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('\n') {
            rest = r;
        }
    }
    arena.push_str(rest);
}

/// `a == b` for equally long slices; names are short, and a `memcmp` call cost more than the
/// comparison (callgrind).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        if let Some(c) = s.get(i..i + 8) {
            w.copy_from_slice(c);
        }
        u64::from_le_bytes(w)
    };
    match n {
        0..=7 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Only white space? (What `trim().is_empty()` says, in one pass that stops at the first other character.)
fn is_blank(s: &str) -> bool {
    // Texts mostly start with a visible ASCII character: answered without decoding.
    if s.as_bytes().first().is_some_and(u8::is_ascii_graphic) {
        return false;
    }
    s.chars().all(char::is_whitespace)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is zero. The lowest flagged byte is always a true zero (a
/// borrow can only flag bytes above a true one), which is all [`swar_find`] relies on.
const fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

/// High bit set in each byte of `w` below `n` (`n` ≤ 128), with the same lowest-is-true property.
const fn bytes_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * n as u64) & !w & HI
}

/// Index of the first byte of `b` that `hit` selects, eight bytes at a time. `flags` is the same test
/// over a little-endian word (see [`zero_bytes`]). Names and values are too short for memchr's vector
/// paths, and byte loops here were a tenth of validation (callgrind).
#[inline]
fn swar_find(b: &[u8], flags: impl Fn(u64) -> u64, hit: impl Fn(u8) -> bool) -> Option<usize> {
    let n = b.len();
    if n < 8 {
        return b.iter().position(|&c| hit(c));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        if let Some(c) = b.get(i..i + 8) {
            w.copy_from_slice(c);
        }
        u64::from_le_bytes(w)
    };
    let mut i = 0;
    while i + 8 <= n {
        let z = flags(word(i));
        if z != 0 {
            return Some(i + (z.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i == n {
        return None;
    }
    // The tail: the last eight bytes, minus those already checked. Those had no hit, so they cannot
    // flag anything above them either.
    let seen = i - (n - 8);
    let z = flags(word(n - 8)) & (u64::MAX << (8 * seen));
    (z != 0).then(|| n - 8 + (z.trailing_zeros() / 8) as usize)
}

/// High bit set in each byte of `w` that is not zero; exact, unlike [`zero_bytes`] (no carry crosses
/// a byte).
const fn nonzero_bytes(w: u64) -> u64 {
    (((w & !HI) + !HI) | w) & HI
}

/// Only ASCII white space (what `bytes().all(u8::is_ascii_whitespace)` says), eight bytes at a time:
/// the byte loop over indentation was ~2% of validating a letter (callgrind).
#[inline]
fn is_ascii_blank(b: &[u8]) -> bool {
    if b.len() < 8 {
        return b.iter().all(u8::is_ascii_whitespace);
    }
    // Longer indentation is mostly a line break and then spaces: step over the break byte by byte
    // (most texts that are not blank fail here, at their first byte), then take the spaces a word at
    // a time.
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b' ' {
            break;
        }
        if !c.is_ascii_whitespace() {
            return false;
        }
        i += 1;
    }
    let b = b.get(i..).unwrap_or_default();
    if b.len() < 8 {
        return b.iter().all(u8::is_ascii_whitespace);
    }
    let mut words = b.chunks_exact(8);
    for c in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let w = u64::from_le_bytes(a);
        // Indentation is mostly runs of spaces.
        if w == LO * u64::from(b' ') {
            continue;
        }
        let other = [b' ', b'\n', b'\t', b'\r', 0x0C]
            .iter()
            .fold(HI, |acc, &x| acc & nonzero_bytes(w ^ (LO * u64::from(x))));
        if other != 0 {
            return false;
        }
    }
    words.remainder().iter().all(u8::is_ascii_whitespace)
}

/// Does `s` hold a `\r`? Element texts are mostly a few bytes, where a memchr call cost more than
/// the search (1% of validating XDIS20, callgrind); long texts still get memchr.
#[inline]
fn has_cr(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 64 {
        swar_find(
            b,
            |w| zero_bytes(w ^ (LO * u64::from(b'\r'))),
            |c| c == b'\r',
        )
        .is_some()
    } else {
        memchr::memchr(b'\r', b).is_some()
    }
}

/// Index of the first `:` in `b`.
#[inline]
fn find_colon(b: &[u8]) -> Option<usize> {
    swar_find(b, |w| zero_bytes(w ^ (LO * u64::from(b':'))), |c| c == b':')
}

/// Split a qualified name (`NCName` or `NCName:NCName`) into (prefix or "", local); `None` if invalid.
/// Inlined: it runs for every tag (with the attribute fast path in `start`, -1.7% instructions per letter).
/// `always`: left to itself the compiler kept it a call (callgrind: 75 instructions a tag, ~1% of a letter).
#[inline(always)]
fn split_qname(s: &str) -> Option<(&str, &str)> {
    let (prefix, local) = match find_colon(s.as_bytes()) {
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
    let mut b = raw.as_bytes();
    while let Some(i) = swar_find(b, |w| zero_bytes(w ^ (LO * u64::from(b'x'))), |c| c == b'x') {
        if b[i..].starts_with(b"xmlns") {
            return true;
        }
        b = &b[i + 1..];
    }
    false
}

/// XML white space as quick-xml's attribute iterator knows it.
const fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\r' | b'\n' | b'\t')
}

/// Start tags with more attributes than this check duplicates with a hash set, so a tag stays O(n).
const SMALL_TAG: usize = 8;

/// An attribute the scanner refused: no `=`, no or unquoted value, unclosed quote, or a duplicate name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadAttr;

/// The attributes of one start tag as (raw qualified name, raw value), with exactly the acceptance
/// rules of quick-xml's XML-mode `Attributes` iterator with duplicate checks (held to that by
/// `attribute_scan_agrees_with_quick_xml` and the xml_tree fuzz target). quick-xml's iterator
/// allocates a key vector for every tag with an attribute, the largest part of attribute handling
/// (callgrind); this keeps the keys of ordinary tags on the stack. Stops after the first error.
pub(crate) struct AttrScan<'a> {
    raw: &'a str,
    pos: usize,
    failed: bool,
    /// Names seen so far as (start, end) in `raw`: spans rather than `&str`, so that setting up a
    /// scan per tag stays cheap.
    keys: [(u32, u32); SMALL_TAG],
    n_keys: usize,
    many: Option<HashSet<&'a str>>,
}

impl<'a> AttrScan<'a> {
    /// `raw` is the tag text after its name ([`BytesStart::attributes_raw`]).
    pub(crate) fn new(raw: &'a str) -> Self {
        AttrScan {
            raw,
            pos: 0,
            failed: false,
            keys: [(0, 0); SMALL_TAG],
            n_keys: 0,
            many: None,
        }
    }

    /// Record the name at `start..end`; true when the tag already had it.
    fn seen(&mut self, start: u32, end: u32) -> bool {
        let raw = self.raw;
        let name = |(s, e): (u32, u32)| raw.get(s as usize..e as usize).unwrap_or("");
        let key = name((start, end));
        if let Some(set) = &mut self.many {
            return !set.insert(key);
        }
        if self.keys[..self.n_keys].iter().any(|&k| name(k) == key) {
            return true;
        }
        if self.n_keys < SMALL_TAG {
            self.keys[self.n_keys] = (start, end);
            self.n_keys += 1;
        } else {
            let mut set: HashSet<&'a str> = self.keys.iter().map(|&k| name(k)).collect();
            set.insert(key);
            self.many = Some(set);
        }
        false
    }

    fn fail<T>(&mut self) -> Option<Result<T, BadAttr>> {
        self.failed = true;
        Some(Err(BadAttr))
    }
}

impl<'a> Iterator for AttrScan<'a> {
    type Item = Result<(&'a str, &'a str), BadAttr>;

    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.raw;
        Some(self.next_span()?.and_then(|[ks, ke, vs, ve]| {
            match (
                raw.get(ks as usize..ke as usize),
                raw.get(vs as usize..ve as usize),
            ) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(BadAttr),
            }
        }))
    }
}

impl<'a> AttrScan<'a> {
    /// The next attribute as byte offsets (name start, name end, value start, value end) in the raw
    /// text, which is shorter than `u32::MAX` (checked by [`Document::parse`]).
    #[inline]
    fn next_span(&mut self) -> Option<Result<[u32; 4], BadAttr>> {
        if self.failed {
            return None;
        }
        let b = self.raw.as_bytes();
        let mut i = self.pos;
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            self.pos = i;
            return None;
        }
        // As in quick-xml, the name's first byte is taken as is (even `=`); the name ends at the next
        // `=` or white space.
        let key_start = i;
        i += 1;
        while i < b.len() && b[i] != b'=' && !is_ws(b[i]) {
            i += 1;
        }
        let key_end = i;
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return self.fail();
        }
        i += 1;
        // Boundaries sit next to ASCII bytes, so `get` never fails; it keeps this panic-free anyway.
        if self.raw.get(key_start..key_end).is_none() {
            return self.fail();
        }
        if self.seen(key_start as u32, key_end as u32) {
            return self.fail();
        }
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        let quote = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return self.fail(),
        };
        let v_start = i + 1;
        let Some(len) = b
            .get(v_start..)
            .and_then(|rest| memchr::memchr(quote, rest))
        else {
            return self.fail();
        };
        let v_end = v_start + len;
        self.pos = v_end + 1;
        Some(Ok([key_start, key_end, v_start, v_end].map(|i| i as u32)))
    }
}

/// Might an attribute value contain a reference or white space the XML rules rewrite? (Also true for
/// other control characters: normalising those changes nothing, so a false alarm only costs time.)
fn needs_normalising(raw: &str) -> bool {
    swar_find(
        raw.as_bytes(),
        |w| zero_bytes(w ^ (LO * u64::from(b'&'))) | bytes_below(w, 0x0E),
        |c| c == b'&' || c < 0x0E,
    )
    .is_some()
}

/// The error for anything [`AttrScan`] refuses (the text quick-xml's `InvalidAttr` maps to).
fn bad_attribute(offset: usize) -> XmlError {
    XmlError::Malformed {
        offset,
        reason: reason_of(&quick_xml::Error::InvalidAttr(
            quick_xml::events::attributes::AttrError::ExpectedEq(0),
        )),
    }
}

/// (Name, value) pairs of the attributes of `raw` until the first error, and whether there was one.
type Scanned = (Vec<(String, String)>, bool);

fn scan_ours(raw: &str) -> Scanned {
    let mut ok = Vec::new();
    for a in AttrScan::new(raw) {
        match a {
            Ok((k, v)) => ok.push((k.to_owned(), v.to_owned())),
            Err(BadAttr) => return (ok, true),
        }
    }
    (ok, false)
}

fn scan_quick_xml(e: &BytesStart<'_>) -> Scanned {
    let mut ok = Vec::new();
    for a in e.attributes() {
        match a {
            Ok(a) => ok.push((a.key.as_ref().to_owned(), a.value.into_owned())),
            Err(_) => return (ok, true),
        }
    }
    (ok, false)
}

/// For the xml_tree fuzz target: read `text` with quick-xml and check that the tree builder's attribute
/// scanner yields, for every start tag, the same attributes and the same refusal as quick-xml's own
/// iterator. Returns the byte offset of the first tag where they differ.
#[doc(hidden)]
pub fn attribute_scan_mismatch(text: &str) -> Option<usize> {
    let mut reader = Reader::from_str(text);
    loop {
        let offset = reader.buffer_position() as usize;
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                if scan_ours(e.attributes_raw()) != scan_quick_xml(&e) {
                    return Some(offset);
                }
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// quick-xml's XML 1.0 attribute-value normalisation (references resolved, white space mapped).
fn normalise_value<'a>(key: &'a str, raw: &'a str) -> quick_xml::Result<Cow<'a, str>> {
    Attribute {
        key: QName(key),
        value: Cow::Borrowed(raw),
    }
    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
}

/// A borrowed element of a [`Document`].
#[derive(Clone, Copy)]
pub struct Node<'d> {
    doc: &'d Document<'d>,
    id: u32,
}

impl std::fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: never values, which may be personal data.
        write!(f, "Node({{{}}}{})", self.namespace(), self.name())
    }
}

impl<'d> Node<'d> {
    #[inline]
    fn rec(&self) -> &'d NodeRec {
        &self.doc.store.nodes[self.id as usize]
    }

    /// The document this node belongs to.
    pub fn document(&self) -> &'d Document<'d> {
        self.doc
    }

    /// Local name.
    #[inline]
    pub fn name(&self) -> &'d str {
        let r = self.rec();
        if r.name_in_input {
            self.doc.input_str(r.name)
        } else {
            self.doc.str(r.name)
        }
    }

    /// Namespace URI ("" when unbound).
    #[inline]
    pub fn namespace(&self) -> &'d str {
        self.doc.namespace(self.rec().ns)
    }

    /// True when this element is `{ns}local`.
    #[inline]
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.name_is(local) && self.namespace() == ns
    }

    /// True when the local name is `local` (cheaper than comparing [`Node::name`]).
    #[inline]
    pub fn name_is(&self, local: &str) -> bool {
        let r = self.rec();
        // Lengths first: most siblings differ there, without slicing or a memcmp call.
        r.name.len as usize == local.len() && same_bytes(self.doc.name_bytes(r), local.as_bytes())
    }

    /// True when both elements are in the same namespace.
    #[inline]
    pub fn same_namespace(&self, other: &Node<'_>) -> bool {
        if std::ptr::eq(self.doc, other.doc) {
            self.rec().ns == other.rec().ns
        } else {
            self.namespace() == other.namespace()
        }
    }

    /// Parent element.
    #[inline]
    pub fn parent(&self) -> Option<Node<'d>> {
        let p = self.rec().parent;
        (p != NONE).then_some(Node {
            doc: self.doc,
            id: p,
        })
    }

    /// Child elements in document order.
    #[inline]
    pub fn children(&self) -> Children<'d> {
        Children {
            doc: self.doc,
            next: self.rec().first_child,
        }
    }

    /// First child `{ns}local` where `ns` is this element's own namespace.
    #[inline]
    pub fn child(&self, local: &str) -> Option<Node<'d>> {
        let ns = self.rec().ns;
        self.children()
            .find(|c| c.rec().ns == ns && c.name_is(local))
    }

    /// Children named `local` in any namespace, in document order. Scans the records directly: the
    /// OIOXML rules' child lookups through [`Node::children`] were ~3% of validating a small letter.
    #[inline]
    pub fn children_local<'l>(&self, local: &'l str) -> LocalChildren<'d, 'l> {
        LocalChildren {
            doc: self.doc,
            next: self.rec().first_child,
            local,
        }
    }

    /// All children `{ns}local` in this element's own namespace.
    pub fn children_named(&self, local: &'d str) -> impl Iterator<Item = Node<'d>> + 'd {
        let ns = self.rec().ns;
        self.children()
            .filter(move |c| c.rec().ns == ns && c.name_is(local))
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
    #[inline]
    pub fn attr(&self, local: &str) -> Option<&'d str> {
        let r = self.rec();
        let doc = self.doc;
        let range = r.attrs_start as usize..(r.attrs_start + r.attrs_len) as usize;
        // Namespace id 0 is "no namespace".
        doc.store
            .attrs
            .get(range)?
            .iter()
            .find(|a| a.ns == 0 && same_bytes(doc.bytes(a.name), local.as_bytes()))
            .map(|a| doc.str(a.value))
    }

    /// All attributes as (namespace, local name, value). `xmlns` declarations are not included.
    pub fn attrs(&self) -> impl Iterator<Item = (&'d str, &'d str, &'d str)> + 'd {
        let r = self.rec();
        let doc = self.doc;
        let range = r.attrs_start as usize..(r.attrs_start + r.attrs_len) as usize;
        doc.store.attrs[range]
            .iter()
            .map(move |a| (doc.namespace(a.ns), doc.str(a.name), doc.str(a.value)))
    }

    /// The FHIR `value` attribute.
    #[inline]
    pub fn value(&self) -> Option<&'d str> {
        self.attr("value")
    }

    /// `value` attribute of the child `local` (FHIR primitive: `<status value="..."/>`).
    #[inline]
    pub fn child_value(&self, local: &str) -> Option<&'d str> {
        self.child(local).and_then(|c| c.value())
    }

    /// Text directly inside this element (not its children), trimmed. Empty for opaque elements.
    #[inline]
    pub fn text(&self) -> &'d str {
        let r = self.rec();
        let s = if r.text_in_input {
            self.doc.input_str(r.text)
        } else {
            self.doc.str(r.text)
        };
        // Usually nothing to trim: then skip `trim`'s decoding from both ends.
        match (s.as_bytes().first(), s.as_bytes().last()) {
            (Some(f), Some(l)) if f.is_ascii_graphic() && l.is_ascii_graphic() => s,
            _ => s.trim(),
        }
    }

    /// Trimmed text of the child `local` in this element's namespace, if that child exists.
    #[inline]
    pub fn child_text(&self, local: &str) -> Option<&'d str> {
        self.child(local).map(|c| c.text())
    }

    /// True when the element's content was not stored (opaque namespace); it did contain well-formed XML.
    #[inline]
    pub fn is_opaque(&self) -> bool {
        self.rec().opaque
    }

    /// True when the element has child elements or non-blank text (opaque elements: when non-empty).
    #[inline]
    pub fn has_content(&self) -> bool {
        let r = self.rec();
        r.first_child != NONE || r.text.len > 0 || (r.opaque && r.text.start == 1)
    }

    /// Byte offset of the start tag in the parsed text.
    #[inline]
    pub fn offset(&self) -> usize {
        self.rec().offset as usize
    }

    /// A stable identity within the document (for sets and maps of nodes).
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// Iterator over the child elements with one local name (see [`Node::children_local`]).
pub struct LocalChildren<'d, 'l> {
    doc: &'d Document<'d>,
    next: u32,
    local: &'l str,
}

impl<'d> Iterator for LocalChildren<'d, '_> {
    type Item = Node<'d>;
    #[inline]
    fn next(&mut self) -> Option<Node<'d>> {
        let doc = self.doc;
        while let Some(r) = doc.store.nodes.get(self.next as usize) {
            let id = self.next;
            self.next = r.next_sibling;
            // Lengths first, as in `name_is`.
            if r.name.len as usize == self.local.len()
                && same_bytes(doc.name_bytes(r), self.local.as_bytes())
            {
                return Some(Node { doc, id });
            }
        }
        None
    }
}

/// Iterator over child elements.
pub struct Children<'d> {
    doc: &'d Document<'d>,
    next: u32,
}

impl<'d> Iterator for Children<'d> {
    type Item = Node<'d>;
    #[inline]
    fn next(&mut self) -> Option<Node<'d>> {
        if self.next == NONE {
            return None;
        }
        let n = Node {
            doc: self.doc,
            id: self.next,
        };
        self.next = self.doc.store.nodes[self.next as usize].next_sibling;
        Some(n)
    }
}

/// The text of an open element so far (see `Builder::pending`).
#[derive(Debug, Clone, Copy)]
enum Pending<'t> {
    /// None yet.
    Empty,
    /// One piece of the input, not yet copied.
    Input(&'t str),
    /// Several pieces, joined in `Builder::bufs` at the element's depth.
    Joined,
}

/// Attribute spans of one tag; the first few inline (a tag with a namespace declaration rarely has
/// more), so no allocation per document.
#[derive(Debug, Default)]
struct TagAttrs {
    inline: [[u32; 4]; 8],
    len: usize,
    more: Vec<[u32; 4]>,
}

impl TagAttrs {
    fn clear(&mut self) {
        self.len = 0;
        self.more.clear();
    }

    fn push(&mut self, span: [u32; 4]) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = span,
            None => self.more.push(span),
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> [u32; 4] {
        match self.inline.get(i) {
            Some(&span) => span,
            None => self
                .more
                .get(i - self.inline.len())
                .copied()
                .unwrap_or_default(),
        }
    }
}

/// A stored element whose end tag is still to come.
#[derive(Debug, Clone, Copy)]
struct Open<'t> {
    node: u32,
    /// How many namespace bindings its start tag pushed.
    bindings: u32,
    /// Its text, gathered until its end tag so that it lands in the arena in one piece (text split by
    /// child elements used to be re-copied at every child: quadratic).
    text: Pending<'t>,
}

struct Builder<'t, 'a> {
    text: &'t str,
    limits: &'a Limits,
    opaque_ns: &'a [&'a str],
    /// Bit `i`: is namespace id `i` one of `opaque_ns`? Decided once per namespace rather than per
    /// element; ids from 64 on (never in MedCom messages) are compared per element.
    opaque_ids: u64,
    doc: Document<'t>,
    /// Stored open elements, innermost last.
    stack: Vec<Open<'t>>,
    /// Join buffers by stack depth, reused across elements.
    bufs: Vec<String>,
    /// Depth inside an opaque element (0 = not inside one).
    opaque_depth: usize,
    /// Namespace bindings in scope: (prefix span in `prefixes`, namespace id); "" is the default.
    bindings: Vec<(Span, u16)>,
    /// Prefix text of the bindings, as a stack (no allocation per declaration).
    prefixes: String,
    root_closed: bool,
    /// Attribute spans of the current tag, when [`Builder::declare`] read them (reused, no allocation
    /// per tag).
    tag_attrs: TagAttrs,
    /// The default namespace in scope, once resolved; cleared whenever the bindings change.
    default_ns: Option<u16>,
    /// Does the input hold a `\r` at all? Searched once per document (most have none), so that texts
    /// need not be searched one by one: that was ~1.3% of validating XDIS20 (callgrind). Searched at
    /// the first text: FHIR messages, with few texts, would pay ~0.3% for an early search.
    input_has_cr: Option<bool>,
}

impl<'t, 'a> Builder<'t, 'a> {
    fn new(text: &'t str, limits: &'a Limits, opaque_ns: &'a [&'a str]) -> Self {
        let SpareDoc {
            mut arena,
            mut nodes,
            mut attrs,
            mut namespaces,
        } = SPARE_DOC.with(Cell::take);
        let BuildBufs {
            bufs,
            mut bindings,
            mut prefixes,
        } = SPARE_BUILD.with(Cell::take);
        // Sized from the examples (callgrind): growing these was ~5% of validation. What is stored is
        // at most as long as in the input, so the arena rarely grows.
        arena.clear();
        arena.reserve(text.len());
        nodes.clear();
        nodes.reserve(text.len() / 24);
        attrs.clear();
        attrs.reserve(text.len() / 32);
        namespaces.clear();
        namespaces.reserve(4);
        namespaces.push(Span::default());
        // Small capacities up front: growing these was ~3% of a small letter (callgrind).
        bindings.clear();
        bindings.reserve(8);
        // Prefixes: allocated at the first prefixed declaration (most messages only declare defaults).
        prefixes.clear();
        Builder {
            text,
            limits,
            opaque_ns,
            opaque_ids: u64::from(opaque_ns.contains(&"")),
            doc: Document {
                input: text,
                store: DocBufs {
                    arena,
                    nodes,
                    attrs,
                    namespaces,
                },
            },
            stack: Vec::with_capacity(32),
            // Join buffers keep their capacity from the last document; they are cleared before use.
            bufs,
            opaque_depth: 0,
            bindings,
            prefixes,
            root_closed: false,
            tag_attrs: TagAttrs::default(),
            default_ns: None,
            input_has_cr: None,
        }
    }

    fn intern_ns(&mut self, uri: &str, offset: usize) -> Result<u16, XmlError> {
        let doc = &self.doc;
        if let Some(i) = doc
            .store
            .namespaces
            .iter()
            .position(|&n| doc.bytes(n) == uri.as_bytes())
        {
            return Ok(i as u16);
        }
        if self.doc.store.namespaces.len() >= usize::from(u16::MAX) {
            return Err(XmlError::Malformed {
                offset,
                reason: "too many distinct namespaces",
            });
        }
        let span = self.push_str(uri);
        self.doc.store.namespaces.push(span);
        let id = self.doc.store.namespaces.len() - 1;
        if id < 64 && self.opaque_ns.contains(&uri) {
            self.opaque_ids |= 1 << id;
        }
        Ok((self.doc.store.namespaces.len() - 1) as u16)
    }

    /// Push the `xmlns` declarations of a start tag; returns how many. quick-xml's NsReader re-parses
    /// every start tag's attributes to find declarations; MedCom messages declare namespaces on a
    /// handful of elements, so looking only when the raw tag mentions `xmlns` saves a pass per element.
    ///
    /// The tag's attributes are scanned once here and kept in `tag_attrs` for [`Self::start`] (at most
    /// one more than the limit: `start` refuses the tag at that one).
    fn declare(&mut self, attrs: &str, offset: usize) -> Result<u32, XmlError> {
        self.tag_attrs.clear();
        let mut scan = AttrScan::new(attrs);
        let mut pushed = 0;
        while let Some(span) = scan.next_span() {
            let span = span.map_err(|BadAttr| bad_attribute(offset))?;
            if self.tag_attrs.len() <= self.limits.max_attributes {
                self.tag_attrs.push(span);
            }
            let [ks, ke, vs, ve] = span.map(|i| i as usize);
            let (Some(key), Some(raw)) = (attrs.get(ks..ke), attrs.get(vs..ve)) else {
                return Err(bad_attribute(offset));
            };
            let prefix = match key.strip_prefix("xmlns") {
                Some("") => "",
                Some(p) if p.starts_with(':') => &p[1..],
                _ => continue,
            };
            let uri = if needs_normalising(raw) {
                normalise_value(key, raw).map_err(|_| XmlError::Malformed {
                    offset,
                    reason: "invalid namespace declaration",
                })?
            } else {
                Cow::Borrowed(raw)
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
            self.default_ns = None;
            pushed += 1;
        }
        Ok(pushed)
    }

    /// Namespace of a prefix ("" = default) in scope; `xml` is predeclared.
    fn resolve_prefix(&mut self, prefix: &str, offset: usize) -> Result<u16, XmlError> {
        if prefix.is_empty() {
            if let Some(id) = self.default_ns {
                return Ok(id);
            }
            let id = self.lookup_prefix(prefix, offset)?;
            self.default_ns = Some(id);
            return Ok(id);
        }
        self.lookup_prefix(prefix, offset)
    }

    fn lookup_prefix(&mut self, prefix: &str, offset: usize) -> Result<u16, XmlError> {
        let prefixes = self.prefixes.as_bytes();
        let bound = |sp: &Span| {
            sp.len as usize == prefix.len()
                && prefixes.get(sp.start as usize..(sp.start + sp.len) as usize)
                    == Some(prefix.as_bytes())
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
        if n == 0 {
            return;
        }
        self.default_ns = None;
        let keep = self.bindings.len().saturating_sub(n as usize);
        if let Some((first_removed, _)) = self.bindings.get(keep) {
            self.prefixes.truncate(first_removed.start as usize);
        }
        self.bindings.truncate(keep);
    }

    fn push_str(&mut self, s: &str) -> Span {
        let start = self.doc.store.arena.len() as u32;
        self.doc.store.arena.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    /// Note that an opaque element has content, without storing it (start=1 is the marker, len stays 0).
    fn mark_opaque_content(&mut self) {
        if let Some(top) = self.stack.last() {
            self.doc.store.nodes[top.node as usize].text = Span { start: 1, len: 0 };
        }
    }

    /// Which open element (index into `pending`) text `s` belongs to; `None` when it is dropped
    /// (blank before any text, or inside opaque content).
    fn text_target(&mut self, s: &str, offset: usize) -> Result<Option<usize>, XmlError> {
        if self.stack.is_empty() {
            if !is_blank(s) {
                return Err(XmlError::ContentAfterRoot { offset });
            }
            return Ok(None);
        }
        if self.opaque_depth > 0 {
            if !is_blank(s) {
                self.mark_opaque_content();
            }
            return Ok(None);
        }
        let d = self.stack.len() - 1;
        if matches!(self.stack.get(d), Some(o) if matches!(o.text, Pending::Empty)) && is_blank(s) {
            return Ok(None);
        }
        Ok(Some(d))
    }

    /// Add text to the innermost stored element (copied: it is not a piece of the input).
    fn push_text(&mut self, s: &str, offset: usize) -> Result<(), XmlError> {
        if let Some(d) = self.text_target(s, offset)? {
            self.join_text(d, s);
        }
        Ok(())
    }

    /// Add a piece of the input as text of the innermost stored element; an element's only piece
    /// (the usual case) is copied once, at its end tag.
    /// Inlined into the event loop, its one hot caller (callgrind: -0.2 to -0.3% instructions per letter).
    #[inline(always)]
    fn push_input_text(&mut self, s: &'t str, offset: usize) -> Result<(), XmlError> {
        let Some(d) = self.text_target(s, offset)? else {
            return Ok(());
        };
        // A piece of the input holds a `\r` only if the input does; the predefined entities' texts
        // hold none.
        let input_has_cr = match self.input_has_cr {
            Some(cr) => cr,
            None => {
                let cr = memchr::memchr(b'\r', self.text.as_bytes()).is_some();
                self.input_has_cr = Some(cr);
                cr
            }
        };
        match self.stack.get_mut(d) {
            Some(Open {
                text: p @ Pending::Empty,
                ..
            }) if !(input_has_cr && has_cr(s)) => {
                *p = Pending::Input(s);
            }
            _ => self.join_text(d, s),
        }
        Ok(())
    }

    fn join_text(&mut self, d: usize, s: &str) {
        if self.bufs.len() <= d {
            self.bufs.resize_with(d + 1, String::new);
        }
        let (Some(Open { text: p, .. }), Some(buf)) = (self.stack.get_mut(d), self.bufs.get_mut(d))
        else {
            return;
        };
        match *p {
            Pending::Empty => buf.clear(),
            Pending::Input(first) => {
                buf.clear();
                buf.push_str(first);
            }
            Pending::Joined => {}
        }
        *p = Pending::Joined;
        push_normalised_eols(buf, s);
    }

    /// Copy the gathered text of the element closing at `pending[d]` into the arena.
    fn store_text(&mut self, node: u32, d: usize, p: Pending<'t>) {
        let mut in_input = false;
        let span = match p {
            Pending::Empty => return,
            Pending::Input(s) => match self.input_span(s) {
                Some(span) => {
                    in_input = true;
                    span
                }
                None => self.push_str(s),
            },
            Pending::Joined => {
                let Some(buf) = self.bufs.get_mut(d) else {
                    return;
                };
                let buf = std::mem::take(buf);
                let span = self.push_str(&buf);
                self.bufs[d] = buf;
                span
            }
        };
        if let Some(n) = self.doc.store.nodes.get_mut(node as usize) {
            n.text = span;
            n.text_in_input = in_input;
        }
    }

    /// Where `s` lies in the input, when it is a piece of it (a predefined entity's replacement text is
    /// not: that is a static string, copied to the arena). Memory inside the input's range is the input.
    #[inline]
    fn input_span(&self, s: &str) -> Option<Span> {
        let start = (s.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let end = start.checked_add(s.len())?;
        // A `&str` lying in the input's memory is a piece of it, so its ends are char boundaries:
        // the range is all there is to check.
        if end > self.text.len() {
            return None;
        }
        Some(Span {
            start: start as u32,
            len: s.len() as u32,
        })
    }

    /// Store a start tag. `listed`: its attributes were already scanned into `tag_attrs` by
    /// [`Self::declare`].
    fn start(
        &mut self,
        ns: u16,
        local: &str,
        e: &BytesStart<'_>,
        offset: usize,
        empty: bool,
        listed: bool,
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
        if storing && self.doc.store.nodes.len() >= self.limits.max_elements {
            return Err(XmlError::TooManyElements {
                limit: self.limits.max_elements,
                offset,
            });
        }
        // One pass over the attributes: well-formedness (quotes, duplicates), the limit, entity
        // references (checked even in opaque content, so an undefined entity is always refused), and —
        // for stored elements — the values, normalised only when they contain a reference or a
        // whitespace character the XML rules rewrite.
        let attrs_start = self.doc.store.attrs.len() as u32;
        let mut n_attrs = 0usize;
        let attrs = e.attributes_raw();
        if listed {
            for i in 0..self.tag_attrs.len() {
                let span = self.tag_attrs.get(i);
                self.attribute(attrs, span, storing, offset, &mut n_attrs)?;
            }
        } else if !attrs.is_empty() {
            // Most tags have no attributes: then no scanner is set up.
            let mut scan = AttrScan::new(attrs);
            while let Some(span) = scan.next_span() {
                let span = span.map_err(|BadAttr| bad_attribute(offset))?;
                self.attribute(attrs, span, storing, offset, &mut n_attrs)?;
            }
        }
        if !storing {
            if !empty {
                self.opaque_depth += 1;
            }
            self.mark_opaque_content();
            return Ok(());
        }
        self.element(ns, local, offset, empty, attrs_start)
    }

    /// One attribute of a start tag: the limit, its value (normalised only when it contains a reference
    /// or a white-space character the XML rules rewrite; entity references are checked even in opaque
    /// content, so an undefined entity is always refused), its name, and — for stored elements — the
    /// record.
    #[inline]
    fn attribute(
        &mut self,
        attrs: &str,
        span: [u32; 4],
        storing: bool,
        offset: usize,
        n_attrs: &mut usize,
    ) -> Result<(), XmlError> {
        let [ks, ke, vs, ve] = span.map(|i| i as usize);
        let (Some(key), Some(raw)) = (attrs.get(ks..ke), attrs.get(vs..ve)) else {
            return Err(bad_attribute(offset));
        };
        *n_attrs += 1;
        if *n_attrs > self.limits.max_attributes {
            return Err(XmlError::TooManyAttributes {
                limit: self.limits.max_attributes,
                offset,
            });
        }
        let normalised = if needs_normalising(raw) {
            Some(normalise_value(key, raw).map_err(|err| match err {
                quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(
                    ..,
                )) => XmlError::EntityUndefined { offset },
                other => XmlError::Malformed {
                    offset,
                    reason: reason_of(&other),
                },
            })?)
        } else {
            None
        };
        let Some((prefix, local)) = split_qname(key) else {
            return Err(XmlError::Malformed {
                offset,
                reason: "attribute name is not a valid XML name",
            });
        };
        if !storing || prefix == "xmlns" || (prefix.is_empty() && local == "xmlns") {
            return Ok(());
        }
        let ans = if prefix.is_empty() {
            0
        } else {
            self.resolve_prefix(prefix, offset)?
        };
        let name = self.push_str(local);
        let value = self.push_str(normalised.as_deref().unwrap_or(raw));
        self.doc.store.attrs.push(AttrRec {
            ns: ans,
            name,
            value,
        });
        Ok(())
    }

    /// Add an element outside opaque content (its attributes are already recorded).
    fn element(
        &mut self,
        ns: u16,
        local: &str,
        offset: usize,
        empty: bool,
        attrs_start: u32,
    ) -> Result<(), XmlError> {
        let opaque = if ns < 64 {
            self.opaque_ids & (1 << ns) != 0
        } else {
            self.opaque_ns.contains(&self.doc.namespace(ns))
        };
        // Names point into the input, like texts: copying each to the arena was ~1.5% of
        // validating a letter (callgrind).
        let (name, name_in_input) = match self.input_span(local) {
            Some(span) => (span, true),
            None => (self.push_str(local), false),
        };
        let id = self.doc.store.nodes.len() as u32;
        let parent = self.stack.last().map_or(NONE, |o| o.node);
        self.doc.store.nodes.push(NodeRec {
            ns,
            name,
            name_in_input,
            parent,
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
            attrs_start,
            attrs_len: self.doc.store.attrs.len() as u32 - attrs_start,
            text: Span::default(),
            text_in_input: false,
            offset: offset as u32,
            opaque,
        });
        if parent != NONE {
            let p = &mut self.doc.store.nodes[parent as usize];
            if p.last_child == NONE {
                p.first_child = id;
            } else {
                let last = p.last_child as usize;
                self.doc.store.nodes[last].next_sibling = id;
            }
            self.doc.store.nodes[parent as usize].last_child = id;
        }
        if empty {
            if self.stack.is_empty() {
                self.root_closed = true;
            }
        } else {
            self.stack.push(Open {
                node: id,
                bindings: 0,
                text: Pending::Empty,
            });
            if opaque {
                self.opaque_depth = 1;
            }
        }
        Ok(())
    }

    /// A start tag: resolve its namespace (outside opaque content) and store it.
    fn open(&mut self, e: &BytesStart<'_>, offset: usize, empty: bool) -> Result<(), XmlError> {
        let qname = e.name();
        let Some((prefix, local)) = split_qname(qname.as_ref()) else {
            return Err(XmlError::Malformed {
                offset,
                reason: "element name is not a valid XML name",
            });
        };
        if self.opaque_depth > 0 {
            return self.start(0, local, e, offset, empty, false);
        }
        // Namespace declarations first: they apply to the tag's own names.
        let listed = mentions_xmlns(e.attributes_raw());
        let pushed = if listed {
            self.declare(e.attributes_raw(), offset)?
        } else {
            0
        };
        let ns = self.resolve_prefix(prefix, offset)?;
        self.start(ns, local, e, offset, empty, listed)?;
        if empty {
            self.pop_bindings(pushed);
        } else {
            if let Some(top) = self.stack.last_mut() {
                top.bindings = pushed;
            }
        }
        Ok(())
    }

    fn end(&mut self) {
        if self.opaque_depth > 1 {
            self.opaque_depth -= 1;
            return;
        }
        self.opaque_depth = 0;
        if let Some(top) = self.stack.pop() {
            self.store_text(top.node, self.stack.len(), top.text);
            self.pop_bindings(top.bindings);
        }
        if self.stack.is_empty() {
            self.root_closed = true;
        }
    }

    fn run(mut self) -> Result<Document<'t>, XmlError> {
        let mut reader = Reader::from_str(self.text);
        let config = reader.config_mut();
        config.enable_all_checks(true);
        loop {
            let offset = reader.buffer_position() as usize;
            // One match on the result: binding the event first copied it, ~20 instructions an event
            // (callgrind).
            match reader.read_event() {
                Err(err) => {
                    let at = reader.error_position() as usize;
                    return Err(XmlError::Malformed {
                        offset: at,
                        reason: reason_of(&err),
                    });
                }
                Ok(Event::DocType(_)) => return Err(XmlError::DoctypeForbidden { offset }),
                Ok(Event::Start(e)) => self.open(&e, offset, false)?,
                Ok(Event::Empty(e)) => self.open(&e, offset, true)?,
                Ok(Event::End(_)) => self.end(),
                Ok(Event::Text(t)) if self.opaque_depth > 0 => {
                    if !is_blank(t.as_ref()) {
                        self.mark_opaque_content();
                    }
                }
                // Indentation between elements: skipped before any normalisation work.
                Ok(Event::Text(t)) if is_ascii_blank(t.as_ref().as_bytes()) => {}
                Ok(Event::Text(t)) => match t.into_inner() {
                    Cow::Borrowed(s) => self.push_input_text(s, offset)?,
                    Cow::Owned(s) => self.push_text(&s, offset)?,
                },
                Ok(Event::CData(c)) => self.push_text(&c.xml10_content(), offset)?,
                Ok(Event::GeneralRef(r)) => {
                    let ch = match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        Ok(None) => match quick_xml::escape::resolve_predefined_entity(&r) {
                            Some(s) => {
                                self.push_input_text(s, offset)?;
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
                Ok(Event::Comment(_) | Event::Decl(_) | Event::PI(_)) => {}
                Ok(Event::Eof) => break,
            }
        }
        if self.doc.store.nodes.is_empty() {
            return Err(XmlError::Empty);
        }
        if !self.stack.is_empty() {
            return Err(XmlError::Malformed {
                offset: self.text.len(),
                reason: "element is not closed",
            });
        }
        Ok(std::mem::take(&mut self.doc))
    }
}

/// Buffers a finished parse leaves for the next one on the same thread. Allocating them afresh for
/// every message (glibc's slow path: the arena and node vector are over a kilobyte) was ~2% of
/// validating a small letter (callgrind). Buffers above [`SPARE_MAX_BYTES`] are freed instead, so a
/// thread never holds on to more than that after a large message.
#[derive(Debug, Clone, Default)]
struct DocBufs {
    arena: String,
    nodes: Vec<NodeRec>,
    attrs: Vec<AttrRec>,
    /// Namespace URIs, in the arena (id 0 = "no namespace" is the empty span).
    namespaces: Vec<Span>,
}

/// The builder's own reusable buffers (see [`DocBufs`]).
#[derive(Default)]
struct BuildBufs {
    bufs: Vec<String>,
    bindings: Vec<(Span, u16)>,
    prefixes: String,
}

/// What [`SPARE_DOC`] holds: the buffers of a [`DocBufs`], in a type without `Drop`, so replacing the
/// spare frees the old one instead of handing it on again (which would recurse).
#[derive(Default)]
struct SpareDoc {
    arena: String,
    nodes: Vec<NodeRec>,
    attrs: Vec<AttrRec>,
    namespaces: Vec<Span>,
}

const SPARE_MAX_BYTES: usize = 1 << 20;

thread_local! {
    static SPARE_DOC: Cell<SpareDoc> = Cell::new(SpareDoc::default());
    static SPARE_BUILD: Cell<BuildBufs> = Cell::new(BuildBufs::default());
}

impl Drop for DocBufs {
    fn drop(&mut self) {
        let bytes = self.arena.capacity()
            + self.nodes.capacity() * std::mem::size_of::<NodeRec>()
            + self.attrs.capacity() * std::mem::size_of::<AttrRec>()
            + self.namespaces.capacity() * std::mem::size_of::<Span>();
        // Nothing to keep (taken from, or never allocated), or too much.
        if self.nodes.capacity() == 0 || bytes > SPARE_MAX_BYTES {
            return;
        }
        let spare = SpareDoc {
            arena: std::mem::take(&mut self.arena),
            nodes: std::mem::take(&mut self.nodes),
            attrs: std::mem::take(&mut self.attrs),
            namespaces: std::mem::take(&mut self.namespaces),
        };
        // `try_with`: during thread teardown the slot may be gone; then the buffers are just freed.
        let _ = SPARE_DOC.try_with(|s| s.set(spare));
    }
}

impl Drop for Builder<'_, '_> {
    fn drop(&mut self) {
        let bytes = self.bufs.iter().map(String::capacity).sum::<usize>()
            + self.bufs.capacity() * std::mem::size_of::<String>()
            + self.bindings.capacity() * std::mem::size_of::<(Span, u16)>()
            + self.prefixes.capacity();
        if bytes > SPARE_MAX_BYTES {
            return;
        }
        let spare = BuildBufs {
            bufs: std::mem::take(&mut self.bufs),
            bindings: std::mem::take(&mut self.bindings),
            prefixes: std::mem::take(&mut self.prefixes),
        };
        let _ = SPARE_BUILD.try_with(|s| s.set(spare));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    fn parse(s: &str) -> Result<Document<'_>, XmlError> {
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
        assert!(!d.store.arena.contains("secret"));
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

    fn quick_xml_view(raw: &str) -> Scanned {
        scan_quick_xml(&BytesStart::from_content(format!("t{raw}"), 1))
    }

    #[test]
    fn attribute_scan_agrees_with_quick_xml() {
        for raw in [
            "",
            " ",
            r#" a="1""#,
            r#" a = '1'  b="x'y" "#,
            r#" a="1"b="2""#,
            r#" a="1" a="2""#,
            r#" a="1" b="2" a="3""#,
            " a",
            " a ",
            " a=",
            " a=1",
            r#" a="1"#,
            r#" ="1""#,
            r#" =a="1""#,
            r#" a b="1""#,
            r#" p:a="1" q:a="2""#,
            " a=\"<&\" é=\"ø\"",
        ] {
            assert_eq!(scan_ours(raw), quick_xml_view(raw), "{raw:?}");
        }
        // Many attributes (hash set path), with and without a late duplicate.
        let many: String = (0..40).map(|i| format!(" a{i}=\"{i}\"")).collect();
        assert_eq!(scan_ours(&many), quick_xml_view(&many));
        assert_eq!(scan_ours(&many).0.len(), 40);
        let dup = format!("{many} a7=\"x\"");
        assert_eq!(scan_ours(&dup), quick_xml_view(&dup));
        assert!(scan_ours(&dup).1);
        assert_eq!(
            attribute_scan_mismatch(r#"<r a="1"><s b='2' c="3"/></r>"#),
            None
        );
    }

    #[test]
    fn blank_test_sees_every_byte_at_every_position() {
        for fill in [b' ', b'\n', b'\t', b'\r', 0x0C] {
            for len in 0..20 {
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let mut b = vec![fill; len];
                        b[at] = byte;
                        assert_eq!(is_ascii_blank(&b), byte.is_ascii_whitespace(), "{b:?}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn word_searches_agree_with_byte_loops(bytes in proptest::collection::vec(
            proptest::sample::select(vec![b'a', b':', b'x', b'&', b'\t', b'\r', 0u8, 0x0D, 0x0E, 0x7F, 0x80, 0xFF]),
            0..40,
        )) {
            proptest::prop_assert_eq!(find_colon(&bytes), bytes.iter().position(|&c| c == b':'));
            for cut in 0..bytes.len() {
                let (a, b) = bytes.split_at(cut);
                proptest::prop_assert_eq!(same_bytes(a, &b[..cut.min(b.len())]), a == &b[..cut.min(b.len())]);
            }
            let mut flipped = bytes.clone();
            if let Some(last) = flipped.last_mut() {
                *last ^= 1;
            }
            proptest::prop_assert_eq!(same_bytes(&bytes, &flipped), bytes == flipped);
            proptest::prop_assert!(same_bytes(&bytes, &bytes.clone()));
            let text = String::from_utf8_lossy(&bytes);
            proptest::prop_assert_eq!(
                needs_normalising(&text),
                text.bytes().any(|c| c == b'&' || c < 0x0E)
            );
            proptest::prop_assert_eq!(has_cr(&text), text.contains('\r'));
            let long = text.repeat(4);
            proptest::prop_assert_eq!(has_cr(&long), long.contains('\r'));
            let xmlns = format!("{text}xmlns{text}");
            proptest::prop_assert!(mentions_xmlns(&xmlns));
            proptest::prop_assert_eq!(mentions_xmlns(&text), text.contains("xmlns"));
        }

        #[test]
        fn blank_test_agrees_with_byte_loop(bytes in proptest::collection::vec(
            // White space mostly, so that long blank runs occur; and the bytes next to it.
            proptest::sample::select(vec![b' ', b' ', b' ', b'\n', b'\t', b'\r', 0x0C, 0x0B, 0x1F, 0x21, 0xA0, 0x00, 0x80, b'a']),
            0..40,
        )) {
            let reference = |b: &[u8]| b.iter().all(u8::is_ascii_whitespace);
            proptest::prop_assert_eq!(is_ascii_blank(&bytes), reference(&bytes));
            // Blank prefixes of every length, so each word and tail position sees the odd byte.
            for cut in 0..bytes.len() {
                proptest::prop_assert_eq!(is_ascii_blank(&bytes[..cut]), reference(&bytes[..cut]));
            }
        }

        #[test]
        fn attribute_scan_agrees_on_any_tag(chars in proptest::collection::vec(
            proptest::sample::select(vec![' ', '\t', '\n', '=', '"', '\'', 'a', 'b', ':', '&', '<', 'é']),
            0..48,
        )) {
            let raw: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(scan_ours(&raw), quick_xml_view(&raw));
        }
    }

    #[test]
    fn buffers_are_handed_on_across_nested_documents() {
        // An envelope's document lives while its payload's is parsed and dropped: handing the
        // buffers on must neither recurse nor mix the two.
        let outer = parse("<a><b>1</b></a>").unwrap();
        for _ in 0..3 {
            let inner = parse("<c><d>2</d></c>").unwrap();
            assert_eq!(inner.root().child_text("d"), Some("2"));
            let copy = inner.clone();
            drop(inner);
            assert_eq!(copy.root().child_text("d"), Some("2"));
        }
        assert_eq!(outer.root().child_text("b"), Some("1"));
        drop(outer);
        let again = parse("<e>3</e>").unwrap();
        assert_eq!(again.root().text(), "3");
    }

    #[test]
    fn text_around_many_children_is_stored_once() {
        // Each piece used to re-copy the text before it: the arena grew quadratically.
        let text = format!("<a>{}</a>", "xy<b c=\"1\"/>".repeat(2000));
        let d = parse(&text).unwrap();
        assert_eq!(d.root().text(), "xy".repeat(2000));
        assert!(
            d.store.arena.len() < text.len(),
            "arena {} bytes",
            d.store.arena.len()
        );
        let d = parse("<a>x\r\ny<b/>z &amp; v<![CDATA[w]]><c>k</c>\r</a>").unwrap();
        assert_eq!(d.root().text(), "x\nyz & vw");
        assert_eq!(d.root().child_text("c"), Some("k"));
    }

    #[test]
    fn texts_borrowed_from_the_input_or_copied() {
        // One piece of the input (borrowed), a lone entity (static replacement text, copied), CDATA,
        // a text with \r, pieces around a child: each must read back as the XML rules say.
        let d = parse(
            "<r><a> one </a><b>&amp;</b><c><![CDATA[<x>]]></c><d>x\ry</d><e>p<f>q</f>s</e></r>",
        )
        .expect("parses");
        let texts: Vec<&str> = d.root().children().map(|n| n.text()).collect();
        assert_eq!(texts, ["one", "&", "<x>", "x\ny", "ps"]);
        let f = d.root().children().last().and_then(|e| e.children().next());
        assert_eq!(f.map(|f| f.text()), Some("q"));
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
