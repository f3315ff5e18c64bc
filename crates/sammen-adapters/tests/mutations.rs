//! Property test: mutated real examples never make the validator panic, always yield a report that
//! explains itself, and never leak the example's personal data into issue texts or locations.
use proptest::prelude::*;
use sammen_adapters::{validate, Options};
use std::path::{Path, PathBuf};

fn examples() -> &'static [(PathBuf, Vec<u8>)] {
    static ALL: std::sync::OnceLock<Vec<(PathBuf, Vec<u8>)>> = std::sync::OnceLock::new();
    ALL.get_or_init(load_examples)
}

fn load_examples() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/examples");
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("examples") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "xml") {
                let b = std::fs::read(&p).expect("read");
                out.push((p, b));
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Truncate { at: usize },
    Delete { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
    Insert { at: usize, what: &'static str },
}

const FRAGMENTS: &[&str] = &[
    "<",
    ">",
    "</x>",
    "<x>",
    "&",
    "&amp;",
    "&lol;",
    "&#0;",
    "\"",
    "'",
    "<!DOCTYPE a [<!ENTITY x 'y'>]>",
    "<![CDATA[",
    "]]>",
    "<?pi x?>",
    "<!--",
    "-->",
    "xmlns=\"urn:x\"",
    "xmlns:a=\"\"",
    "a:",
    "\u{0}",
    "\u{FEFF}",
    "é",
    "\u{10FFFF}",
    "<value value=\"\"/>",
    "<reference value=\"Organization/nope\"/>",
    "PEVtZXNzYWdl",
    "====",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..400).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        (any::<usize>(), prop::sample::select(FRAGMENTS))
            .prop_map(|(at, what)| Mutation::Insert { at, what }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match *m {
        Mutation::Flip { at, byte } => bytes[at % n] = byte,
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::Delete { at, len } => {
            let s = at % n;
            bytes.drain(s..(s + len).min(n));
        }
        Mutation::Duplicate { at, len } => {
            let s = at % n;
            let chunk = bytes[s..(s + len).min(n)].to_vec();
            bytes.splice(s..s, chunk);
        }
        Mutation::Insert { at, what } => {
            let s = at % (n + 1);
            bytes.splice(s..s, what.bytes());
        }
    }
}

/// Digit runs of exactly 10 (CPR-shaped) found in the input.
fn cpr_shaped(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut run = String::new();
    for &b in bytes.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_digit() {
            run.push(b as char);
        } else {
            if run.len() == 10 {
                out.push(std::mem::take(&mut run));
            }
            run.clear();
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_always_get_a_clean_report(
        pick in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let all = examples();
        let (path, original) = &all[pick.index(all.len())];
        let mut bytes = original.clone();
        for m in &muts {
            apply(&mut bytes, m);
        }
        let report = validate(&bytes, &Options::default());
        for issue in &report.issues {
            prop_assert!(!issue.code.is_empty() && !issue.text.is_empty() && !issue.location.is_empty());
        }
        if !report.is_valid() {
            prop_assert!(report.errors().count() > 0);
        }
        let cprs = cpr_shaped(original);
        for issue in &report.issues {
            for c in &cprs {
                prop_assert!(!issue.text.contains(c.as_str()) && !issue.location.contains(c.as_str()),
                    "issue {} of {} echoes a CPR-shaped value", issue.code, path.display());
            }
        }
    }
}

#[test]
fn every_example_validates_without_panicking() {
    for (path, bytes) in examples() {
        let r = validate(bytes, &Options::default());
        let receipt = r.event.as_deref() == Some(sammen_adapters::RECEIPT_EVENT);
        assert!(
            r.family.is_some() || receipt || !r.is_valid(),
            "{}: valid but no family",
            path.display()
        );
    }
}
