use proptest::prelude::*;

use super::*;
use crate::ids::JobId;
use crate::spec::JobSpecInput;

fn job(max_attempts: u32) -> JobRecord {
    let mut input = JobSpecInput {
        command: "true".into(),
        ..Default::default()
    };
    input.retry.max_attempts = max_attempts;
    JobRecord::new(JobId::generate(), input.validate().unwrap(), 0)
}

fn worker() -> WorkerId {
    WorkerId::new("w1").unwrap()
}

fn report(attempt: u32, outcome: AttemptOutcome) -> AttemptReport {
    AttemptReport {
        attempt,
        outcome,
        started_at_ms: 1,
        finished_at_ms: 2,
        usage: Usage::default(),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        message: String::new(),
        outputs: Default::default(),
    }
}

fn exit(code: i32) -> AttemptOutcome {
    AttemptOutcome::Exited {
        exit_code: Some(code),
        signal: None,
    }
}

#[test]
fn happy_path() {
    let j = job(1);
    let j = apply(
        &j,
        &Event::Assign {
            worker: worker(),
            epoch: 7,
            now_ms: 1,
        },
    )
    .unwrap();
    assert_eq!((j.state, j.attempt, j.epoch), (JobState::Assigned, 1, 7));
    let j = apply(
        &j,
        &Event::Start {
            attempt: 1,
            now_ms: 2,
        },
    )
    .unwrap();
    let j = apply(
        &j,
        &Event::Finish {
            report: report(1, exit(0)),
            now_ms: 3,
            jitter_sample: 0.5,
        },
    )
    .unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.exit_code, Some(0));
}

#[test]
fn failure_retries_until_max_attempts() {
    let mut j = job(3);
    for attempt in 1..=3 {
        j = apply(
            &j,
            &Event::Assign {
                worker: worker(),
                epoch: 1,
                now_ms: 10,
            },
        )
        .unwrap();
        j = apply(
            &j,
            &Event::Finish {
                report: report(attempt, exit(1)),
                now_ms: 10,
                jitter_sample: 0.0,
            },
        )
        .unwrap();
    }
    assert_eq!(j.state, JobState::Failed);
    assert_eq!((j.attempt, j.failed_attempts), (3, 3));
}

#[test]
fn retry_waits_for_backoff() {
    let j = job(2);
    let j = apply(
        &j,
        &Event::Assign {
            worker: worker(),
            epoch: 1,
            now_ms: 0,
        },
    )
    .unwrap();
    let j = apply(
        &j,
        &Event::Finish {
            report: report(1, exit(2)),
            now_ms: 100,
            jitter_sample: 0.0,
        },
    )
    .unwrap();
    assert_eq!(j.state, JobState::Pending);
    assert_eq!(
        j.not_before_ms,
        100 + j.spec.retry.backoff_ms(1, 0.0) as i64
    );
    assert!(j.worker_id.is_none());
}

#[test]
fn stale_attempt_reports_are_refused() {
    let j = job(1);
    let j = apply(
        &j,
        &Event::Assign {
            worker: worker(),
            epoch: 1,
            now_ms: 0,
        },
    )
    .unwrap();
    let err = apply(
        &j,
        &Event::Finish {
            report: report(2, exit(0)),
            now_ms: 1,
            jitter_sample: 0.0,
        },
    );
    assert_eq!(
        err,
        Err(TransitionError::StaleAttempt {
            current: 1,
            reported: 2
        })
    );
}

#[test]
fn cancel_of_running_job_is_requested_then_final() {
    let j = job(5);
    let j = apply(
        &j,
        &Event::Assign {
            worker: worker(),
            epoch: 1,
            now_ms: 0,
        },
    )
    .unwrap();
    let j = apply(&j, &Event::Cancel { now_ms: 1 }).unwrap();
    assert!(j.cancel_requested && j.state == JobState::Assigned);
    // Even a failure exit does not retry a job whose cancel was requested.
    let j = apply(
        &j,
        &Event::Finish {
            report: report(1, exit(143)),
            now_ms: 2,
            jitter_sample: 0.0,
        },
    )
    .unwrap();
    assert_eq!(j.state, JobState::Cancelled);
}

