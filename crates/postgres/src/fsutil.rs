//! Small filesystem helpers: atomic writes and directories owned by the PostgreSQL user.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::error::{PgError, Result};
use crate::runas::Identity;

/// Gives `path` to the PostgreSQL user (no-op when not running as root).
pub(crate) fn chown(path: &Path, owner: Option<&Identity>) -> Result<()> {
    if let Some(id) = owner {
        std::os::unix::fs::chown(path, Some(id.uid.as_raw()), Some(id.gid.as_raw()))
            .map_err(|e| PgError::io("chown", path, e))?;
    }
    Ok(())
}

/// Reads a file, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PgError::io("read", path, e)),
    }
}

/// Replaces `path` with `content` so that readers see either the old or the new file,
/// never a partial one (temp file in the same directory + fsync + rename).
pub(crate) fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<&Identity>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| PgError::io("create temp file in", dir, e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| PgError::io("chmod", tmp.path(), e))?;
    chown(tmp.path(), owner)?;
    tmp.write_all(content)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| PgError::io("write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| PgError::io("rename temp file to", path, e.error))?;
    // Make the rename itself durable; some filesystems refuse to fsync directories.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `content` unless the file already holds exactly that. Returns whether it wrote.
pub(crate) fn write_if_changed(
    path: &Path,
    content: &str,
    mode: u32,
    owner: Option<&Identity>,
) -> Result<bool> {
    if read_optional(path)?.as_deref() == Some(content) {
        return Ok(false);
    }
    write_atomic(path, content.as_bytes(), mode, owner)?;
    Ok(true)
}

/// Creates `path` (and missing parents) if needed. Only directories created here are
/// chmod-ed/chown-ed; existing ones are left as the administrator set them up.
/// Returns whether `path` itself was created.
pub(crate) fn ensure_dir(path: &Path, mode: u32, owner: Option<&Identity>) -> Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent, 0o755, owner)?;
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => return Ok(false),
        Err(e) => return Err(PgError::io("create directory", path, e)),
    }
    // The umask may have masked bits off `mode`.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| PgError::io("chmod", path, e))?;
    chown(path, owner)?;
    Ok(true)
}

/// Creates an empty file if missing. Returns whether it was created.
pub(crate) fn touch(path: &Path, owner: Option<&Identity>) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    write_atomic(path, b"", 0o600, owner)?;
    Ok(true)
}

/// Removes a file if present. Returns whether it existed.
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(PgError::io("remove", path, e)),
    }
}

/// The last `max_lines` lines of `text`, for error messages.
pub(crate) fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn write_if_changed_and_ensure_dir() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        assert!(ensure_dir(&nested, 0o700, None).unwrap());
        assert!(!ensure_dir(&nested, 0o700, None).unwrap());
        let mode = fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let f = nested.join("f.conf");
        assert!(write_if_changed(&f, "x = 1\n", 0o600, None).unwrap());
        assert!(!write_if_changed(&f, "x = 1\n", 0o600, None).unwrap());
        assert!(write_if_changed(&f, "x = 2\n", 0o600, None).unwrap());
        assert_eq!(fs::read_to_string(&f).unwrap(), "x = 2\n");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(remove_file_if_exists(&f).unwrap());
        assert!(!remove_file_if_exists(&f).unwrap());
    }
}
