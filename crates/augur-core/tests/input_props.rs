//! Property and regression tests of augur-core's decoders of external input
//! (issue 7, item 7; `fuzz/` fuzzes the same functions): job-spec files and
//! their validation, cron and duration text, ids and names, and the transition
//! function applied to records as hostile as a stored value can be.

use std::collections::BTreeMap;

use augur_core::job::{JobRecord, JobState};
use augur_core::schedule::{validate_name, Cron, MissedTicks};
use augur_core::spec::{parse_duration, JobSpecInput, ResourcesInput, RetryInput};
use augur_core::transition::{apply, AttemptOutcome, AttemptReport, Event};
use augur_core::{JobId, RunRecord, Usage, WorkerId};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.chars().take(30).collect())
}

fn spec_input() -> impl Strategy<Value = JobSpecInput> {
    let map = || proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_.]{0,8}", text(), 0..3);
    (
        (
            text(),
            "[a-z/]{1,20}",
            proptest::collection::vec(text(), 0..3),
        ),
        (map(), map(), map(), -2000i32..2000),
        (
            prop_oneof![Just(String::new()), Just("30s".to_string()), text()],
            0u32..200,
            prop_oneof![Just(String::new()), Just("1s".to_string()), text()],
            prop_oneof![
                Just(0.0),
                Just(2.0),
                (0u32..20_000).prop_map(|k| k as f64 / 1000.0)
            ],
        ),
        (0u32..2000, any::<u64>(), any::<u64>(), text()),
    )
        .prop_map(
            |(
                (name, command, args),
                (env, labels, constraints, priority),
                (timeout, max_attempts, initial_backoff, multiplier),
                (slots, cpu_millis, memory_bytes, idempotency_key),
            )| JobSpecInput {
                name,
                command,
                args,
                env,
                working_dir: String::new(),
                labels,
                priority,
                timeout,
                retry: RetryInput {
                    max_attempts,
                    initial_backoff,
                    max_backoff: String::new(),
                    multiplier,
                },
                resources: ResourcesInput {
                    slots,
                    cpu_millis,
                    memory_bytes,
                },
                idempotency_key,
                constraints,
            },
        )
}

/// A job record with every counter and timestamp as extreme as a stored value
/// may hold.
fn hostile_job(
    state: usize,
    counters: (u32, u32, u32),
    retry: (u32, u64, u64),
    times: (i64, i64),
) -> JobRecord {
    let input = JobSpecInput {
        command: "true".into(),
        ..Default::default()
    };
    let mut spec = input.validate().expect("minimal spec");
    spec.retry.max_attempts = retry.0;
    spec.retry.initial_backoff_ms = retry.1;
    spec.retry.max_backoff_ms = retry.2;
    spec.retry.multiplier = 10.0;
    let mut job = JobRecord::new(JobId(0u128.into()), spec, times.0);
    job.state = JobState::ALL[state % JobState::ALL.len()];
    (job.attempt, job.failed_attempts, job.lost_attempts) = counters;
    job.not_before_ms = times.1;
    if job.state.is_active() {
        job.worker_id = Some(WorkerId::new("w1").expect("valid"));
    }
    job
}

fn failed(attempt: u32) -> AttemptReport {
    AttemptReport {
        attempt,
        outcome: AttemptOutcome::Exited {
            exit_code: Some(1),
            signal: None,
        },
        started_at_ms: 0,
        finished_at_ms: 0,
        usage: Usage::default(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        message: String::new(),
        outputs: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes as a JSON or TOML spec file: a spec or an error, never a
    /// panic; a spec that parses validates or is refused naming a `spec.` field.
    #[test]
    fn spec_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut inputs = Vec::new();
        if let Ok(input) = serde_json::from_slice::<JobSpecInput>(&bytes) {
            inputs.push(input);
        }
        if let Ok(input) = toml::from_str::<JobSpecInput>(&String::from_utf8_lossy(&bytes)) {
            inputs.push(input);
        }
        for input in inputs {
            if let Err(e) = input.validate() {
                prop_assert!(e.field.starts_with("spec."), "{}", e);
            }
        }
    }

    /// A spec input survives a JSON and a TOML file round trip unchanged, and a
    /// validated spec survives the stored JSON form unchanged.
    #[test]
    fn spec_inputs_round_trip_through_files(input in spec_input()) {
        let json = serde_json::to_string(&input).expect("serialises");
        prop_assert_eq!(&serde_json::from_str::<JobSpecInput>(&json).expect("parses"), &input);
        let toml_text = toml::to_string(&input).expect("serialises");
        prop_assert_eq!(&toml::from_str::<JobSpecInput>(&toml_text).expect("parses"), &input);
        if let Ok(spec) = input.validate() {
            let stored = serde_json::to_vec(&spec).expect("serialises");
            prop_assert_eq!(serde_json::from_slice::<augur_core::JobSpec>(&stored).expect("parses"), spec.clone());
            if let Some(ms) = spec.timeout_ms {
                prop_assert!(ms >= 1);
            }
        }
    }

    /// Cron, duration, name, id and policy text never panics, and cron tick
    /// arithmetic stays inside the interval it was asked about.
    #[test]
    fn text_parsers_never_panic(
        text in "[-*/,?#LW0-9 A-Za-z]{0,40}",
        after in any::<i64>(),
        up_to in any::<i64>(),
    ) {
        if let Ok(cron) = Cron::parse(&text) {
            if let Some(next) = cron.next_after(after) {
                prop_assert!(next > after);
            }
            if let Some(latest) = cron.latest_in(after, up_to) {
                prop_assert!(latest > after && latest <= up_to);
            }
        }
        let _ = parse_duration("d", &text);
        let _ = validate_name(&text);
        let _ = text.parse::<MissedTicks>();
        let _ = text.parse::<JobState>();
        let _ = text.parse::<JobId>();
        let _ = WorkerId::new(text.clone());
    }

    /// Events applied to a record with extreme counters, backoffs and times
    /// (what a corrupt or hostile stored value decodes to) never panic.
    #[test]
    fn hostile_records_never_panic_the_state_machine(
        state in 0usize..7,
        counters in (prop_oneof![Just(u32::MAX), any::<u32>()], any::<u32>(), any::<u32>()),
        retry in (any::<u32>(), any::<u64>(), any::<u64>()),
        times in (any::<i64>(), any::<i64>()),
        now_ms in prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()],
        sample in 0.0f64..1.0,
    ) {
        let job = hostile_job(state, counters, retry, times);
        let events = [
            Event::Assign { worker: WorkerId::new("w2").expect("valid"), epoch: 1, now_ms },
            Event::Start { attempt: job.attempt, now_ms },
            Event::Finish { report: failed(job.attempt), now_ms, jitter_sample: sample },
            Event::Lost { attempt: job.attempt, reason: "gone".into(), now_ms },
            Event::Cancel { now_ms },
        ];
        for event in &events {
            if let Ok(next) = apply(&job, event) {
                prop_assert!(next.attempt >= job.attempt);
            }
        }
    }
}

