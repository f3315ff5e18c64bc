//! Atomic file writes for checkpoint export: temp file, fsync, rename, directory fsync.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::checkpoint::SignedCheckpoint;
use crate::error::AuditError;

/// File name of the latest exported checkpoint inside the export directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// The default export directory for a data dir: its sibling `<name>.audit-checkpoints`.
pub fn default_export_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    data_dir.with_file_name(format!("{name}.audit-checkpoints"))
}

/// Replace `path` with `bytes` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| AuditError::io("create export dir", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(|e| AuditError::io("create temp file", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| AuditError::io("write temp file", e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| AuditError::io("rename into place", e))?;
    // The rename is only durable once the directory entry is.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("fsync export dir", e))?;
    Ok(())
}

/// Export `cp` as `<dir>/checkpoint`.
pub fn export_checkpoint(dir: &Path, cp: &SignedCheckpoint) -> Result<(), AuditError> {
    write_atomic(&dir.join(CHECKPOINT_FILE), cp.text.as_bytes())
}

/// Read `<dir>/checkpoint` if it exists.
pub fn read_exported(dir: &Path) -> Result<Option<SignedCheckpoint>, AuditError> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => SignedCheckpoint::parse(&text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(format!("read {}", path.display()), e)),
    }
}
