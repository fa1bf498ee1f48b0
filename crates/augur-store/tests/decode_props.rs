//! Property tests of every decoder of values read back from etcd (issue 7,
//! item 7; the same decoders are fuzzed by `fuzz/`): a stored value that does
//! not decode is `StoreError::Corrupt` naming its key, never a panic; every
//! record type round-trips through the codec unchanged.
//!
//! Generated floats are multiples of 1/1000: serde_json (without
//! `float_roundtrip`) may parse an arbitrary shortest float one ULP off, while
//! such decimals parse exactly.

use std::collections::BTreeMap;

use augur_core::job::{JobRecord, JobState, Usage};
use augur_core::schedule::{MissedTicks, ScheduleRecord};
use augur_core::spec::{JobSpec, Resources};
use augur_core::{JobId, RetryPolicy, RunRecord, WorkerId, WorkerInfo};
use augur_store::codec::{decode, encode, FinishedEntry, LeaderValue, PendingEntry};
use augur_store::{Keys, StoreError, StoredModel};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

const KEY: &[u8] = b"/augur/test/key";

fn decimal() -> impl Strategy<Value = f64> {
    (-1_000_000_000i64..1_000_000_000).prop_map(|k| k as f64 / 1000.0)
}

fn text() -> impl Strategy<Value = String> {
    // Any unicode, including quotes, backslashes and control characters.
    any::<String>().prop_map(|s| s.chars().take(40).collect())
}

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(text(), text(), 0..4)
}

fn worker_id() -> impl Strategy<Value = WorkerId> {
    "[A-Za-z0-9._-]{1,20}".prop_map(|s| WorkerId::new(s).expect("valid by construction"))
}

fn spec() -> impl Strategy<Value = JobSpec> {
    (
        (
            text(),
            text(),
            proptest::collection::vec(text(), 0..4),
            map(),
        ),
        (proptest::option::of(text()), map(), any::<i32>()),
        proptest::option::of(any::<u64>()),
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            decimal(),
            decimal(),
        ),
        (any::<u32>(), any::<u64>(), any::<u64>()),
        (proptest::option::of(text()), map()),
    )
        .prop_map(
            |(
                (name, command, args, env),
                (working_dir, labels, priority),
                timeout_ms,
                (max_attempts, initial_backoff_ms, max_backoff_ms, multiplier, jitter),
                (slots, cpu_millis, memory_bytes),
                (idempotency_key, constraints),
            )| JobSpec {
                name,
                command,
                args,
                env,
                working_dir,
                labels,
                priority,
                timeout_ms,
                retry: RetryPolicy {
                    max_attempts,
                    initial_backoff_ms,
                    max_backoff_ms,
                    multiplier,
                    jitter,
                },
                resources: Resources {
                    slots,
                    cpu_millis,
                    memory_bytes,
                },
                idempotency_key,
                constraints,
            },
        )
}

fn job_record() -> impl Strategy<Value = JobRecord> {
    (
        (any::<u128>(), spec(), 0..JobState::ALL.len()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (
            proptest::option::of(worker_id()),
            any::<i64>(),
            any::<i64>(),
        ),
        (
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            any::<i64>(),
        ),
        (
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i32>()),
        ),
        (text(), text(), text(), any::<bool>()),
        (proptest::option::of(any::<(u64, u64, u64, u64)>()), map()),
    )
        .prop_map(
            |(
                (id, spec, state),
                (attempt, failed_attempts, lost_attempts),
                (worker_id, epoch, submitted_at_ms),
                (started_at_ms, finished_at_ms, not_before_ms),
                (exit_code, signal),
                (stdout_tail, stderr_tail, message, cancel_requested),
                (usage, trace_context),
            )| {
                let mut job = JobRecord::new(JobId(id.into()), spec, submitted_at_ms);
                job.state = JobState::ALL[state];
                job.attempt = attempt;
                job.failed_attempts = failed_attempts;
                job.lost_attempts = lost_attempts;
                job.worker_id = worker_id;
                job.epoch = epoch;
                job.started_at_ms = started_at_ms;
                job.finished_at_ms = finished_at_ms;
                job.not_before_ms = not_before_ms;
                job.exit_code = exit_code;
                job.signal = signal;
                job.stdout_tail = stdout_tail;
                job.stderr_tail = stderr_tail;
                job.message = message;
                job.cancel_requested = cancel_requested;
                job.usage =
                    usage.map(
                        |(runtime_ms, user_cpu_us, system_cpu_us, max_rss_kb)| Usage {
                            runtime_ms,
                            user_cpu_us,
                            system_cpu_us,
                            max_rss_kb,
                            peak_memory_bytes: max_rss_kb.saturating_mul(1024),
                            cgroup_cpu_us: user_cpu_us.saturating_add(system_cpu_us),
                        },
                    );
                job.trace_context = trace_context;
                job
            },
        )
}