/// Regression (found by fuzz target job_transitions): a stored record whose
/// counters or backoff are at their limits overflowed the transition
/// arithmetic and panicked the leader.
#[test]
fn extreme_counters_and_backoff_saturate() {
    let mut job = hostile_job(0, (u32::MAX, 0, 0), (1, 0, 0), (0, 0));
    let next = apply(
        &job,
        &Event::Assign {
            worker: WorkerId::new("w1").expect("valid"),
            epoch: 1,
            now_ms: 0,
        },
    )
    .expect("assigns");
    assert_eq!(next.attempt, u32::MAX);

    job = hostile_job(
        2,
        (3, u32::MAX - 2, u32::MAX),
        (u32::MAX, u64::MAX, u64::MAX),
        (0, 0),
    );
    let next = apply(
        &job,
        &Event::Finish {
            report: failed(3),
            now_ms: i64::MAX - 5,
            jitter_sample: 0.5,
        },
    )
    .expect("finishes");
    assert_eq!(next.state, JobState::Pending);
    assert_eq!(next.not_before_ms, i64::MAX);
    let next = apply(
        &job,
        &Event::Lost {
            attempt: 3,
            reason: "gone".into(),
            now_ms: 0,
        },
    )
    .expect("lost");
    assert_eq!(next.lost_attempts, u32::MAX);
    assert_eq!(next.state, JobState::Failed);
}

/// Regression: a sub-millisecond timeout ("500us") validated, then was stored
/// as 0 ms, which no attempt can meet and which re-validates as an error.
#[test]
fn sub_millisecond_timeouts_are_refused() {
    for timeout in ["500us", "999999ns", "0s"] {
        let input = JobSpecInput {
            command: "true".into(),
            timeout: timeout.into(),
            ..Default::default()
        };
        let err = input.validate().expect_err(timeout);
        assert_eq!(err.field, "spec.timeout", "{timeout}");
    }
    let input = JobSpecInput {
        command: "true".into(),
        timeout: "1ms".into(),
        labels: BTreeMap::new(),
        ..Default::default()
    };
    assert_eq!(input.validate().expect("1ms is valid").timeout_ms, Some(1));
}

/// Regression (found by fuzz target job_transitions): a finished record with
/// timestamps far apart overflowed the queue-wait and runtime subtraction when
/// it became a run record.
#[test]
fn run_records_of_extreme_timestamps_saturate() {
    let mut job = hostile_job(4, (1, 1, 0), (1, 0, 0), (i64::MIN, 0));
    job.worker_id = Some(WorkerId::new("w1").expect("valid"));
    job.started_at_ms = Some(i64::MAX);
    job.finished_at_ms = Some(i64::MIN);
    let run = RunRecord::from_job(&job, 1.0).expect("a finished job");
    assert_eq!(run.queue_wait_ms, i64::MAX as u64);
    assert_eq!(run.runtime_ms, 0);
    let mut report = failed(1);
    report.started_at_ms = i64::MIN;
    report.finished_at_ms = i64::MAX;
    let run = RunRecord::from_attempt(&job, &WorkerId::new("w1").expect("valid"), 1.0, &report);
    assert_eq!(run.runtime_ms, i64::MAX as u64);
}
