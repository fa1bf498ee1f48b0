//! Property and simulation tests of the leader's core, without etcd: random
//! event sequences (duplicated, reordered and stale worker messages, lost
//! streams and leases, impostor streams, unreadable results, cancels, time,
//! failed deliveries, and demotion: a new leader taking over from what the
//! store holds, the old one's uncommitted writes lost)
//! through the world in `sim`, which checks after every step that assignments
//! follow durable writes, no attempt is assigned twice, nothing leaves a
//! terminal state and the slot ledger matches the jobs out; then every job
//! must end once workers stay up.

use proptest::prelude::*;

use super::sim::{report, worker_id, worker_info, World};
use super::{AttemptKey, FromWorker, Input, Timing, ToWorker};
use augur_core::{JobState, WorkerId};

#[derive(Clone, Debug)]
enum Step {
    Submit {
        slots: u32,
        max_attempts: u32,
    },
    Commit,
    Advance(i64),
    Start(usize),
    Finish {
        worker: usize,
        exit: i32,
    },
    Unreadable(usize),
    Heartbeat(usize),
    Duplicate(usize),
    Detach(usize),
    Attach(usize),
    Deregister(usize),
    Reregister {
        worker: usize,
        new_lease: bool,
    },
    Impostor(usize),
    /// SIGTERM: the worker drains, says goodbye and exits.
    Leave(usize),
    Cancel(usize),
    DeliveryFailed(usize),
    Failover,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..=3, 1u32..=3).prop_map(|(slots, max_attempts)| Step::Submit { slots, max_attempts }),
        4 => Just(Step::Commit),
        2 => (0i64..20_000).prop_map(Step::Advance),
        2 => (0usize..3).prop_map(Step::Start),
        3 => (0usize..3, prop_oneof![Just(0), Just(1)]).prop_map(|(worker, exit)| Step::Finish { worker, exit }),
        1 => (0usize..3).prop_map(Step::Unreadable),
        1 => (0usize..3).prop_map(Step::Heartbeat),
        2 => (0usize..64).prop_map(Step::Duplicate),
        1 => (0usize..3).prop_map(Step::Detach),
        1 => (0usize..3).prop_map(Step::Attach),
        1 => (0usize..3).prop_map(Step::Deregister),
        1 => (0usize..3, any::<bool>()).prop_map(|(worker, new_lease)| Step::Reregister { worker, new_lease }),
        1 => (0usize..3).prop_map(Step::Impostor),
        1 => (0usize..3).prop_map(Step::Leave),
        1 => (0usize..32).prop_map(Step::Cancel),
        1 => (0usize..64).prop_map(Step::DeliveryFailed),
        1 => Just(Step::Failover),
    ]
}

const SLOTS: [u32; 3] = [1, 2, 3];

fn world() -> World {
    let mut world = World::new(&SLOTS, Vec::new(), Timing::default());
    for n in 0..SLOTS.len() {
        world.attach(&worker_id(n));
    }
    world
}

/// A world with one 3-slot job placed on the only worker that fits it (w2).
fn one_job_on_w2() -> (World, augur_core::JobId, WorkerId, AttemptKey) {
    let mut world = world();
    let id = world.submit(3, 1);
    world.advance(1);
    world.commit();
    let w = worker_id(2);
    let key = first_held(&world, &w).expect("assigned to the only worker with 3 slots");
    (world, id, w, key)
}

fn first_held(world: &World, w: &WorkerId) -> Option<AttemptKey> {
    world.holding.get(w).and_then(|h| h.first().copied())
}

