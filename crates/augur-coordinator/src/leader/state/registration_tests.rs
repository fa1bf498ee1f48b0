//! Registrations the leader holds for workers (workers have no etcd access):
//! written when a worker attaches without one, renewed by its heartbeats,
//! written again when etcd lost the lease while the stream stayed up, marked
//! draining when the worker says so, and released at its goodbye.

use super::sim::{worker_id, World};
use super::{ConnId, FromWorker, Input, Timing, ToWorker};
use augur_core::{JobId, JobState, WorkerId};

/// One 2-slot worker, registered under lease 100 but not attached.
fn one_worker() -> World {
    World::new(&[2], Vec::new(), Timing::default())
}

/// That worker attached (on the returned connection) and running one job.
fn one_job_placed() -> (World, WorkerId, JobId, ConnId) {
    let mut world = one_worker();
    let w = worker_id(0);
    let conn = world.attach(&w);
    let id = world.submit(1, 1);
    world.advance(1);
    world.commit();
    (world, w, id, conn)
}

#[test]
fn an_attached_worker_without_a_registration_is_registered_by_the_leader() {
    let mut world = one_worker();
    let w = worker_id(0);
    // Its registration lapsed while nothing was attached.
    world.input(Input::WorkerDeregistered(w.clone()));
    let conn = world.attach(&w);
    assert_eq!(
        world.registering.len(),
        1,
        "the leader asks for a registration"
    );
    assert_eq!(world.registering[0].lease_id, 0, "under a new lease");
    assert_eq!(world.registering[0].slots, 2);
    // Not placeable until the registration is durable.
    let id = world.submit(1, 1);
    world.advance(1);
    assert!(world.uncommitted.iter().all(|(r, _)| r.worker_id.is_none()));
    world.commit();
    let lease = world.leases[&w];
    assert_ne!(lease, 100);
    assert!(world.inbox[&conn].contains(&ToWorker::Registered(lease)));
    world.advance(1);
    world.commit();
    assert_eq!(world.store[&id].worker_id.as_ref(), Some(&w));
}

#[test]
fn a_reattaching_worker_keeps_its_registration_and_heartbeats_renew_it() {
    let mut world = one_worker();
    let w = worker_id(0);
    let conn = world.attach(&w);
    assert!(world.registering.is_empty(), "its registration is live");
    assert!(world.inbox[&conn].contains(&ToWorker::Welcome { lease_id: 100 }));
    assert_eq!(world.renewed, [100], "adopted at once");
    world.send_from(
        &w,
        FromWorker::Heartbeat {
            running: Vec::new(),
        },
    );
    world.send_from(
        &w,
        FromWorker::Heartbeat {
            running: Vec::new(),
        },
    );
    assert_eq!(world.renewed, [100, 100, 100]);
    // A stream that is not the attached one renews nothing.
    world.input(Input::Message {
        worker: w.clone(),
        conn: conn + 50,
        msg: FromWorker::Heartbeat {
            running: Vec::new(),
        },
    });
    assert_eq!(world.renewed.len(), 3);
}

#[test]
fn a_lease_lost_while_the_stream_is_up_is_registered_again_and_keeps_the_work() {
    let (mut world, w, id, conn) = one_job_placed();
    // etcd lost the lease (an outage), not the worker.
    world.input(Input::WorkerDeregistered(w.clone()));
    assert_eq!(world.registering.len(), 1);
    world.commit();
    let lease = world.leases[&w];
    assert!(world.inbox[&conn].contains(&ToWorker::Registered(lease)));
    // Past the lease grace, the worker confirming what it runs.
    for _ in 0..3 {
        world.advance(5_000);
        let running = world.holding.get(&w).cloned().unwrap_or_default();
        world.send_from(&w, FromWorker::Heartbeat { running });
    }
    world.commit();
    assert_eq!(world.store[&id].attempt, 1, "the attempt was not lost");
    assert_eq!(world.store[&id].state, JobState::Assigned);
}

#[test]
fn a_failed_registration_is_retried_and_the_worker_given_up_after_the_grace() {
    let (mut world, w, id, _) = one_job_placed();
    world.input(Input::WorkerDeregistered(w.clone()));
    world.fail_registration(&w);
    assert!(world.registering.is_empty());
    world.advance(1_500);
    assert_eq!(world.registering.len(), 1, "retried after a pause");
    world.fail_registration(&w);
    for _ in 0..10 {
        world.advance(1_000);
        world.fail_registration(&w);
    }
    world.commit();
    assert_eq!(world.store[&id].state, JobState::Pending, "requeued");
    assert!(
        world.store[&id].message.contains("re-register"),
        "{}",
        world.store[&id].message
    );
}

#[test]
fn a_draining_worker_is_marked_and_its_goodbye_requeues_what_it_held_at_once() {
    let (mut world, w, id, _) = one_job_placed();
    world.send_from(&w, FromWorker::Draining);
    world.commit();
    let draining = world.core.workers[&w].info.as_ref().map(|i| i.draining);
    assert_eq!(draining, Some(true), "the registration says draining");
    let other = world.submit(1, 1);
    world.advance(1);
    world.commit();
    assert_eq!(world.store[&other].state, JobState::Pending, "no new work");
    world.send_from(&w, FromWorker::Goodbye);
    world.commit();
    assert!(
        world.core.workers[&w].info.is_none(),
        "registration released"
    );
    assert_eq!(
        world.store[&id].state,
        JobState::Pending,
        "requeued at once"
    );
    assert_eq!(world.store[&id].attempt, 1);
}

#[test]
fn a_job_bigger_than_every_reported_capacity_is_flagged_unschedulable() {
    let mut world = one_worker();
    let w = worker_id(0);
    world.attach(&w);
    let mut info = super::sim::worker_info(&w, 2, world.leases[&w]);
    info.capacity = Some(augur_core::Capacity {
        cpu_millis: 2_000,
        memory_bytes: 1 << 30,
    });
    world.input(Input::WorkerRegistered(Box::new(info)));
    let mut record = super::sim::job(0, 1, 1, world.now.wall_ms);
    record.spec.resources.memory_bytes = 8 << 30;
    let id = record.id;
    world.store.insert(id, record.clone());
    world.submitted.push(id);
    world.input(Input::Submitted(Box::new(record)));
    world.advance(1);
    world.commit();
    let message = &world.store[&id].message;
    assert!(
        message.starts_with("unschedulable: no worker has 8589934592 bytes of memory"),
        "{message}"
    );
    assert_eq!(world.store[&id].state, JobState::Pending);
}
