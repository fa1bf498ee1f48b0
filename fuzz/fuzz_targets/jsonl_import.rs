//! Augur's own run-record JSONL (`augur runs export`, `augur tune --runs`),
//! plain or gzip. Invariant: records or an error naming a line, never a panic;
//! every accepted record has the supported version and survives a round trip.
#![no_main]

use augur_core::run::RUN_RECORD_VERSION;
use augur_placement::import::read_jsonl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = read_jsonl(data) {
        for record in &records {
            assert_eq!(record.v, RUN_RECORD_VERSION);
            assert!(record.finished_at_ms >= record.submitted_at_ms);
        }
        let text: String = records
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .map(|line| line + "\n")
            .collect();
        let again = read_jsonl(text.as_bytes()).expect("exported records import again");
        assert_eq!(again.len(), records.len());
    }
});
