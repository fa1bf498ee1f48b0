//! `tune` on the two shipped traces (tests/data/traces). Sampled to
//! `SAMPLE_JOBS` consecutive jobs each so that the test runs in seconds in a
//! debug build on two cores; the full-trace figures come from the `tune`
//! example (see the crate README section in the workspace README).

use std::path::PathBuf;

use augur_placement::import::read_swf;
use augur_placement::{render_svg, render_table, tune, Policy, TuneOptions};

const SAMPLE_JOBS: usize = 4000;

fn trace(name: &str) -> Vec<augur_core::RunRecord> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/traces")
        .join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let trace = read_swf(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(trace.skipped, 0);
    trace.records
}

fn check(name: &str, expected_jobs: usize) {
    let records = trace(name);
    assert_eq!(records.len(), expected_jobs);
    let options = TuneOptions {
        max_jobs: Some(SAMPLE_JOBS),
        seed: 7,
        ..Default::default()
    };
    let report = tune(&records, &options).expect("tune runs");
    assert_eq!(report.jobs, SAMPLE_JOBS);
    assert!(report.sample.is_some());

    let json: serde_json::Value = serde_json::to_value(&report).expect("serialises");
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["jobs", "placement", "prediction", "recommended"]);
    for row in json["prediction"].as_array().expect("array") {
        for field in [
            "predictor",
            "within_2x",
            "median_abs_log2",
            "mean_accuracy",
            "underpredicted",
        ] {
            assert!(row.get(field).is_some(), "prediction row lacks {field}");
        }
    }
    for row in json["placement"].as_array().expect("array") {
        for field in [
            "policy",
            "mean_jct_s",
            "median_jct_s",
            "p99_bounded_slowdown",
            "makespan_s",
        ] {
            assert!(row.get(field).is_some(), "placement row lacks {field}");
        }
    }
    assert_eq!(report.placement.len(), Policy::ALL.len());
    assert!(!report.recommended.policy.simulation_only());

    let table = render_table(&report);
    assert!(table.contains("SAMPLED"), "{table}");
    let svg = render_svg(&report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Printed so `cargo test -- --nocapture` shows the sampled figures.
    println!("{name}\n{table}");
}

#[test]
fn tune_on_kth() {
    check("KTH-SP2-1996-2.swf.gz", 28_489);
}

#[test]
fn tune_on_nasa() {
    check("NASA-iPSC-1993-3.1-cln.swf.gz", 18_239);
}
