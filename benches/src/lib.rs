//! Benchmarks for Augur. The measuring code is `augur bench` (crates/augur-cli,
//! `bench.rs`), so operators can run it against their own build; `cargo bench -p
//! augur-benches` builds the release binary and runs the standard scenarios.
//! The model and placement benches read the shipped traces ([`trace`]).

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

/// The records of a shipped trace (`tests/data/traces/NAME`); exits the
/// bench with a message if it cannot be read.
pub fn trace(name: &str) -> Vec<augur_core::RunRecord> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/traces")
        .join(name);
    let read = std::fs::File::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|f| augur_placement::import::read_swf(f).map_err(|e| e.to_string()));
    match read {
        Ok(t) => t.records,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

/// The KTH trace.
pub fn kth() -> Vec<augur_core::RunRecord> {
    trace("KTH-SP2-1996-2.swf.gz")
}

/// The NASA trace.
pub fn nasa() -> Vec<augur_core::RunRecord> {
    trace("NASA-iPSC-1993-3.1-cln.swf.gz")
}

/// `n` records: the given traces, repeated with renamed users and times
/// shifted by 400 days per round (so every round is new history).
pub fn repeated(traces: &[&[augur_core::RunRecord]], n: usize) -> Vec<augur_core::RunRecord> {
    let mut out = Vec::with_capacity(n);
    let mut round = 0i64;
    while out.len() < n && traces.iter().any(|t| !t.is_empty()) {
        for r in traces.iter().flat_map(|t| t.iter()) {
            if out.len() == n {
                break;
            }
            let mut r = r.clone();
            r.user = format!("{}-{round}", r.user);
            let shift = round * 400 * 24 * 3600 * 1000;
            r.submitted_at_ms += shift;
            r.finished_at_ms += shift;
            out.push(r);
        }
        round += 1;
    }
    out
}
