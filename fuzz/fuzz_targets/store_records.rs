//! Every value Augur reads back from etcd, decoded from arbitrary bytes. The
//! first byte picks the record type (job record, worker registration,
//! schedule, run record, stored model, leader value, queue and retention index
//! entries, placement configuration, idempotency value, keys). Invariants: a
//! corrupt value is an `Err`, never a panic; a value that decodes re-encodes
//! to one that decodes to the same thing; what the reader does next with a
//! decoded value (parse the model, the cron expression, the placement
//! configuration, derive a run record) does not panic either.
#![no_main]

use augur_core::schedule::{Cron, ScheduleRecord};
use augur_core::{JobId, JobRecord, RunRecord, WorkerInfo};
use augur_fuzz::json_close;
use augur_placement::PlacementConfig;
use augur_predict::Model;
use augur_store::codec::{decode, encode, FinishedEntry, LeaderValue, PendingEntry};
use augur_store::{Keys, StoreError, StoredModel};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `bytes` as `T`; if it decodes, checks the round trip.
fn decoded<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match decode::<T>(b"/augur/fuzz", bytes) {
        Ok(value) => {
            let first = encode(&value);
            assert!(!first.is_empty(), "a decoded value encodes");
            let back: T = decode(b"/augur/fuzz", &first).expect("re-encoded value decodes");
            let a: serde_json::Value = serde_json::from_slice(&first).expect("json");
            let b: serde_json::Value = serde_json::from_slice(&encode(&back)).expect("json");
            assert!(json_close(&a, &b), "round trip changed {a} into {b}");
            Some(value)
        }
        Err(StoreError::Corrupt { key, .. }) => {
            assert_eq!(key, "/augur/fuzz");
            None
        }
        Err(other) => panic!("decode failed with a non-corrupt error: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 11 {
        0 => {
            if let Some(job) = decoded::<JobRecord>(bytes) {
                let _ = RunRecord::from_job(&job, 1.0);
                let _ = job.spec.timeout();
                let _ = job.spec.retry.backoff_ms(job.failed_attempts, 0.5);
            }
        }
        1 => {
            if let Some(worker) = decoded::<WorkerInfo>(bytes) {
                let _ = worker.matches(&worker.labels);
            }
        }
        2 => {
            if let Some(schedule) = decoded::<ScheduleRecord>(bytes) {
                if let Ok(cron) = Cron::parse(&schedule.cron) {
                    let after = schedule.last_tick_ms.unwrap_or(schedule.created_at_ms);
                    if let Some(next) = cron.next_after(after) {
                        let _ = cron.latest_in(after, next);
                    }
                }
            }
        }
        3 => {
            let _ = decoded::<RunRecord>(bytes);
        }
        4 => {
            if let Some(stored) = decoded::<StoredModel>(bytes) {
                let _ = Model::from_json(&stored.model_json);
            }
        }
        5 => {
            let _ = decoded::<LeaderValue>(bytes);
        }
        6 => {
            let _ = decoded::<PendingEntry>(bytes);
        }
        7 => {
            let _ = decoded::<FinishedEntry>(bytes);
        }
        8 => {
            if let Some(value) = decoded::<serde_json::Value>(bytes) {
                let _ = serde_json::from_value::<PlacementConfig>(value);
            }
        }
        9 => {
            // The idempotency index stores a job id as text.
            if let Ok(id) = String::from_utf8_lossy(bytes).parse::<JobId>() {
                assert_eq!(id.to_string().parse::<JobId>().ok(), Some(id));
            }
        }
        _ => {
            // Keys seen in watches and range reads.
            let keys = Keys::new("/augur");
            let key = String::from_utf8_lossy(bytes);
            if let Some(id) = keys.job_id_of(&key) {
                assert_eq!(keys.job_id_of(&keys.job(&id)), Some(id));
            }
            if let Some(worker) = keys.worker_id_of(&key) {
                assert_eq!(keys.worker_id_of(&keys.worker(&worker)), Some(worker));
            }
        }
    }
});
