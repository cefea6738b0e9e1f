//! Build information for `pgherd version` and `--version`: the git commit and the build date.
//!
//! A source tarball without `.git` (or a machine without `git`) still builds: the commit is
//! then "unknown". `PGHERD_GIT_COMMIT` overrides the commit (packagers building outside the
//! repository), `SOURCE_DATE_EPOCH` the date (reproducible builds).

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=PGHERD_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = match std::env::var("PGHERD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit().unwrap_or_else(|| "unknown".to_string()),
    };
    // A new commit or checkout reruns this script (and so refreshes the date). Only files
    // that exist: cargo reruns the script on every build for a missing one.
    let reference = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "index", "packed-refs"]
        .into_iter()
        .chain(reference.as_deref())
    {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            if std::path::Path::new(&manifest_dir()).join(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=PGHERD_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=PGHERD_BUILD_DATE={}", utc_date(epoch));
}

/// The abbreviated commit, with `-dirty` when tracked files differ from it; none unless the
/// repository is this workspace's (a source tarball unpacked inside another repository).
fn git_commit() -> Option<String> {
    let top = std::fs::canonicalize(git(&["rev-parse", "--show-toplevel"])?).ok()?;
    let workspace =
        std::fs::canonicalize(std::path::Path::new(&manifest_dir()).join("../..")).ok()?;
    if top != workspace {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = Command::new("git")
        .args(["diff-index", "--quiet", "HEAD", "--"])
        .current_dir(manifest_dir())
        .status()
        .map(|s| s.code() == Some(1))
        .unwrap_or(false);
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string())
}

/// One line of `git` output run in this crate's directory, if git and a repository are there.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch (Howard Hinnant's civil-from-days).
fn utc_date(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}
