//! Navigation that tolerates the namespace mix of real letters.
//!
//! Real senders put the Envelope in one OIOXML namespace and the letter in another, or switch namespace
//! half-way down a Sender block (oioxml-regionh/XDIS21). A child therefore matches when its local name is
//! right and its namespace is *any* known OIOXML namespace; prefixes are never looked at.

use crate::tables::Tables;
use sammen_xml::Node;

/// First child `local` in a known OIOXML namespace.
pub fn kid<'d>(t: &Tables, n: Node<'d>, local: &str) -> Option<Node<'d>> {
    n.children_local(local)
        .find(|c| c.same_namespace(&n) || t.is_oioxml_ns(c.namespace()))
}

/// Follow a dot-separated path of local names.
pub fn path<'d>(t: &Tables, n: Node<'d>, p: &str) -> Option<Node<'d>> {
    p.split('.').try_fold(n, |n, step| kid(t, n, step))
}

/// Trimmed text of child `local`, when the child exists and is not blank.
pub fn text<'d>(t: &Tables, n: Node<'d>, local: &str) -> Option<&'d str> {
    kid(t, n, local).map(|c| c.text()).filter(|s| !s.is_empty())
}
