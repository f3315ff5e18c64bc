//! FHIRPath-like locations (`Bundle.entry[2].resource.Encounter.status`), built only when an issue is
//! reported: walking up from the node costs nothing on the valid path.

use sammen_xml::Node;

/// Location of `node` relative to the Bundle element `root`. A repeated element gets its index
/// (`entry[2]`, `identifier[1]`); `entry` always does.
pub fn of(node: Node<'_>, root: Node<'_>) -> String {
    let mut segs: Vec<(&str, Option<usize>)> = Vec::new();
    let mut cur = Some(node);
    while let Some(n) = cur {
        if n.id() == root.id() {
            break;
        }
        let name = n.name();
        let idx = n.parent().and_then(|p| {
            let same = p
                .children()
                .filter(|c| c.name() == name && c.namespace() == n.namespace());
            let mut pos = None;
            let mut count = 0usize;
            for (i, c) in same.enumerate() {
                if c.id() == n.id() {
                    pos = Some(i);
                }
                count += 1;
            }
            (count > 1 || name == "entry").then_some(pos).flatten()
        });
        segs.push((name, idx));
        cur = n.parent();
    }
    let mut out = String::from("Bundle");
    for (name, idx) in segs.iter().rev() {
        out.push('.');
        out.push_str(name);
        if let Some(i) = idx {
            out.push('[');
            out.push_str(&i.to_string());
            out.push(']');
        }
    }
    out
}

/// `of(node)` followed by `.child` (for an element that is missing).
pub fn child(node: Node<'_>, root: Node<'_>, child: &str) -> String {
    let mut s = of(node, root);
    s.push('.');
    s.push_str(child);
    s
}
