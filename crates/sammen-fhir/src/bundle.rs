//! One pass over the Bundle's entries: resource types, ids, fullUrls, and the lookup maps references are
//! resolved with. Built once per bundle so reference resolution is a hash lookup, not a scan.

use sammen_xml::Node;
use std::collections::HashMap;

/// One `Bundle.entry`.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'d> {
    /// The `entry` element.
    pub node: Node<'d>,
    /// The resource element inside `entry.resource`, if any.
    pub resource: Option<Node<'d>>,
    /// Resource type (local name), "" when missing.
    pub rtype: &'d str,
    /// `Resource.id`, "" when missing.
    pub id: &'d str,
    /// `entry.fullUrl`, "" when missing.
    pub full_url: &'d str,
}

/// The indexed bundle.
#[derive(Debug)]
pub struct Bundle<'d> {
    /// The `Bundle` element.
    pub root: Node<'d>,
    /// Entries in document order.
    pub entries: Vec<Entry<'d>>,
    /// The MessageHeader used for the message: entry[0]'s, or else the first one found (with an issue).
    pub header: Option<Node<'d>>,
    by_full_url: HashMap<&'d str, usize>,
    by_type_id: HashMap<(&'d str, &'d str), usize>,
}

impl<'d> Bundle<'d> {
    /// Index `root`'s entries.
    pub fn index(root: Node<'d>) -> Bundle<'d> {
        let mut entries = Vec::new();
        let mut by_full_url = HashMap::new();
        let mut by_type_id = HashMap::new();
        for node in root
            .children()
            .filter(|c| c.name() == "entry" && c.namespace() == root.namespace())
        {
            let resource = node.child("resource").and_then(|r| r.children().next());
            let rtype = resource.map_or("", |r| r.name());
            let id = resource.and_then(|r| r.child_value("id")).unwrap_or("");
            let full_url = node.child_value("fullUrl").unwrap_or("");
            let i = entries.len();
            if !full_url.is_empty() {
                by_full_url.entry(full_url).or_insert(i);
            }
            if !rtype.is_empty() && !id.is_empty() {
                by_type_id.entry((rtype, id)).or_insert(i);
            }
            entries.push(Entry {
                node,
                resource,
                rtype,
                id,
                full_url,
            });
        }
        let header = entries
            .iter()
            .find(|e| e.rtype == "MessageHeader")
            .and_then(|e| e.resource);
        Bundle {
            root,
            entries,
            header,
            by_full_url,
            by_type_id,
        }
    }

    /// Resolve a reference string to an entry index: a fullUrl, a relative `Type/id` (optionally with
    /// `/_history/n`), or an absolute URL whose last `Type/id` names a bundled resource.
    pub fn resolve(&self, reference: &str) -> Option<usize> {
        if let Some(&i) = self.by_full_url.get(reference) {
            return Some(i);
        }
        let r = match reference.find("/_history/") {
            Some(p) => reference.get(..p).unwrap_or(reference),
            None => reference,
        };
        let (head, id) = r.rsplit_once('/')?;
        let rtype = head.rsplit_once('/').map_or(head, |(_, t)| t);
        self.by_type_id.get(&(rtype, id)).copied()
    }

    /// Resolve to the resource element, requiring a resource type.
    pub fn resolve_as(&self, reference: &str, rtype: &str) -> Option<Node<'d>> {
        let e = self.entries.get(self.resolve(reference)?)?;
        (e.rtype == rtype).then_some(e.resource).flatten()
    }

    /// Resources of one type.
    pub fn of_type<'s>(&'s self, rtype: &'s str) -> impl Iterator<Item = Node<'d>> + 's {
        self.entries
            .iter()
            .filter(move |e| e.rtype == rtype)
            .filter_map(|e| e.resource)
    }

    /// True when `reference` points at the current message's MessageHeader.
    pub fn is_current_header(&self, reference: &str) -> bool {
        let Some(h) = self.header else { return false };
        self.resolve(reference)
            .and_then(|i| self.entries.get(i))
            .and_then(|e| e.resource)
            .is_some_and(|r| r.id() == h.id())
    }
}

/// `value` of the `reference` child of `n` (a FHIR Reference element).
pub fn reference_of<'d>(n: Node<'d>) -> Option<&'d str> {
    n.child_value("reference")
}
