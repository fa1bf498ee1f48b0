//! `cargo bench -p augur-benches --bench predict`: the placement issue's
//! goals on both shipped traces (prints, never asserts): `tune` with
//! `--workers 8x1,4x2,4x4 --load 0.8`, model vs best baseline, predictive vs
//! oracle and least-loaded. Timings of inference, training and placement
//! decisions are the criterion bench `model`.

use std::time::Instant;

use augur_benches::{kth, nasa};
use augur_placement::{tune, TuneOptions};

fn main() {
    let kth = kth();
    let nasa = nasa();
    // The goals of the placement issue, on the full traces.
    for (name, records) in [("KTH", &kth), ("NASA", &nasa)] {
        let started = Instant::now();
        let report = match tune(records, &TuneOptions::default()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{name}: tune failed: {e}");
                continue;
            }
        };
        let model = report.prediction.iter().find(|q| q.predictor == "model");
        let best_baseline = report
            .prediction
            .iter()
            .filter(|q| q.predictor != "model")
            .max_by(|a, b| a.within_2x.total_cmp(&b.within_2x));
        let jct = |p: &str| {
            report
                .placement
                .iter()
                .find(|q| q.policy == p)
                .map(|q| q.mean_jct_s)
                .unwrap_or(f64::NAN)
        };
        if let (Some(m), Some(b)) = (model, best_baseline) {
            println!(
                "{name}: model {:.1}% within 2x, median |log2| {:.3}; best baseline {} {:.1}%, {:.3} (goal: model beats every baseline on both, 65%+)",
                m.within_2x * 100.0,
                m.median_abs_log2,
                b.predictor,
                b.within_2x * 100.0,
                b.median_abs_log2
            );
        }
        println!(
            "{name}: predictive mean JCT {:.0} s = {:.2}x oracle (goal <= 1.15x), {:.2}x least-loaded (goal <= 0.5x) [{:.1} s]",
            jct("predictive"),
            jct("predictive") / jct("oracle"),
            jct("predictive") / jct("least-loaded"),
            started.elapsed().as_secs_f64()
        );
    }
}
