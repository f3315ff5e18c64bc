//! Every real MedCom example parses (the conformance suite checks their content).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report
use sammen_xml::{decode, ns, Document, Limits};
use std::path::Path;

fn xml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            xml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "xml") {
            out.push(p);
        }
    }
}

#[test]
fn all_examples_parse_except_the_deliberately_broken_one() {
    // invalid-sbdh.xml is a region's test envelope with a mismatched end tag (`</ns3:Senderfff>`).
    let broken = "invalid-sbdh.xml";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/examples");
    let mut files = Vec::new();
    xml_files(&dir, &mut files);
    assert!(
        files.len() >= 50,
        "expected the conformance examples, found {}",
        files.len()
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let d = decode(&bytes, false).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let doc = Document::parse(&d.text, &Limits::default(), &[ns::XHTML]);
        if f.ends_with(broken) {
            assert_eq!(doc.map(|_| ()).unwrap_err().code(), "xml.malformed");
        } else {
            assert!(doc.is_ok(), "{}: {:?}", f.display(), doc.err());
        }
    }
}
