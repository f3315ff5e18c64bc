//! Where validation time goes, phase by phase, for one file: `cargo run --release -p sammen-adapters --example phases FILE`.
use sammen_adapters::sammen_xml::{decode, ns, Document, Limits};
use sammen_adapters::{validate, Options};
use std::time::Instant;

fn time<R>(label: &str, n: u32, mut f: impl FnMut() -> R) -> f64 {
    for _ in 0..n / 10 {
        std::hint::black_box(f());
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<28} {us:>9.2} µs");
    us
}

fn bare(text: &str) -> usize {
    let mut r = quick_xml::Reader::from_str(text);
    let mut k = 0usize;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e)) => {
                k += e.attributes().filter(Result::is_ok).count() + 1
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => break,
            Ok(_) => k += 1,
        }
    }
    k
}

fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    // `phases FILE bare|validate N`: run one side only (for instruction counts under callgrind).
    if let (Some(mode), Some(n)) = (std::env::args().nth(2), std::env::args().nth(3)) {
        let bytes = std::fs::read(&path).expect("read");
        let text = decode(&bytes, true).expect("decode").text.into_owned();
        let n: u32 = n.parse().expect("N");
        for _ in 0..n {
            if mode == "bare" {
                std::hint::black_box(bare(&text));
            } else {
                std::hint::black_box(validate(&bytes, &Options::default()));
            }
        }
        return;
    }
    let bytes = std::fs::read(&path).expect("read");
    let text = decode(&bytes, true).expect("decode").text.into_owned();
    let n = 20_000;
    let bare = time("bare quick-xml read", n, || bare(&text));
    time("decode", n, || decode(&bytes, true).map(|d| d.text.len()));
    time("decode + tree", n, || {
        Document::parse(&text, &Limits::default(), &[ns::XHTML]).map(|d| d.len())
    });
    let full = time("validate (all)", n, || {
        validate(&bytes, &Options::default())
    });
    println!("ratio bare/validate: {:.2}", bare / full);
}
