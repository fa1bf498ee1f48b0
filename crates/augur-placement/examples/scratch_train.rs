use augur_predict::*;
fn main() {
    let path = std::env::args().nth(1).expect("path");
    let f = std::fs::File::open(&path).expect("open");
    let trace = augur_placement::import::read_swf(f).expect("parse");
    let n = trace.records.len();
    let m = train(&trace.records[..n / 2], &TrainConfig::default(), 1, 0).expect("train");
    println!("{:?}", m.metrics);
    for (name, w) in m.feature_names.iter().zip(&m.weights) {
        if w.abs() > 1e-9 {
            println!("{name:28} {w:+.4}");
        }
    }
    println!("intercept {}", m.intercept);
}
