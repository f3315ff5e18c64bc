//! The conformance suite runner: manifests of cases with expected outcomes (see `conformance/README.md`).
//!
//! Used by the test `tests/conformance.rs` and by `sammen conformance`, so a person and CI run the
//! same check.

use crate::{validate, Options};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One case of a manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// File, relative to the suite directory.
    pub file: PathBuf,
    /// Expected validity.
    pub valid: bool,
    /// Expected family name, if given.
    pub family: Option<String>,
    /// Expected event, if given.
    pub event: Option<String>,
    /// Codes that must appear in the report.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Free text.
    pub note: Option<String>,
    /// For variants: the example it was derived from.
    pub derived_from: Option<PathBuf>,
    /// For variants: the one change made.
    pub change: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    case: Vec<Case>,
}

/// Why the suite could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuiteError {
    /// A manifest or case file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A manifest is not valid TOML of the expected shape.
    #[error("manifest {path} is invalid: {source}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The cause.
        source: Box<toml::de::Error>,
    },
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The manifest the case came from.
    pub manifest: PathBuf,
    /// The case.
    pub case: Case,
    /// What did not match (empty when the case passed).
    pub mismatches: Vec<String>,
    /// Codes the validator reported (for display).
    pub codes: Vec<String>,
}

impl Outcome {
    /// True when the case passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Load every `*.toml` manifest in `dir` (sorted by name).
pub fn load(dir: &Path) -> Result<Vec<(PathBuf, Case)>, SuiteError> {
    fn io(path: &Path) -> impl Fn(std::io::Error) -> SuiteError + '_ {
        move |source| SuiteError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    manifests.sort();
    let mut cases = Vec::new();
    for m in manifests {
        let text = std::fs::read_to_string(&m).map_err(io(&m))?;
        let parsed: Manifest = toml::from_str(&text).map_err(|source| SuiteError::Manifest {
            path: m.clone(),
            source: Box::new(source),
        })?;
        cases.extend(parsed.case.into_iter().map(|c| (m.clone(), c)));
    }
    Ok(cases)
}

/// Run every case of the suite in `dir`.
pub fn run(dir: &Path, opts: &Options) -> Result<Vec<Outcome>, SuiteError> {
    let mut out = Vec::new();
    for (manifest, case) in load(dir)? {
        let path = dir.join(&case.file);
        let bytes = std::fs::read(&path).map_err(|source| SuiteError::Io {
            path: path.clone(),
            source,
        })?;
        let report = validate(&bytes, opts);
        let mut mismatches = Vec::new();
        if report.is_valid() != case.valid {
            mismatches.push(format!(
                "expected valid={}, got valid={}",
                case.valid,
                report.is_valid()
            ));
        }
        for code in &case.expect {
            if !report.has_code(code) {
                mismatches.push(format!("expected code {code} not reported"));
            }
        }
        let family = report.family.map(|f| f.as_str().to_owned());
        if case.family.is_some() && case.family != family {
            mismatches.push(format!(
                "expected family {:?}, got {:?}",
                case.family, family
            ));
        }
        if case.event.is_some() && case.event != report.event {
            mismatches.push(format!(
                "expected event {:?}, got {:?}",
                case.event, report.event
            ));
        }
        let codes = report
            .issues
            .iter()
            .map(|i| format!("{}:{}", i.severity.as_str(), i.code))
            .collect();
        out.push(Outcome {
            manifest,
            case,
            mismatches,
            codes,
        });
    }
    Ok(out)
}
