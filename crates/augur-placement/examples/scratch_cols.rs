use augur_predict::*;
fn main() {
    let path = std::env::args().nth(1).expect("path");
    let f = std::fs::File::open(&path).expect("open");
    let trace = augur_placement::import::read_swf(f).expect("parse");
    let schema = FeatureSchema::default();
    let set = augur_predict::model::training_set(&trace.records, &schema);
    let names = schema.names();
    for (j, name) in names.iter().enumerate() {
        if !(name.contains("last")
            || name.contains("ewma")
            || name.contains("mean")
            || name.contains("ratio")
            || name.ends_with(".ln"))
        {
            continue;
        }
        let mut acc = QualityAccumulator::default();
        for (row, y) in set.rows.iter().zip(&set.targets) {
            acc.add(row[j].exp(), y.exp());
        }
        let q = acc.finish(name);
        println!(
            "{:28} within2x {:.3} med {:.3}",
            name, q.within_2x, q.median_abs_log2
        );
    }
}
