//! What is in the data directory, and the only two ways this crate ever destroys one.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::{info, warn};

use crate::error::{PgError, Result};
use crate::fsutil;
use crate::runas::Identity;

/// The data directory as found on disk. Inspection never modifies anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DataDirState {
    Missing,
    /// Exists with nothing but hidden entries or `lost+found` (a fresh mount point).
    Empty,
    Initialized {
        sysid: String,
    },
    /// Present but not a usable cluster; left alone for a human.
    Invalid(String),
}

pub(crate) fn inspect(data_dir: &Path) -> DataDirState {
    let entries = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return DataDirState::Missing,
        Err(e) => return DataDirState::Invalid(format!("cannot read {}: {e}", data_dir.display())),
    };
    let pg_control = data_dir.join("global").join("pg_control");
    if pg_control.exists() {
        return match read_sysid(&pg_control) {
            Ok(sysid) => DataDirState::Initialized { sysid },
            Err(e) => DataDirState::Invalid(format!("cannot read {}: {e}", pg_control.display())),
        };
    }
    let mut others = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && name != "lost+found" {
                    others.push(name);
                }
            }
            Err(e) => {
                return DataDirState::Invalid(format!("cannot read {}: {e}", data_dir.display()))
            }
        }
    }
    if others.is_empty() {
        return DataDirState::Empty;
    }
    others.sort();
    others.truncate(5);
    DataDirState::Invalid(format!(
        "{} has files ({}) but no global/pg_control",
        data_dir.display(),
        others.join(", ")
    ))
}

/// The system identifier is the first field of pg_control (a native-endian u64) in every
/// supported version; reading it directly avoids running pg_controldata every HA cycle.
fn read_sysid(pg_control: &Path) -> std::io::Result<String> {
    let mut buf = [0u8; 8];
    fs::File::open(pg_control)?.read_exact(&mut buf)?;
    let sysid = u64::from_ne_bytes(buf);
    if sysid == 0 {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "system identifier is 0",
        ));
    }
    Ok(sysid.to_string())
}

/// Makes sure `data_dir` exists, is empty, has mode 0700 and belongs to the PostgreSQL user,
/// as initdb and pg_basebackup need. Never deletes anything.
pub(crate) fn prepare_empty(
    data_dir: &Path,
    owner: Option<&Identity>,
    action: &'static str,
) -> Result<()> {
    match inspect(data_dir) {
        DataDirState::Missing => {
            fsutil::ensure_dir(data_dir, 0o700, owner)?;
        }
        DataDirState::Empty => {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| PgError::io("chmod", data_dir, e))?;
            fsutil::chown(data_dir, owner)?;
        }
        DataDirState::Initialized { .. } | DataDirState::Invalid(_) => {
            return Err(PgError::DataDirNotEmpty {
                path: data_dir.to_path_buf(),
                action,
            })
        }
    }
    Ok(())
}

/// Permission to destroy a data directory. Construct one only where the configuration
/// explicitly allows it (e.g. `remove_data_directory_on_rewind_failure`); it is consumed by
/// the removal, so every removal needs its own decision.
#[derive(Debug)]
#[must_use = "a removal permission does nothing unless passed to remove_data_dir"]
pub struct AllowRemoval {
    reason: String,
}

impl AllowRemoval {
    /// `reason`: the setting or operator request that allows the removal (logged).
    pub fn granted_by(reason: impl Into<String>) -> Self {
        AllowRemoval {
            reason: reason.into(),
        }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// How to get rid of a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalMode {
    /// Keep it for forensics as `<data_dir>.failed` (replacing an older `.failed`).
    RenameToFailed,
    /// Delete it, with the targets of a symlinked pg_wal and of tablespaces.
    Delete,
}

/// Removes or renames `data_dir`; returns the new path when renamed.
pub(crate) fn remove(
    data_dir: &Path,
    allow: AllowRemoval,
    mode: RemovalMode,
) -> Result<Option<PathBuf>> {
    if fs::symlink_metadata(data_dir).is_err() {
        return Ok(None);
    }
    match mode {
        RemovalMode::RenameToFailed => {
            let mut failed = data_dir.as_os_str().to_os_string();
            failed.push(".failed");
            let failed = PathBuf::from(failed);
            warn!(data_dir = %data_dir.display(), to = %failed.display(), reason = allow.reason, "renaming data directory");
            if fs::symlink_metadata(&failed).is_ok() {
                remove_path(&failed)?;
            }
            fs::rename(data_dir, &failed).map_err(|e| PgError::io("rename", data_dir, e))?;
            Ok(Some(failed))
        }
        RemovalMode::Delete => {
            warn!(data_dir = %data_dir.display(), reason = allow.reason, "removing data directory");
            for target in symlink_targets(data_dir) {
                info!(path = %target.display(), "removing linked WAL/tablespace directory");
                remove_path(&target)?;
            }
            remove_path(data_dir)?;
            Ok(None)
        }
    }
}

fn remove_path(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| PgError::io("stat", path, e))?;
    let res = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    res.map_err(|e| PgError::io("remove", path, e))
}

