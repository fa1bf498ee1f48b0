use augur_predict::*;
fn main() {
    let path = std::env::args().nth(1).expect("path");
    let every: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let f = std::fs::File::open(&path).expect("open");
    let trace = augur_placement::import::read_swf(f).expect("parse");
    let t = std::time::Instant::now();
    let opts = EvaluationOptions {
        retrain_every: every,
        ..Default::default()
    };
    let eval = evaluate(&trace.records, &opts);
    println!(
        "{} jobs, skipped {}, trainings {}, fallbacks {}, {:?}",
        eval.jobs,
        trace.skipped,
        eval.trainings,
        eval.model_fallbacks,
        t.elapsed()
    );
    for q in &eval.quality {
        println!(
            "{:18} within2x {:.3} med|log2| {:.3} acc {:.3} under {:.3}",
            q.predictor, q.within_2x, q.median_abs_log2, q.mean_accuracy, q.underpredicted
        );
    }
}
