//! Configuration loading for the CLI: file (optional) + flags; `sammen check-config`.

use sammen_config::{Config, ConfigError, Overrides};
use std::path::Path;
use std::process::ExitCode;

/// The file (or the defaults), with flags applied.
pub fn resolve(file: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
    let base = match file {
        Some(p) => sammen_config::load(p)?,
        None => Config::default(),
    };
    base.apply(o)
}

/// Print each problem on its own line, prefixed with the file.
pub fn report(file: Option<&Path>, e: &ConfigError) {
    let name = file.map_or_else(|| "config".to_string(), |p| p.display().to_string());
    for p in e.problems() {
        eprintln!("{name}: {p}");
    }
}

/// `sammen check-config FILE`: exit 0 valid, 1 invalid.
pub fn check(file: &Path) -> ExitCode {
    match sammen_config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok ({} receivers, bus {:?}, store {:?}, listen {})",
                file.display(),
                c.receivers.len(),
                c.bus.kind,
                c.store.backend,
                c.http.listen
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(Some(file), &e);
            ExitCode::from(1)
        }
    }
}