fn worker_info() -> impl Strategy<Value = WorkerInfo> {
    (
        worker_id(),
        any::<u32>(),
        map(),
        (text(), text()),
        (any::<i64>(), any::<i64>(), any::<bool>()),
        proptest::option::of((any::<u64>(), any::<u64>())),
    )
        .prop_map(
            |(
                id,
                slots,
                labels,
                (version, executor),
                (registered_at_ms, lease_id, draining),
                capacity,
            )| {
                WorkerInfo {
                    id,
                    slots,
                    labels,
                    version,
                    executor,
                    registered_at_ms,
                    lease_id,
                    draining,
                    capacity: capacity.map(|(cpu_millis, memory_bytes)| augur_core::Capacity {
                        cpu_millis,
                        memory_bytes,
                    }),
                }
            },
        )
}

fn schedule() -> impl Strategy<Value = ScheduleRecord> {
    (
        (any::<u32>(), text(), text(), spec()),
        (any::<bool>(), any::<bool>(), any::<i64>()),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(
            |((v, name, cron, spec), (paused, skip, created_at_ms), last_tick_ms)| ScheduleRecord {
                v,
                name,
                cron,
                spec,
                paused,
                missed: if skip {
                    MissedTicks::Skip
                } else {
                    MissedTicks::FireOnce
                },
                created_at_ms,
                last_tick_ms,
                owner: paused.then(|| "alice".to_string()),
                workflow: None,
            },
        )
}

fn run_record() -> impl Strategy<Value = RunRecord> {
    (
        (any::<u32>(), text(), text(), text(), text(), map()),
        (any::<i32>(), any::<u32>(), any::<u64>(), any::<u64>()),
        (
            proptest::collection::btree_map(text(), decimal(), 0..3),
            proptest::option::of(decimal()),
            any::<i64>(),
        ),
        (text(), decimal(), any::<u64>(), any::<u64>()),
        (text(), any::<u32>(), any::<i64>()),
    )
        .prop_map(
            |(
                (v, job_id, name, command, user, labels),
                (priority, requested_slots, requested_cpu_millis, requested_memory_bytes),
                (hints, requested_time_s, submitted_at_ms),
                (worker_id, worker_speed, queue_wait_ms, runtime_ms),
                (outcome, attempt, finished_at_ms),
            )| RunRecord {
                v,
                job_id,
                name,
                command,
                user,
                labels,
                priority,
                requested_slots,
                requested_cpu_millis,
                requested_memory_bytes,
                hints,
                requested_time_s,
                submitted_at_ms,
                worker_id,
                worker_speed,
                queue_wait_ms,
                runtime_ms,
                outcome,
                attempt,
                finished_at_ms,
                peak_memory_bytes: runtime_ms.saturating_mul(7),
                cgroup_cpu_us: queue_wait_ms,
            },
        )
}

fn stored_model() -> impl Strategy<Value = StoredModel> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        text(),
        text(),
    )
        .prop_map(
            |(v, version, trained_at_ms, training_runs, metric, model_json)| StoredModel {
                v,
                version,
                trained_at_ms,
                training_runs,
                metrics: serde_json::json!({ "note": metric }),
                model_json,
            },
        )
}

