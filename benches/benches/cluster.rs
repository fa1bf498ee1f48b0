//! `cargo bench -p augur-benches`: the foundation's standard scenarios. Prints one
//! JSON line per scenario; nothing is asserted.

fn main() {
    let binary = match augur_benches::release_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let scenarios: [(&str, &[&str]); 3] = [
        (
            "null executor, closed loop",
            &["--jobs", "20000", "--executor", "null"],
        ),
        (
            "true processes, closed loop",
            &["--jobs", "5000", "--executor", "process"],
        ),
        (
            "null executor, open loop 100/s",
            &["--jobs", "1000", "--executor", "null", "--rate", "100"],
        ),
    ];
    for (name, args) in scenarios {
        match augur_benches::run_bench(&binary, args) {
            Ok(json) => println!("{name}: {json}"),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
}
