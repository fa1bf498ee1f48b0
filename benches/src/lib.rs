//! Benchmarks for Augur. The measuring code is `augur bench` (crates/augur-cli,
//! `bench.rs`), so operators can run it against their own build; `cargo bench -p
//! augur-benches` builds the release binary and runs the standard scenarios.

use std::path::PathBuf;
use std::process::Command;

/// The release `augur` binary, built first if needed.
pub fn release_binary() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "augur-cli"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --release -p augur-cli failed: {status}"
        ));
    }
    Ok(root.join("target/release/augur"))
}

/// Runs `augur bench` with `args` and returns its JSON line.
pub fn run_bench(binary: &PathBuf, args: &[&str]) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--output")
        .arg("json")
        .arg("bench")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "augur bench {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
