//! Parse + validate per family, next to a bare quick-xml read of the same bytes in the same run.
//!
//! Run: `cargo bench -p sammen-adapters --bench validate`. After criterion's own output, a table gives
//! MB/s and messages/s per family and the ratio validate / bare read (goal ≥ 0.6).
//!
//! Criterion measures the bare read and the validation one after the other, so a drift of the machine's
//! speed between the two (seen here: up to 0.4x on a shared VM) lands in that ratio. The last columns
//! therefore also time both in alternating short rounds ([`interleaved`]) and give the median of the
//! per-round ratios with its range: drift then hits both sides of each round alike.
use criterion::{criterion_group, Criterion, Throughput};
use quick_xml::events::Event;
use quick_xml::Reader;
use sammen_adapters::{validate, Options};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// (family, example, for envelopes: the inner letter, whose bare read is added to the baseline so both
/// sides parse the same XML)
const CASES: &[(&str, &str, Option<&str>)] = &[
    (
        "HospitalNotification",
        "hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml",
        None,
    ),
    (
        "CareCommunication",
        "carecommunication/Bundle-0d5b3c18-fab6-4d93-9d88-c9c8abf1f18c.xml",
        None,
    ),
    (
        "Acknowledgement",
        "acknowledgement/Bundle-bc9535ef-ed94-4060-a928-7baddec7ee71.xml",
        None,
    ),
    ("XDIS20", "oioxml-regionh/XDIS20_SBDH_Payload.xml", None),
    (
        "XDIS21",
        "oioxml-regionh/XDIS21_SBDH_Payload_VANS.xml",
        None,
    ),
    ("XDIS91", "oioxml/Flow1-XDIS91_Ex_to_FHIR.xml", None),
    (
        "XCTL03",
        "oioxml/Flow2-XCTL03_Ex_from_FHIR_XDIS91.xml",
        None,
    ),
    (
        "VANS+XDIS21",
        "oioxml-regionh/XDIS21_SBDH_Payload.xml",
        Some("oioxml-regionh/XDIS21_SBDH_Payload_VANS.xml"),
    ),
    (
        "SBDH+XDIS20",
        "oioxml-regionh/XDIS20_SBDH.xml",
        Some("oioxml-regionh/XDIS20_SBDH_Payload.xml"),
    ),
];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/examples")
}

/// The baseline: every event read and every attribute iterated, nothing kept (limits.md X1).
fn bare_read(text: &str) -> usize {
    let mut r = Reader::from_str(text);
    let mut n = 0;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                n += e.attributes().filter(Result::is_ok).count() + 1
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => n += 1,
        }
    }
    n
}

/// ISO-8859-1 letters: the bare read gets the same text the validator parses.
fn text_of(b: &[u8]) -> String {
    sammen_adapters::sammen_xml::decode(b, true)
        .map(|d| d.text.into_owned())
        .unwrap_or_default()
}

fn load(rel: &str) -> Vec<u8> {
    std::fs::read(examples().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn bench(c: &mut Criterion) {
    let opts = Options::default();
    for (name, rel, inner) in CASES {
        let bytes = load(rel);
        let text = text_of(&bytes);
        let inner_text = inner.map(|i| text_of(&load(i))).unwrap_or_default();
        let mut g = c.benchmark_group(*name);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("bare-read", |b| {
            b.iter(|| bare_read(black_box(&text)) + bare_read(black_box(&inner_text)))
        });
        g.bench_function("validate", |b| {
            b.iter(|| validate(black_box(&bytes), &opts))
        });
        g.finish();
    }
}

fn mean_ns(group: &str, func: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(func)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    // {"mean":{"confidence_interval":...,"point_estimate":123.4,...
    let i = text.find("\"mean\"")?;
    let j = text[i..].find("\"point_estimate\":")? + i + 17;
    text[j..].split([',', '}']).next()?.trim().parse().ok()
}

/// Rounds of [`interleaved`], and how long each side runs per round.
const ROUNDS: usize = 21;
const SLICE: Duration = Duration::from_millis(40);

/// Mean ns per call of `f`, run repeatedly for about `SLICE`.
fn slice_ns(mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < SLICE {
        for _ in 0..8 {
            f();
        }
        n += 8;
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// Bare read and validation in alternating slices: (median, min, max) of the per-round ratio bare/validate.
fn interleaved(bytes: &[u8], text: &str, inner_text: &str) -> (f64, f64, f64) {
    let opts = Options::default();
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let bare = || {
                black_box(bare_read(black_box(text)) + bare_read(black_box(inner_text)));
            };
            let valid = || {
                black_box(validate(black_box(bytes), &opts));
            };
            // Alternate which side goes first, so neither always gets the warmer cache.
            let (b, v) = if round % 2 == 0 {
                let b = slice_ns(bare);
                (b, slice_ns(valid))
            } else {
                let v = slice_ns(valid);
                (slice_ns(bare), v)
            };
            b / v
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (ratios[ROUNDS / 2], ratios[0], ratios[ROUNDS - 1])
}

fn summary() {
    println!(
        "\n{:<22} {:>8} {:>12} {:>12} {:>12} {:>9} {:>12} {:>14}",
        "family",
        "bytes",
        "bare MB/s",
        "valid. MB/s",
        "valid. msg/s",
        "ratio",
        "interleaved",
        "(min - max)"
    );
    for (name, rel, inner) in CASES {
        let bytes = load(rel);
        let len = bytes.len() as f64;
        let (text, inner_text) = (text_of(&bytes), inner.map(|i| text_of(&load(i))));
        let (med, lo, hi) = interleaved(&bytes, &text, inner_text.as_deref().unwrap_or(""));
        match (mean_ns(name, "bare-read"), mean_ns(name, "validate")) {
            (Some(b), Some(v)) => println!(
                "{name:<22} {len:>8} {:>12.1} {:>12.1} {:>12.0} {:>8.2}x {med:>11.2}x {:>14}",
                len / b * 1e3,
                len / v * 1e3,
                1e9 / v,
                b / v,
                format!("({lo:.2} - {hi:.2})")
            ),
            _ => println!(
                "{name:<22} {len:>8} (no criterion estimate: run without a filter) {med:>11.2}x ({lo:.2} - {hi:.2})"
            ),
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
