use augur_placement::sim::*;
use augur_placement::*;
fn main() {
    let path = std::env::args().nth(1).expect("path");
    let max: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
    let aging: f64 = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(0.1);
    let f = std::fs::File::open(&path).expect("open");
    let trace = augur_placement::import::read_swf(f).expect("parse");
    let recs: Vec<_> = trace.records.into_iter().take(max).collect();
    let workers = parse_workers("8x1,4x2,4x4").unwrap();
    for policy in Policy::ALL {
        let mut o = SimOptions::new(workers.clone(), policy);
        o.load = Some(0.8);
        o.scheduler.placement.aging_rate = aging;
        let t = std::time::Instant::now();
        let r = simulate(&recs, &o).unwrap();
        let q = &r.quality;
        qual(&r, &recs);
        println!("{:18} mean {:10.0} median {:8.0} p99bsld {:9.1} makespan {:10.0} train {} fb {} unplaced {} {:?}", q.policy, q.mean_jct_s, q.median_jct_s, q.p99_bounded_slowdown, q.makespan_s, r.trainings, r.fallbacks, q.unplaced, t.elapsed());
    }
}
pub fn qual(r: &SimResult, recs: &[augur_core::RunRecord]) {
    let mut acc = augur_predict::QualityAccumulator::default();
    for (o, rec) in r.outcomes.iter().zip(recs) { if let Some(p) = o.predicted_work_s { acc.add(p, augur_predict::history::reference_runtime_s(rec)); } }
    let q = acc.finish("sim");
    println!("   in-sim prediction: n {} within2x {:.3} med {:.3} under {:.3}", acc.len(), q.within_2x, q.median_abs_log2, q.underpredicted);
}
