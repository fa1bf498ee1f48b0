//! Standard Workload Format traces (`augur tune --trace file.swf[.gz]`), plain
//! or gzip. Invariant: records or an error naming a line, never a panic, and
//! every record's finish is not before its submission.
#![no_main]

use augur_placement::import::read_swf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(trace) = read_swf(data) {
        for record in &trace.records {
            assert!(record.finished_at_ms >= record.submitted_at_ms);
            assert!(record.job_id.starts_with("swf-"));
        }
    }
});
