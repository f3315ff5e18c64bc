//! Fuzz the bounded XML reader directly: decode + tree build must never panic, a tree it returns
//! must be walkable, and its attribute scanner must agree with quick-xml's.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sammen_adapters::sammen_xml::{decode, ns, Document, Limits};

fn walk(n: sammen_adapters::sammen_xml::Node<'_>, depth: usize) -> usize {
    let _ = (n.name(), n.namespace(), n.text(), n.attrs().count(), n.offset());
    1 + n.children().map(|c| walk(c, depth + 1)).sum::<usize>()
}

fuzz_target!(|data: &[u8]| {
    let infer = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(d) = decode(data, infer) {
        // The tree builder's own attribute scanner must accept and refuse exactly what quick-xml does.
        assert_eq!(sammen_adapters::sammen_xml::attribute_scan_mismatch(&d.text), None);
        let limits = Limits { max_depth: 32, ..Limits::default() };
        if let Ok(doc) = Document::parse(&d.text, &limits, &[ns::XHTML]) {
            assert_eq!(walk(doc.root(), 0), doc.len());
        }
    }
});
