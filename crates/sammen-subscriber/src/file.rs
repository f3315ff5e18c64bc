//! Safe file names and the durable write.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of temporary files; never a valid message file name (those start with an ASCII letter or digit).
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Longest accepted message id (after `urn:uuid:` is stripped).
pub const MAX_ID_LEN: usize = 128;

/// Why a message id cannot name a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeId {
    /// Empty, or longer than [`MAX_ID_LEN`].
    #[error("message id must be 1-{MAX_ID_LEN} characters")]
    Length,
    /// A character outside `A-Z a-z 0-9 . _ -`, or not starting with a letter or digit.
    #[error("message id may only hold A-Z, a-z, 0-9, '.', '_', '-' and must start with a letter or digit")]
    Charset,
}

/// The file name (`<id>.xml`) for a message id, or why the id is refused.
///
/// Accepted: UUIDs (a `urn:uuid:` prefix is dropped: `urn:uuid:X` and `X` are the same message) and
/// letter ids of `A-Z a-z 0-9 . _ -`, starting with a letter or digit, at most [`MAX_ID_LEN`] long. So a
/// name can never be `.`/`..`, hidden, absolute, contain a separator or a NUL, or collide with the
/// subscriber's temporary files: no path traversal whatever the sender put in the id.
pub fn file_name_for(message_id: &str) -> Result<String, UnsafeId> {
    let id = match message_id.get(..9) {
        Some(p) if p.eq_ignore_ascii_case("urn:uuid:") => &message_id[9..],
        _ => message_id,
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(UnsafeId::Length);
    }
    let b = id.as_bytes();
    let ok = b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if !ok {
        return Err(UnsafeId::Charset);
    }
    Ok(format!("{id}.xml"))
}

/// What [`store`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Written now.
    Written,
    /// Already there with the same bytes.
    Duplicate,
    /// Already there with other bytes (kept as it is).
    Conflict,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Make `dir/name` hold `bytes` unless it exists. The file is synced; the caller syncs `dir` afterwards
/// (once per batch) before telling anyone. An existing file is synced too: it may come from a run that
/// died after its rename but before its directory sync.
pub(crate) fn store(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<Stored> {
    let path = dir.join(name);
    match File::open(&path) {
        Ok(f) => {
            f.sync_all()?;
            let same = std::fs::read(&path)? == bytes;
            return Ok(if same {
                Stored::Duplicate
            } else {
                Stored::Conflict
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}-{}-{name}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let r = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map(|()| Stored::Written)
}

/// fsync a directory (makes renames in it durable).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Remove temporary files a killed run left behind; returns how many.
pub(crate) fn remove_stale_tmp(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            std::fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe() {
        let uuid = "a5e5b880-c087-4055-b9ec-99108695f81d";
        assert_eq!(file_name_for(uuid).unwrap(), format!("{uuid}.xml"));
        assert_eq!(
            file_name_for(&format!("urn:uuid:{uuid}")).unwrap(),
            format!("{uuid}.xml")
        );
        assert_eq!(
            file_name_for("031120PWE62528").unwrap(),
            "031120PWE62528.xml"
        );
        assert_eq!(file_name_for("a.b_c-d").unwrap(), "a.b_c-d.xml");
        for bad in [
            "",
            "..",
            ".",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            ".hidden",
            "-rf",
            "a\0b",
            "a b",
            "urn:uuid:",
            "æøå",
            "x:y",
            ".tmp-1",
        ] {
            assert!(file_name_for(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(file_name_for(&"a".repeat(129)), Err(UnsafeId::Length));
        assert!(file_name_for(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn store_writes_once_and_detects_conflicts() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(store(d.path(), "x.xml", b"one").unwrap(), Stored::Written);
        assert_eq!(store(d.path(), "x.xml", b"one").unwrap(), Stored::Duplicate);
        assert_eq!(store(d.path(), "x.xml", b"two").unwrap(), Stored::Conflict);
        assert_eq!(std::fs::read(d.path().join("x.xml")).unwrap(), b"one");
        std::fs::write(d.path().join(".tmp-9-0-y.xml"), b"partial").unwrap();
        assert_eq!(remove_stale_tmp(d.path()).unwrap(), 1);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
