//! `sammen validate` and `sammen conformance`: reports on stdout, never a value from a message.

use sammen_adapters::{conformance as suite, validate as check, Options};
use sammen_model::{Party, Report};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// One JSON line per file, exactly the documented shape.
#[derive(Serialize)]
struct JsonLine<'a> {
    file: String,
    valid: bool,
    family: Option<&'static str>,
    event: Option<&'a str>,
    message_id: Option<&'a str>,
    envelope_id: Option<&'a str>,
    sender: &'a Party,
    receiver: &'a Party,
    issues: &'a [sammen_model::Issue],
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                collect(&p, out)?;
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")) {
                out.push(p);
            }
        }
        Ok(())
    } else {
        // A named file is validated whatever its extension; a missing one is an I/O error.
        std::fs::metadata(path)?;
        out.push(path.to_path_buf());
        Ok(())
    }
}

fn party(p: &Party) -> String {
    match (&p.gln, &p.sor) {
        (Some(g), Some(s)) => format!("gln {g} / sor {s}"),
        (Some(g), None) => format!("gln {g}"),
        (None, Some(s)) => format!("sor {s}"),
        (None, None) => "?".to_owned(),
    }
}

fn text_lines(file: &str, r: &Report) -> String {
    let mut s = format!(
        "{} {file}: {} {} message {} envelope {} from {} to {}\n",
        if r.is_valid() { "VALID  " } else { "INVALID" },
        r.family.map_or("unknown-family", |f| f.as_str()),
        r.event.as_deref().unwrap_or("-"),
        r.message_id.as_deref().unwrap_or("-"),
        r.envelope_id.as_deref().unwrap_or("-"),
        party(&r.sender),
        party(&r.receiver),
    );
    for i in &r.issues {
        s.push_str(&format!(
            "    {:<11} {} at {}: {}\n",
            i.severity.as_str(),
            i.code,
            i.location,
            i.text
        ));
    }
    s
}

pub fn run(paths: &[PathBuf], format: Format, max_bytes: usize) -> ExitCode {
    let mut opts = Options::default();
    opts.limits.max_bytes = max_bytes;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut any_invalid, mut io_error) = (false, false);
    for root in paths {
        let mut files = Vec::new();
        if let Err(e) = collect(root, &mut files) {
            eprintln!("sammen: cannot read {}: {e}", root.display());
            io_error = true;
            continue;
        }
        for f in files {
            // Read at most max_bytes + 1 so a huge file cannot exhaust memory; the validator reports the excess.
            let bytes = match read_bounded(&f, max_bytes) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("sammen: cannot read {}: {e}", f.display());
                    io_error = true;
                    continue;
                }
            };
            let report = check(&bytes, &opts);
            any_invalid |= !report.is_valid();
            let file = f.display().to_string();
            let line = match format {
                Format::Text => text_lines(&file, &report),
                Format::Json => {
                    let j = JsonLine {
                        file,
                        valid: report.is_valid(),
                        family: report.family.map(|f| f.as_str()),
                        event: report.event.as_deref(),
                        message_id: report.message_id.as_deref(),
                        envelope_id: report.envelope_id.as_deref(),
                        sender: &report.sender,
                        receiver: &report.receiver,
                        issues: &report.issues,
                    };
                    match serde_json::to_string(&j) {
                        Ok(s) => s + "\n",
                        Err(e) => {
                            eprintln!("sammen: cannot encode report: {e}");
                            io_error = true;
                            continue;
                        }
                    }
                }
            };
            if out.write_all(line.as_bytes()).is_err() {
                return ExitCode::from(2);
            }
        }
    }
    if io_error {
        ExitCode::from(2)
    } else if any_invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_bounded(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(max as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

pub fn conformance(dir: &Path, quiet: bool) -> ExitCode {
    let outcomes = match suite::run(dir, &Options::default()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sammen: {e}");
            return ExitCode::from(2);
        }
    };
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    for o in &outcomes {
        if o.passed() && quiet {
            continue;
        }
        let expect = if o.case.valid {
            "valid".to_owned()
        } else {
            format!("invalid {}", o.case.expect.join(","))
        };
        println!(
            "{} {} (expected {expect})",
            if o.passed() { "ok  " } else { "FAIL" },
            o.case.file.display()
        );
        for m in &o.mismatches {
            println!("      {m}; reported: {}", o.codes.join(", "));
        }
    }
    let valid = outcomes.iter().filter(|o| o.case.valid).count();
    println!(
        "conformance: {} cases ({valid} valid, {} invalid): {} passed, {failed} failed",
        outcomes.len(),
        outcomes.len() - valid,
        outcomes.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