/// encode → decode is the identity.
fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let back: T = decode(KEY, &encode(value)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

/// Decoding arbitrary bytes is `Ok` or `Corrupt` naming the key; never a panic.
fn decodes_or_is_corrupt<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode::<T>(KEY, bytes) {
        Ok(_) => Ok(()),
        Err(StoreError::Corrupt { key, .. }) => {
            prop_assert_eq!(key.as_bytes(), KEY);
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("unexpected error {other}"))),
    }
}

/// Every decoder, fed the same bytes.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    decodes_or_is_corrupt::<JobRecord>(bytes)?;
    decodes_or_is_corrupt::<WorkerInfo>(bytes)?;
    decodes_or_is_corrupt::<ScheduleRecord>(bytes)?;
    decodes_or_is_corrupt::<RunRecord>(bytes)?;
    decodes_or_is_corrupt::<StoredModel>(bytes)?;
    decodes_or_is_corrupt::<LeaderValue>(bytes)?;
    decodes_or_is_corrupt::<PendingEntry>(bytes)?;
    decodes_or_is_corrupt::<FinishedEntry>(bytes)?;
    decodes_or_is_corrupt::<serde_json::Value>(bytes)?;
    let text = String::from_utf8_lossy(bytes);
    let _ = text.parse::<JobId>();
    let keys = Keys::new("/augur");
    let _ = keys.job_id_of(&text);
    let _ = keys.worker_id_of(&text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn job_records_round_trip(job in job_record()) {
        round_trips(&job)?;
    }

    #[test]
    fn worker_registrations_round_trip(worker in worker_info()) {
        round_trips(&worker)?;
    }

    #[test]
    fn schedules_round_trip(schedule in schedule()) {
        round_trips(&schedule)?;
    }

    #[test]
    fn run_records_round_trip(run in run_record()) {
        round_trips(&run)?;
    }

    #[test]
    fn models_and_index_entries_round_trip(
        model in stored_model(),
        node_id in text(),
        address in text(),
        priority in any::<i32>(),
        not_before_ms in any::<i64>(),
        idempotency_key in proptest::option::of(text()),
    ) {
        round_trips(&model)?;
        round_trips(&LeaderValue { v: 1, node_id, address })?;
        round_trips(&PendingEntry { v: 1, priority, not_before_ms })?;
        round_trips(&FinishedEntry { v: 1, idempotency_key })?;
    }

    #[test]
    fn arbitrary_bytes_are_values_or_corrupt(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes)?;
    }

    /// Valid encodings damaged the way storage or a hostile writer would: cut
    /// short, one byte changed, or spliced into another record.
    #[test]
    fn damaged_records_are_values_or_corrupt(
        job in job_record(),
        worker in worker_info(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        for bytes in [encode(&job), encode(&worker)] {
            decode_all(&bytes[..cut.index(bytes.len() + 1)])?;
            let mut changed = bytes.clone();
            let at = flip.index(changed.len());
            changed[at] = byte;
            decode_all(&changed)?;
        }
        let mut spliced = encode(&job);
        spliced.truncate(cut.index(spliced.len() + 1));
        spliced.extend_from_slice(&encode(&worker));
        decode_all(&spliced)?;
    }

    /// Type confusion: one record's value under another record's key.
    #[test]
    fn a_record_of_another_type_is_corrupt_not_a_panic(
        job in job_record(),
        worker in worker_info(),
        run in run_record(),
    ) {
        decode_all(&encode(&job))?;
        decode_all(&encode(&worker))?;
        decode_all(&encode(&run))?;
        prop_assert!(decode::<WorkerInfo>(KEY, &encode(&job)).is_err());
        prop_assert!(decode::<JobRecord>(KEY, &encode(&worker)).is_err());
    }
}

/// Deeply nested JSON must not overflow the stack (serde_json's recursion
/// limit makes it an error).
#[test]
fn deeply_nested_values_are_corrupt() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        decode::<serde_json::Value>(KEY, deep.as_bytes()),
        Err(StoreError::Corrupt { .. })
    ));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    assert!(decode::<JobRecord>(KEY, deep_object.as_bytes()).is_err());
    assert!(decode::<StoredModel>(KEY, deep_object.as_bytes()).is_err());
}
