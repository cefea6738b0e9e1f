//! Where the PostgreSQL programs are and which major version they are.

use std::path::{Path, PathBuf};

/// Debian and Ubuntu install each major version under `/usr/lib/postgresql/<major>/bin`.
const DEBIAN_LIB_DIR: &str = "/usr/lib/postgresql";

/// The newest major version pgherd knows; assumed for parameter names when neither a data
/// directory nor the binaries tell the version.
pub const NEWEST_KNOWN_MAJOR: u32 = 17;

/// The default `bin_dir`: the newest `/usr/lib/postgresql/<major>/bin` holding `postgres`
/// (Debian's layout), else an empty path, which means "search `PATH`" (Patroni's default).
pub fn default_bin_dir() -> PathBuf {
    newest_debian_bin_dir(Path::new(DEBIAN_LIB_DIR)).unwrap_or_default()
}

fn newest_debian_bin_dir(lib: &Path) -> Option<PathBuf> {
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

/// The major version of `<bin_dir>/postgres` (`postgres (PostgreSQL) 15.18` -> 15).
pub fn binaries_major_version(bin_dir: &Path) -> Option<u32> {
    let out = std::process::Command::new(bin_dir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    parse_version_output(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version_output(text: &str) -> Option<u32> {
    text.split_whitespace()
        .last()?
        .split(['.', 'b', 'r'])
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_major_version() {
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 15.18\n"),
            Some(15)
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 17beta2"),
            Some(17)
        );
        assert_eq!(
            parse_version_output("postgres (PostgreSQL) 9.6.24"),
            Some(9)
        );
    }

    #[test]
    fn picks_the_newest_debian_bin_dir() {
        let dir = tempfile::tempdir().unwrap();
        for major in ["13", "15", "notes"] {
            let bin = dir.path().join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("16/bin")).unwrap();
        assert_eq!(
            newest_debian_bin_dir(dir.path()),
            Some(dir.path().join("15/bin"))
        );
    }
}
