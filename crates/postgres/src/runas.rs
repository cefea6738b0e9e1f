//! Running PostgreSQL programs as an unprivileged OS user when the agent is root.
//!
//! PostgreSQL refuses to run as root. When our effective uid is 0 every PostgreSQL program
//! runs as `run_as` (default `postgres`) with that user's primary and supplementary groups
//! (as `runuser` would set them, so group-readable TLS keys keep working) and its HOME.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};
use tracing::debug;

use crate::error::{PgError, Result};

const DEFAULT_USER: &str = "postgres";

/// The OS identity PostgreSQL programs run as.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
    groups: Vec<libc::gid_t>,
}

impl Identity {
    /// `None` when not root: programs run as the current user and `run_as` is ignored.
    pub fn resolve(run_as: Option<&str>) -> Result<Option<Identity>> {
        if !nix::unistd::geteuid().is_root() {
            if let Some(user) = run_as {
                debug!(user, "not running as root: ignoring run_as");
            }
            return Ok(None);
        }
        let name = run_as.unwrap_or(DEFAULT_USER);
        let user = User::from_name(name)
            .map_err(|source| PgError::UserLookup {
                user: name.to_string(),
                source,
            })?
            .ok_or_else(|| PgError::RunAsUserMissing {
                user: name.to_string(),
            })?;
        if user.uid.is_root() {
            return Err(PgError::InvalidName {
                what: "run_as user",
                name: name.to_string(),
                reason: "PostgreSQL refuses to run as root (uid 0)",
            });
        }
        let cname = CString::new(name).map_err(|_| PgError::InvalidName {
            what: "run_as user",
            name: name.to_string(),
            reason: "contains a NUL byte",
        })?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|source| PgError::UserLookup {
                user: name.to_string(),
                source,
            })?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(Some(Identity {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
            groups,
        }))
    }

    /// Makes `cmd` run as this identity.
    // unsafe: `pre_exec` (see SAFETY below); std has no safe way to set supplementary groups.
    #[allow(unsafe_code)]
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let (uid, gid, groups) = (self.uid.as_raw(), self.gid.as_raw(), self.groups.clone());
        // SAFETY: the closure runs between fork and exec and only makes raw syscalls
        // (setgroups/setgid/setuid are async-signal-safe); `groups` was allocated before fork.
        // CommandExt::uid/gid cannot be used: std clears supplementary groups before setuid and
        // runs pre_exec only afterwards, when setgroups is no longer permitted.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
    }
}
