//! A job record as any stored value could decode it (hostile counters,
//! timestamps and retry policies included), pushed through the store codec
//! and then through a sequence of arbitrary events with the pure transition
//! function the leader applies. Invariants: no panic (overflow checks are on),
//! nothing leaves a terminal state, the attempt number never decreases.
#![no_main]

use arbitrary::Arbitrary;
use augur_core::job::{JobRecord, Usage};
use augur_core::transition::{apply, AttemptOutcome, AttemptReport, Event};
use augur_core::RunRecord;
use augur_fuzz::{worker_id_from, AnyJobRecord};
use augur_store::codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum AnyEvent {
    Assign {
        worker: String,
        epoch: i64,
        now_ms: i64,
    },
    Start {
        attempt: u32,
        now_ms: i64,
    },
    Finish {
        attempt: u32,
        outcome: u8,
        exit_code: Option<i32>,
        started_at_ms: i64,
        finished_at_ms: i64,
        runtime_ms: u64,
        now_ms: i64,
        jitter_sample: f64,
    },
    Lost {
        attempt: u32,
        now_ms: i64,
    },
    Cancel {
        now_ms: i64,
    },
    /// The event names the job's current attempt (the common, non-stale case).
    FinishCurrent {
        outcome: u8,
        now_ms: i64,
        jitter_sample: f64,
    },
}

fn event(any: AnyEvent, job: &JobRecord) -> Option<Event> {
    let outcome = |code: u8, exit_code: Option<i32>| match code % 4 {
        0 => AttemptOutcome::Exited {
            exit_code,
            signal: None,
        },
        1 => AttemptOutcome::TimedOut,
        2 => AttemptOutcome::Cancelled,
        _ => AttemptOutcome::StartFailed,
    };
    let report = |attempt, outcome, started_at_ms, finished_at_ms, runtime_ms| AttemptReport {
        attempt,
        outcome,
        started_at_ms,
        finished_at_ms,
        usage: Usage {
            runtime_ms,
            ..Usage::default()
        },
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        message: String::new(),
        outputs: Default::default(),
    };
    Some(match any {
        AnyEvent::Assign {
            worker,
            epoch,
            now_ms,
        } => Event::Assign {
            worker: worker_id_from(worker)?,
            epoch,
            now_ms,
        },
        AnyEvent::Start { attempt, now_ms } => Event::Start { attempt, now_ms },
        AnyEvent::Finish {
            attempt,
            outcome: code,
            exit_code,
            started_at_ms,
            finished_at_ms,
            runtime_ms,
            now_ms,
            jitter_sample,
        } => Event::Finish {
            report: report(
                attempt,
                outcome(code, exit_code),
                started_at_ms,
                finished_at_ms,
                runtime_ms,
            ),
            now_ms,
            jitter_sample,
        },
        AnyEvent::Lost { attempt, now_ms } => Event::Lost {
            attempt,
            reason: "lease expired".into(),
            now_ms,
        },
        AnyEvent::Cancel { now_ms } => Event::Cancel { now_ms },
        AnyEvent::FinishCurrent {
            outcome: code,
            now_ms,
            jitter_sample,
        } => Event::Finish {
            report: report(job.attempt, outcome(code, Some(1)), now_ms, now_ms, 0),
            now_ms,
            jitter_sample,
        },
    })
}

fuzz_target!(|input: (AnyJobRecord, Vec<AnyEvent>)| {
    let (record, events) = input;
    let record = record.into_record();
    // What the leader reads back is what the codec gives it.
    let Ok(mut job) = decode::<JobRecord>(b"/augur/jobs/fuzz", &encode(&record)) else {
        // Only non-finite floats fail to survive JSON; those cannot be stored.
        assert!(!record.spec.retry.multiplier.is_finite() || !record.spec.retry.jitter.is_finite());
        return;
    };
    for any in events.into_iter().take(64) {
        let Some(event) = event(any, &job) else {
            continue;
        };
        match apply(&job, &event) {
            Ok(next) => {
                assert!(
                    !job.state.is_terminal(),
                    "left terminal state {}",
                    job.state
                );
                assert!(next.attempt >= job.attempt, "attempt went backwards");
                if next.state.is_terminal() {
                    let _ = RunRecord::from_job(&next, 1.0);
                }
                job = next;
            }
            Err(_) => continue,
        }
    }
});