#[test]
fn lost_attempts_are_retried_up_to_the_limit() {
    let mut j = job(1);
    for attempt in 1..=MAX_LOST_ATTEMPTS {
        j = apply(
            &j,
            &Event::Assign {
                worker: worker(),
                epoch: 1,
                now_ms: 0,
            },
        )
        .unwrap();
        j = apply(
            &j,
            &Event::Lost {
                attempt,
                reason: "lease expired".into(),
                now_ms: 1,
            },
        )
        .unwrap();
    }
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.lost_attempts, MAX_LOST_ATTEMPTS);
}

/// Runs one attempt of `j` to `outcome`.
fn run_attempt(j: &JobRecord, outcome: AttemptOutcome) -> JobRecord {
    let attempt = j.attempt + 1;
    let j = apply(
        j,
        &Event::Assign {
            worker: worker(),
            epoch: 1,
            now_ms: 1,
        },
    )
    .unwrap();
    apply(
        &j,
        &Event::Finish {
            report: report(attempt, outcome),
            now_ms: 2,
            jitter_sample: 0.0,
        },
    )
    .unwrap()
}

#[test]
fn oom_killed_counts_against_retries_and_says_so() {
    let j = run_attempt(&job(2), AttemptOutcome::OomKilled);
    assert_eq!(j.state, JobState::Pending, "retried: {}", j.message);
    assert_eq!(j.failed_attempts, 1);
    assert!(j.message.contains("oom_killed"), "{}", j.message);
    let j = run_attempt(&j, AttemptOutcome::OomKilled);
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.failed_attempts, 2);
    assert!(j.message.contains("(oom_killed"), "{}", j.message);
    assert!(j.message.contains("no attempts left"), "{}", j.message);
}

fn arb_event() -> impl Strategy<Value = Event> {
    let outcome = prop_oneof![
        (-3i32..3).prop_map(exit),
        Just(AttemptOutcome::TimedOut),
        Just(AttemptOutcome::Cancelled),
        Just(AttemptOutcome::StartFailed),
        Just(AttemptOutcome::OomKilled),
        Just(AttemptOutcome::Exited {
            exit_code: None,
            signal: Some(9)
        }),
    ];
    prop_oneof![
        (0i64..5).prop_map(|epoch| Event::Assign {
            worker: worker(),
            epoch,
            now_ms: 5
        }),
        (0u32..6).prop_map(|attempt| Event::Start { attempt, now_ms: 6 }),
        (0u32..6, outcome, 0.0f64..1.0).prop_map(|(attempt, outcome, jitter_sample)| {
            Event::Finish {
                report: report(attempt, outcome),
                now_ms: 7,
                jitter_sample,
            }
        }),
        (0u32..6).prop_map(|attempt| Event::Lost {
            attempt,
            reason: "gone".into(),
            now_ms: 8
        }),
        Just(Event::Cancel { now_ms: 9 }),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_for_any_event_sequence(
        max_attempts in 1u32..5,
        events in proptest::collection::vec(arb_event(), 0..40),
    ) {
        let mut j = job(max_attempts);
        for event in &events {
            let before = j.clone();
            match apply(&j, event) {
                Ok(next) => {
                    prop_assert!(!before.state.is_terminal(), "left terminal state {:?}", before.state);
                    prop_assert!(next.attempt >= before.attempt);
                    prop_assert!(next.attempt <= before.attempt + 1);
                    prop_assert!(next.failed_attempts <= next.spec.retry.max_attempts);
                    prop_assert!(next.lost_attempts <= MAX_LOST_ATTEMPTS);
                    prop_assert_eq!(next.state == JobState::Pending, next.worker_id.is_none() && !next.state.is_terminal() && !next.state.is_active());
                    if next.state.is_active() {
                        prop_assert!(next.worker_id.is_some());
                    }
                    if next.state.is_terminal() {
                        prop_assert!(next.finished_at_ms.is_some());
                    }
                    if before.cancel_requested {
                        prop_assert!(next.cancel_requested);
                        prop_assert!(next.state != JobState::Pending, "a cancelled job was requeued");
                    }
                    j = next;
                }
                Err(_) => prop_assert_eq!(&j, &before),
            }
        }
    }
}
