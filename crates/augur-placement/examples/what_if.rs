//! What-if placement: how close to the oracle could *any* history-based
//! predictor bring `predictive` placement? Runs the simulator (the same one as
//! `augur tune`) with the oracle policy ordering and placing by estimates
//! that are better informed than any live predictor can be, while jobs run
//! their true runtimes:
//!
//! * `lagless user+class last2` / `last1`: the mean of the last two (or the
//!   last) true runtimes of the same user and application, known the instant
//!   those jobs were *submitted* (a live predictor learns a runtime only when
//!   the job finishes, which under load can be hours later);
//! * `noisy oracle σ`: the true runtime times exp(σ·z), z standard normal and
//!   independent per job (errors of that spread, but not correlated within a
//!   user's burst the way history-based errors are).
//!
//! ```text
//! cargo run --release -p augur-placement --example what_if -- \
//!     tests/data/traces/NASA-iPSC-1993-3.1-cln.swf.gz [--workers 8x1,4x2,4x4] [--load 0.8]
//! ```

use std::collections::HashMap;
use std::process::ExitCode;

use augur_core::RunRecord;
use augur_placement::import::read_swf;
use augur_placement::sim::{parse_workers, simulate, SimOptions};
use augur_placement::Policy;
use augur_predict::history::reference_runtime_s;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Per record, the lagless estimate from the same user+application's earlier
/// records (submission order): the last one, or the mean of the last two.
fn lagless(records: &[RunRecord], two: bool) -> Vec<f64> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| (records[i].submitted_at_ms, i));
    let global = records.iter().map(reference_runtime_s).sum::<f64>() / records.len() as f64;
    // Per (user, application): the newest runtime and the one before.
    type LastTwo = (Option<f64>, Option<f64>);
    let mut last: HashMap<(&str, &str), LastTwo> = HashMap::new();
    let mut out = vec![global; records.len()];
    for i in order {
        let r = &records[i];
        let entry = last.entry((&r.user, &r.name)).or_default();
        out[i] = match *entry {
            (Some(a), Some(b)) if two => (a + b) / 2.0,
            (Some(a), _) => a,
            _ => global,
        };
        *entry = (Some(reference_runtime_s(r)), entry.0);
    }
    out
}

/// The true runtimes with independent log-normal noise of spread `sigma`
/// (a fixed xorshift generator: the same figures on every run).
fn noisy(records: &[RunRecord], sigma: f64) -> Vec<f64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    records
        .iter()
        .map(|r| {
            let z = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
            reference_runtime_s(r) * (sigma * z).exp()
        })
        .collect()
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut workers = "8x1,4x2,4x4".to_string();
    let mut load = 0.8;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => workers = args.next().ok_or("--workers needs a value")?,
            "--load" => {
                load = args
                    .next()
                    .ok_or("--load needs a value")?
                    .parse()
                    .map_err(|e| format!("--load: {e}"))?
            }
            other if path.is_none() => path = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let path = path.ok_or("usage: what_if TRACE.swf[.gz] [--workers SPEC] [--load F]")?;
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let records = read_swf(file).map_err(|e| format!("{path}: {e}"))?.records;
    let groups = parse_workers(&workers).map_err(|e| e.to_string())?;
    let mean_jct = |policy: Policy, estimates: Option<Vec<f64>>| -> Result<f64, String> {
        let mut options = SimOptions::new(groups.clone(), policy);
        options.load = Some(load);
        options.oracle_estimates = estimates;
        Ok(simulate(&records, &options)
            .map_err(|e| e.to_string())?
            .quality
            .mean_jct_s)
    };
    let oracle = mean_jct(Policy::Oracle, None)?;
    let least_loaded = mean_jct(Policy::LeastLoaded, None)?;
    println!(
        "{} jobs; workers {workers}, load {load}; mean JCT: oracle {oracle:.0} s, least-loaded {least_loaded:.0} s",
        records.len()
    );
    println!(
        "{:<34} {:>12} {:>10}",
        "ordered and placed by", "mean JCT s", "x oracle"
    );
    let row = |name: &str, jct: f64| println!("{name:<34} {jct:>12.0} {:>10.2}", jct / oracle);
    row(
        "predictive (the live model)",
        mean_jct(Policy::Predictive, None)?,
    );
    row(
        "lagless user+class last2",
        mean_jct(Policy::Oracle, Some(lagless(&records, true)))?,
    );
    row(
        "lagless user+class last1",
        mean_jct(Policy::Oracle, Some(lagless(&records, false)))?,
    );
    for sigma in [0.5, 1.0, 1.5] {
        row(
            &format!("noisy oracle sigma {sigma} (ln units)"),
            mean_jct(Policy::Oracle, Some(noisy(&records, sigma)))?,
        );
    }
    Ok(())
}
