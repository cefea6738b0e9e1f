//! Shared helpers for the benchmarks: locating the pgherd binary, statistics, output.

#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod login;
pub mod peers;

/// The pgherd binary to benchmark: `PGHERD_BIN`, else target/release, else target/debug.
pub fn pgherd_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGHERD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("pgherd");
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!("pgherd binary not found: run `cargo build --release` or set PGHERD_BIN")
}

/// min / median / max of a sample (seconds or any unit).
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (v[0], median, v[v.len() - 1])
}

/// Prints one machine-readable line: `name=value unit`.
pub fn report(name: &str, value: f64, unit: &str) {
    println!("{name}={value:.3} {unit}");
}