/// Where a symlinked pg_wal and the tablespaces of `data_dir` really live.
fn symlink_targets(data_dir: &Path) -> Vec<PathBuf> {
    let mut links = vec![data_dir.join("pg_wal")];
    if let Ok(entries) = fs::read_dir(data_dir.join("pg_tblspc")) {
        links.extend(entries.flatten().map(|e| e.path()));
    }
    links
        .into_iter()
        .filter(|l| fs::symlink_metadata(l).is_ok_and(|m| m.file_type().is_symlink()))
        .filter_map(|l| fs::canonicalize(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspects_without_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        assert_eq!(inspect(&d), DataDirState::Missing);
        fs::create_dir_all(d.join("lost+found")).unwrap();
        fs::write(d.join(".hidden"), "").unwrap();
        assert_eq!(inspect(&d), DataDirState::Empty);
        fs::write(d.join("PG_VERSION"), "15\n").unwrap();
        assert!(matches!(inspect(&d), DataDirState::Invalid(r) if r.contains("PG_VERSION")));
        fs::create_dir(d.join("global")).unwrap();
        fs::write(
            d.join("global/pg_control"),
            7711379930334143482u64.to_ne_bytes(),
        )
        .unwrap();
        assert_eq!(
            inspect(&d),
            DataDirState::Initialized {
                sysid: "7711379930334143482".into()
            }
        );
        fs::write(d.join("global/pg_control"), [1u8, 2]).unwrap();
        assert!(matches!(inspect(&d), DataDirState::Invalid(_)));
        fs::write(dir.path().join("file"), "").unwrap();
        assert!(matches!(
            inspect(&dir.path().join("file")),
            DataDirState::Invalid(_)
        ));
    }

    #[test]
    fn prepare_refuses_non_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b/data");
        prepare_empty(&d, None, "initdb").unwrap();
        assert_eq!(inspect(&d), DataDirState::Empty);
        fs::write(d.join("x"), "").unwrap();
        let err = prepare_empty(&d, None, "initdb").unwrap_err();
        assert!(matches!(err, PgError::DataDirNotEmpty { .. }), "{err}");
        assert!(d.join("x").exists());
    }

    #[test]
    fn removal_modes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let wal = dir.path().join("wal");
        fs::create_dir_all(&d).unwrap();
        fs::create_dir_all(&wal).unwrap();
        std::os::unix::fs::symlink(&wal, d.join("pg_wal")).unwrap();
        fs::write(d.join("f"), "1").unwrap();

        let failed = remove(
            &d,
            AllowRemoval::granted_by("test"),
            RemovalMode::RenameToFailed,
        )
        .unwrap();
        assert_eq!(failed, Some(dir.path().join("data.failed")));
        assert!(!d.exists() && dir.path().join("data.failed/f").exists());
        assert!(wal.exists(), "renaming keeps the WAL target");

        fs::rename(dir.path().join("data.failed"), &d).unwrap();
        assert_eq!(
            remove(&d, AllowRemoval::granted_by("test"), RemovalMode::Delete).unwrap(),
            None
        );
        assert!(!d.exists() && !wal.exists());
        assert_eq!(
            remove(&d, AllowRemoval::granted_by("test"), RemovalMode::Delete).unwrap(),
            None
        );
    }
}
