//! Runs `tune` on a trace and prints the tables (what `augur tune` will print).
//!
//! ```text
//! cargo run --release -p augur-placement --example tune -- \
//!     tests/data/traces/KTH-SP2-1996-2.swf.gz [--format swf|jsonl] \
//!     [--workers 8x1,4x2,4x4] [--load 0.8] [--seed 1] [--max-jobs N] \
//!     [--plot out.svg] [--json]
//! ```

use std::process::ExitCode;

use augur_placement::import::{read_jsonl, read_swf};
use augur_placement::{render_svg, render_table, tune, TuneOptions};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut format = None;
    let mut plot = None;
    let mut json = false;
    let mut options = TuneOptions::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--format" => format = Some(value("--format")?),
            "--workers" => options.workers = value("--workers")?,
            "--load" => {
                options.load = value("--load")?
                    .parse()
                    .map_err(|e| format!("--load: {e}"))?
            }
            "--seed" => {
                options.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--max-jobs" => {
                options.max_jobs = Some(
                    value("--max-jobs")?
                        .parse()
                        .map_err(|e| format!("--max-jobs: {e}"))?,
                )
            }
            "--plot" => plot = Some(value("--plot")?),
            "--json" => json = true,
            other if path.is_none() && !other.starts_with("--") => path = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let path = path.ok_or("usage: tune TRACE [--format swf|jsonl] [--workers SPEC] [--load F] [--seed N] [--max-jobs N] [--plot FILE] [--json]")?;
    let format = format.unwrap_or_else(|| {
        if path.contains(".swf") {
            "swf".into()
        } else {
            "jsonl".into()
        }
    });
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let records = match format.as_str() {
        "swf" => read_swf(file).map_err(|e| format!("{path}: {e}"))?.records,
        "jsonl" => read_jsonl(file).map_err(|e| format!("{path}: {e}"))?,
        other => return Err(format!("unknown format {other:?}; expected swf or jsonl")),
    };
    let started = std::time::Instant::now();
    let report = tune(&records, &options).map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render_table(&report));
        eprintln!("(tune took {:.1} s)", started.elapsed().as_secs_f64());
    }
    if let Some(plot) = plot {
        std::fs::write(&plot, render_svg(&report)).map_err(|e| format!("{plot}: {e}"))?;
    }
    Ok(())
}