fn apply(world: &mut World, step: Step) {
    match step {
        Step::Submit {
            slots,
            max_attempts,
        } => {
            world.submit(slots, max_attempts);
        }
        Step::Commit => world.commit(),
        Step::Advance(ms) => world.advance(ms),
        Step::Start(n) => {
            let w = worker_id(n);
            if let Some(key) = first_held(world, &w) {
                world.start(&w, key);
            }
        }
        Step::Finish { worker, exit } => {
            let w = worker_id(worker);
            if let Some(key) = first_held(world, &w) {
                world.holding.entry(w.clone()).or_default().remove(0);
                let report = report(key, exit, world.now.wall_ms);
                world.send_from(
                    &w,
                    FromWorker::Finished {
                        attempt: key,
                        report: Ok(Box::new(report)),
                        outcome: "exited",
                    },
                );
            }
        }
        Step::Unreadable(n) => {
            let w = worker_id(n);
            if let Some(key) = first_held(world, &w) {
                world.holding.entry(w.clone()).or_default().remove(0);
                world.send_from(
                    &w,
                    FromWorker::Finished {
                        attempt: key,
                        report: Err("no known outcome".into()),
                        outcome: "unknown",
                    },
                );
            }
        }
        Step::Heartbeat(n) => {
            let w = worker_id(n);
            let running = world.holding.get(&w).cloned().unwrap_or_default();
            world.send_from(&w, FromWorker::Heartbeat { running });
        }
        Step::Duplicate(i) => {
            if !world.sent_by_workers.is_empty() {
                let (w, msg) = world.sent_by_workers[i % world.sent_by_workers.len()].clone();
                // Replayed on the worker's current stream: results and
                // heartbeats may be re-sent; a drain or goodbye is said once
                // by the process that leaves and never reaches its successor.
                if !matches!(msg, FromWorker::Draining | FromWorker::Goodbye) {
                    world.send_from(&w, msg);
                }
            }
        }
        Step::Detach(n) => {
            let w = worker_id(n);
            if let Some(conn) = world.conn_of.remove(&w) {
                world.input(Input::Detached { worker: w, conn });
            }
        }
        Step::Attach(n) => {
            world.attach(&worker_id(n));
        }
        Step::Deregister(n) => {
            // The worker process dies with its lease: it holds nothing more.
            let w = worker_id(n);
            world.holding.remove(&w);
            if let Some(conn) = world.conn_of.remove(&w) {
                world.input(Input::Detached {
                    worker: w.clone(),
                    conn,
                });
            }
            world.input(Input::WorkerDeregistered(w));
        }
        Step::Reregister { worker, new_lease } => {
            let w = worker_id(worker);
            if new_lease {
                // The registration write the core asked for fails.
                world.fail_registration(&w);
            } else if let Some(lease) = world.leases.get(&w).copied() {
                // etcd replays the registration as it is.
                let info = worker_info(&w, SLOTS[worker], lease);
                world.input(Input::WorkerRegistered(Box::new(info)));
            }
        }
        Step::Impostor(n) => {
            // Another process with the same id and its own registration opens
            // a stream while the worker is attached: it must get nothing.
            let w = worker_id(n);
            if world.conn_of.contains_key(&w) {
                let conn = world.next_conn;
                world.next_conn += 1;
                let lease_id = world.leases[&w] + 7;
                world.input(Input::Attached {
                    worker: w.clone(),
                    conn,
                    running: Vec::new(),
                    lease_id,
                    announced: Box::new(worker_info(&w, SLOTS[n], 0)),
                });
                assert!(world.refused.contains(&conn), "impostor stream accepted");
            }
        }
        Step::Leave(n) => {
            let w = worker_id(n);
            world.send_from(&w, FromWorker::Draining);
            world.send_from(&w, FromWorker::Goodbye);
            world.holding.remove(&w);
            if let Some(conn) = world.conn_of.remove(&w) {
                world.input(Input::Detached { worker: w, conn });
            }
        }
        Step::Cancel(i) => {
            if !world.submitted.is_empty() {
                let id = world.submitted[i % world.submitted.len()];
                let reply = world.cancels_issued;
                world.cancels_issued += 1;
                world.input(Input::Cancel { id, reply });
            }
        }
        Step::Failover => world.failover(),
        Step::DeliveryFailed(i) => {
            let keys: Vec<AttemptKey> = world.assigned.iter().copied().collect();
            if !keys.is_empty() {
                let key = keys[i % keys.len()];
                if let Some(w) = world.store.get(&key.job).and_then(|j| j.worker_id.clone()) {
                    world.input(Input::DeliveryFailed {
                        worker: w,
                        attempt: key,
                    });
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn the_core_keeps_its_promises_under_any_event_order(steps in prop::collection::vec(step(), 1..120)) {
        let mut world = world();
        for step in steps {
            apply(&mut world, step);
        }
        world.settle(40);
        let unfinished = world.unfinished();
        prop_assert!(unfinished.is_empty(), "jobs never ended: {:?}", unfinished);
        // Every cancel was answered exactly once.
        let mut answers = world.cancel_answers.clone();
        answers.sort_unstable();
        let issued: Vec<u64> = (0..world.cancels_issued).collect();
        prop_assert_eq!(answers, issued);
    }
}

/// A worker's result with no readable outcome used to be neither applied nor
/// acknowledged, so the worker re-sent it on every reconnect forever.
#[test]
fn an_unreadable_result_is_acknowledged_and_its_attempt_runs_again() {
    let (mut world, id, w, key) = one_job_on_w2();
    world.holding.get_mut(&w).map(Vec::clear);
    world.send_from(
        &w,
        FromWorker::Finished {
            attempt: key,
            report: Err("no known outcome (outcome field 0)".into()),
            outcome: "unknown",
        },
    );
    let conn = world.conn_of[&w];
    assert!(
        world.inbox[&conn].contains(&ToWorker::Ack(key)),
        "an unreadable result must be acknowledged"
    );
    world.commit();
    let record = &world.store[&id];
    assert_eq!(record.state, JobState::Pending);
    assert_eq!(record.lost_attempts, 1);
    assert!(
        record.message.contains("unreadable result"),
        "{}",
        record.message
    );
    world.settle(10);
    assert_eq!(world.store[&id].state, JobState::Succeeded);
}

/// Two `augur worker --node-id w1` made every job fail after three lost
/// attempts: the second stream replaced the first over and over.
#[test]
fn a_second_process_with_the_same_worker_id_is_refused_and_jobs_still_succeed() {
    let mut world = world();
    let ids: Vec<_> = (0..4).map(|_| world.submit(1, 1)).collect();
    for _ in 0..6 {
        world.advance(1);
        world.commit();
        // The impostor (its own registration) tries to attach each round.
        for n in 0..3 {
            apply(&mut world, Step::Impostor(n));
        }
        for n in 0..3 {
            world.finish_all(&worker_id(n), 0);
        }
        world.commit();
    }
    for id in ids {
        let record = &world.store[&id];
        assert_eq!(record.state, JobState::Succeeded, "{}", record.message);
        assert_eq!(record.lost_attempts, 0);
    }
}

/// The same worker reconnecting before its old stream was seen closed is
/// refused until the old stream closes, then accepted; a stream naming no or
/// another registration never is.
#[test]
fn a_second_stream_waits_for_the_first_to_close_and_must_name_the_registration() {
    let mut world = world();
    let w = worker_id(0);
    let old = world.conn_of[&w];
    let attach = |world: &mut World, lease_id: i64| {
        let conn = world.next_conn;
        world.next_conn += 1;
        world.input(Input::Attached {
            worker: w.clone(),
            conn,
            running: Vec::new(),
            lease_id,
            announced: Box::new(worker_info(&w, 1, 0)),
        });
        conn
    };
    let lease = world.leases[&w];
    let early = attach(&mut world, lease);
    assert!(
        world.refused.contains(&early),
        "second live stream accepted"
    );
    assert!(!world.refused.contains(&old), "the open stream was dropped");
    world.conn_of.remove(&w);
    world.input(Input::Detached {
        worker: w.clone(),
        conn: old,
    });
    for wrong in [0, lease + 1] {
        let conn = attach(&mut world, wrong);
        assert!(
            world.refused.contains(&conn),
            "stream naming lease {wrong} accepted"
        );
    }
    let conn = attach(&mut world, lease);
    assert!(!world.refused.contains(&conn));
    assert!(world.inbox[&conn].contains(&ToWorker::Welcome { lease_id: lease }));
}

/// A lost attempt waited behind every younger job of its priority (its
/// `not_before` was reset to the requeue time).
#[test]
fn a_lost_attempt_keeps_its_place_ahead_of_younger_jobs() {
    let mut world = World::new(&[1], Vec::new(), Timing::default());
    let w = worker_id(0);
    world.attach(&w);
    let first = world.submit(1, 1);
    world.advance(1);
    world.commit();
    assert_eq!(first_held(&world, &w).map(|k| k.job), Some(first));
    world.advance(1_000);
    let younger: Vec<_> = (0..3).map(|_| world.submit(1, 1)).collect();
    // The worker dies with its lease; a new process attaches and the leader
    // registers it.
    apply(&mut world, Step::Deregister(0));
    world.commit();
    world.attach(&w);
    world.commit();
    world.advance(1);
    world.commit();
    let next = first_held(&world, &w).expect("something placed");
    assert_eq!(
        next.job, first,
        "the lost attempt goes first, not {younger:?}"
    );
    assert_eq!(next.attempt, 2);
}

/// `--slots 1000` stayed pending forever with an empty message.
#[test]
fn a_job_no_worker_can_fit_is_flagged_and_cleared_when_one_registers() {
    let mut world = world();
    let id = world.submit(1000, 1);
    world.advance(1);
    world.commit();
    assert_eq!(
        world.store[&id].message,
        "unschedulable: no worker has 1000 slots (largest 3)"
    );
    assert_eq!(world.core.gauges().unschedulable, 1);
    let big = WorkerId::new("big").expect("id");
    world.slots.insert(big.clone(), 1000);
    world.leases.insert(big.clone(), 9);
    world.input(Input::WorkerRegistered(Box::new(worker_info(
        &big, 1000, 9,
    ))));
    world.attach(&big);
    world.advance(1);
    world.commit();
    assert_eq!(world.core.gauges().unschedulable, 0);
    assert_eq!(first_held(&world, &big).map(|k| k.job), Some(id));
}

/// Takeover: a new leader with running work waits for the workers holding it;
/// one reconnects late (within the grace) and keeps its jobs, the other never
/// does and its jobs run elsewhere. Nothing is dispatched during the wait.
#[test]
fn takeover_waits_for_late_workers_and_requeues_the_absent() {
    let timing = Timing::default();
    let grace = timing.reconcile_grace_ms;
    let mut before = World::new(&[2, 2], Vec::new(), timing.clone());
    before.attach(&worker_id(0));
    before.attach(&worker_id(1));
    for _ in 0..4 {
        before.submit(1, 1);
    }
    before.advance(1);
    before.commit();
    let held0 = before.holding[&worker_id(0)].clone();
    let held1 = before.holding[&worker_id(1)].clone();
    assert_eq!((held0.len(), held1.len()), (2, 2));
    // A new leader loads what the store holds.
    let active: Vec<_> = before.store.values().cloned().collect();
    let mut world = World::new(&[2, 2], active, timing);
    world.submitted = before.submitted.clone();
    let queued = world.submit(1, 1);
    world.advance(grace / 2);
    world.commit();
    assert!(world.core.reconciling());
    assert!(
        world.assigned.is_empty(),
        "nothing dispatched while reconciling"
    );
    // Worker 0 comes back late but within the grace, with its attempts.
    world.holding.insert(worker_id(0), held0.clone());
    world.attach(&worker_id(0));
    world.advance(grace);
    world.commit();
    assert!(!world.core.reconciling());
    for key in &held0 {
        assert_eq!(world.store[&key.job].state, JobState::Assigned, "kept");
    }
    for key in &held1 {
        let record = &world.store[&key.job];
        assert_eq!(record.lost_attempts, 1, "requeued: {}", record.message);
    }
    world.settle(20);
    assert!(world.unfinished().is_empty());
    assert_eq!(world.store[&queued].state, JobState::Succeeded);
}

/// A cancel accepted while the job's worker was between streams went to the
/// dead stream and was never sent again: the job stayed running with
/// `cancel_requested` (found by an e2e run).
#[test]
fn a_cancel_made_while_the_worker_was_away_is_sent_when_it_reattaches() {
    let (mut world, id, w, key) = one_job_on_w2();
    world.start(&w, key);
    let old = world.conn_of.remove(&w).expect("attached");
    world.input(Input::Detached {
        worker: w.clone(),
        conn: old,
    });
    world.input(Input::Cancel { id, reply: 0 });
    world.cancels_issued += 1;
    world.commit();
    assert!(world.store[&id].cancel_requested);
    let conn = world.attach(&w);
    assert!(
        world.inbox[&conn].contains(&ToWorker::Cancel(key)),
        "the cancel is sent on the new stream"
    );
}
