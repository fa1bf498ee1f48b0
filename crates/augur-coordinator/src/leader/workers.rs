//! Worker liveness as the leader sees it: registrations coming and going,
//! streams attaching, leases expiring (with a grace period while the stream is
//! up), assignments a worker never confirmed, and takeover reconciliation.

use std::collections::HashSet;
use std::time::Instant;

use augur_core::{JobId, WorkerId};
use augur_proto::v1 as pb;
use augur_proto::v1::coordinator_message::Kind as Out;
use augur_store::WorkerEvent;
use tracing::{info, warn};

use super::brain::{Brain, Conn, ASSIGN_REPORT_GRACE};
use super::dispatch::worker_spec;
use super::WorkerTx;

impl Brain {
    pub(super) fn worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Up(info) => {
                let id = info.id.clone();
                let entry = self.workers.entry(id.clone()).or_default();
                let newly_draining =
                    info.draining && !entry.info.as_ref().is_some_and(|old| old.draining);
                if newly_draining {
                    if let Some(conn) = &entry.conn {
                        let drain = pb::CoordinatorMessage {
                            kind: Some(Out::Drain(pb::Drain {})),
                        };
                        let _ = conn.tx.send(Ok(drain));
                    }
                    info!(worker_id = %id, running = entry.attempts.len(), "worker draining: no new placements");
                }
                entry.lease_lost_at = None;
                let new_incarnation = entry
                    .info
                    .as_ref()
                    .is_some_and(|old| old.lease_id != info.lease_id);
                self.scheduler.worker_up(id.clone(), worker_spec(&info));
                entry.info = Some(info);
                if new_incarnation {
                    info!(worker_id = %id, "worker re-registered under a new lease");
                }
                self.sync_availability(&id);
            }
            WorkerEvent::Down(id) => {
                let Some(entry) = self.workers.get_mut(&id) else {
                    return;
                };
                entry.info = None;
                if entry.conn.is_some() && !entry.attempts.is_empty() {
                    // Its stream is alive: etcd lost the lease (an etcd outage,
                    // a pause), not the worker. Wait for it to re-register.
                    entry.lease_lost_at = Some(Instant::now());
                    self.scheduler.set_worker_available(&id, false);
                    warn!(worker_id = %id, jobs = entry.attempts.len(),
                          grace_ms = self.settings.reconcile_grace.as_millis() as u64,
                          "worker lease expired while its stream is up; waiting for it to re-register");
                } else {
                    self.worker_gone(&id, "worker lease expired");
                }
            }
        }
    }

    pub(super) fn attached(&mut self, worker: WorkerId, conn: u64, hello: pb::Hello, tx: WorkerTx) {
        let welcome = pb::CoordinatorMessage {
            kind: Some(Out::Welcome(pb::Welcome {
                leader: self.settings.node_id.clone(),
                epoch: self.fence.epoch(),
            })),
        };
        let _ = tx.send(Ok(welcome));
        let entry = self.workers.entry(worker.clone()).or_default();
        entry.conn = Some(Conn { id: conn, tx });
        let placeable = entry.placeable();
        self.scheduler.set_worker_available(&worker, placeable);
        let reported: HashSet<(String, u32)> = hello
            .running
            .iter()
            .map(|a| (a.job_id.clone(), a.attempt))
            .collect();
        let unknown: Vec<JobId> = entry
            .attempts
            .keys()
            .filter(|id| {
                let attempt = self.jobs.get(id).map_or(0, |j| j.attempt);
                !reported.contains(&(id.to_string(), attempt))
            })
            .copied()
            .collect();
        info!(worker_id = %worker, running = hello.running.len(), "worker attached");
        for job in unknown {
            if let Some(attempt) = self.jobs.get(&job).map(|j| j.attempt) {
                self.lose(
                    &job,
                    attempt,
                    &worker,
                    "worker does not know the attempt after reconnecting",
                );
            }
        }
    }

    /// Assignments that the worker's heartbeats never confirmed are presumed lost.
    /// The worker is gone: its attempts are lost and requeued.
    pub(super) fn worker_gone(&mut self, id: &WorkerId, reason: &str) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        entry.lease_lost_at = None;
        let lost: Vec<JobId> = entry.attempts.keys().copied().collect();
        self.scheduler.worker_removed(id);
        warn!(worker_id = %id, jobs = lost.len(), reason, "worker gone; requeuing its jobs");
        for job in lost {
            if let Some(attempt) = self.jobs.get(&job).map(|j| j.attempt) {
                self.lose(&job, attempt, id, reason);
            }
        }
    }

    /// Workers whose lease expired with their stream up and that did not
    /// re-register within the grace period are treated as gone.
    pub(super) fn expire_lease_grace(&mut self) {
        let grace = self.settings.reconcile_grace;
        let expired: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, e)| {
                e.info.is_none() && e.lease_lost_at.is_some_and(|t| t.elapsed() >= grace)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.worker_gone(&id, "worker did not re-register after its lease expired");
        }
    }

    pub(super) fn check_unreported(&mut self) {
        let mut stale = Vec::new();
        for (worker, entry) in &self.workers {
            if entry.conn.is_none() {
                continue;
            }
            for (job, sent) in &entry.attempts {
                if sent.elapsed() > ASSIGN_REPORT_GRACE {
                    stale.push((worker.clone(), *job));
                }
            }
        }
        for (worker, job) in stale {
            if let Some(attempt) = self.jobs.get(&job).map(|j| j.attempt) {
                self.lose(
                    &job,
                    attempt,
                    &worker,
                    "worker has not reported the attempt",
                );
            }
        }
    }

    pub(super) fn finish_reconcile_if_done(&mut self) {
        let Some(until) = self.reconcile_until else {
            return;
        };
        let waiting = self
            .workers
            .values()
            .any(|e| !e.attempts.is_empty() && e.conn.is_none());
        if waiting && Instant::now() < until {
            return;
        }
        self.reconcile_until = None;
        // Attached but not registered (its lease lapsed in an etcd outage):
        // alive, so it gets the same grace to re-register as during a term.
        for entry in self.workers.values_mut() {
            if entry.conn.is_some() && entry.info.is_none() && !entry.attempts.is_empty() {
                entry.lease_lost_at.get_or_insert_with(Instant::now);
            }
        }
        let orphans: Vec<(WorkerId, JobId)> = self
            .workers
            .iter()
            .filter(|(_, e)| e.conn.is_none())
            .flat_map(|(w, e)| e.attempts.keys().map(move |j| (w.clone(), *j)))
            .collect();
        info!(orphans = orphans.len(), "reconciliation done; dispatching");
        for (worker, job) in orphans {
            if let Some(attempt) = self.jobs.get(&job).map(|j| j.attempt) {
                self.lose(
                    &job,
                    attempt,
                    &worker,
                    "worker did not reconnect after leader change",
                );
            }
        }
    }
}
