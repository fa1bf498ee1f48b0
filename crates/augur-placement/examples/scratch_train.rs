use augur_predict::*;
fn main() {
    let path = std::env::args().nth(1).expect("path");
    let f = std::fs::File::open(&path).expect("open");
    let trace = augur_placement::import::read_swf(f).expect("parse");
    let recs = &trace.records;
    let m = train(recs, &TrainConfig::default(), 1, 0).expect("train");
    println!("{:?}", m.metrics);
    let mut hist = vec![0usize; m.candidates.len()];
    let mut hits = vec![0usize; m.candidates.len()];
    let mut bhits = vec![0usize; m.candidates.len()];
    let mut scratch = augur_predict::model::Scratch::default();
    augur_predict::model::replay_submissions(recs, |i, h| {
        let (ln, k, _) = m.predict_ln(h, &recs[i], &mut scratch);
        hist[k] += 1;
        let a = augur_predict::history::reference_runtime_s(&recs[i]).ln();
        if (ln - a).abs() <= std::f64::consts::LN_2 {
            hits[k] += 1;
        }
        let b = Baseline::UserClassLast2.predict(h, &recs[i]).max(1.0).ln();
        if (b - a).abs() <= std::f64::consts::LN_2 {
            bhits[k] += 1;
        }
    });
    for (k, n) in hist.iter().enumerate() {
        if *n > 0 {
            println!(
                "{:28} {:6} hit {:.3} base {:.3} w {:?}",
                m.candidates[k],
                n,
                hits[k] as f64 / *n as f64,
                bhits[k] as f64 / *n as f64,
                m.gate[k]
                    .iter()
                    .map(|v| (v * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
        }
    }
}
