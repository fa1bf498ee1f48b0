//! Worker liveness as the core sees it: registrations coming and going,
//! streams attaching (one live stream per worker id, bound to its
//! registration), leases expiring (with a grace period while the stream is
//! up), assignments a worker never confirmed, and takeover reconciliation.
//!
//! Workers hold no etcd access: the leader registers each attached worker
//! ([`Effect::Register`]) under a lease it renews on every heartbeat
//! ([`Effect::RenewLease`]). A worker whose heartbeats stop loses its lease
//! one TTL later and its registration disappears, which the registry watch
//! reports as [`Input::WorkerDeregistered`](super::Input) as before.

use std::collections::{HashMap, HashSet};

use augur_core::{JobId, WorkerId, WorkerInfo};

use super::dispatch::worker_spec;
use super::{AttemptKey, ConnId, Effect, LeaderState, Now, Observation, ToWorker};

#[derive(Default, Debug)]
pub(crate) struct WorkerEntry {
    pub info: Option<WorkerInfo>,
    pub conn: Option<ConnId>,
    /// Jobs with an attempt out on this worker, and when (monotonic ms) it was
    /// sent or last confirmed by a heartbeat.
    pub attempts: HashMap<JobId, i64>,
    /// Set (monotonic ms) when its lease expired while its stream was still up
    /// (etcd trouble rather than a dead worker): it gets a grace period to
    /// re-register.
    pub lease_lost_at: Option<i64>,
    /// The registration its stream asked for (lease id not set).
    pub announced: Option<WorkerInfo>,
    /// A registration write is in flight.
    pub registering: bool,
    /// No registration attempt before this monotonic instant (after a failure).
    pub register_after: i64,
    /// It said goodbye: its registration ends now, not after a grace.
    pub leaving: bool,
}

/// How long after a failed registration write the next is tried.
const REGISTER_RETRY_MS: i64 = 1_000;

/// How a worker looks from outside.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WorkerView {
    pub info: WorkerInfo,
    pub running: u32,
    pub state: WorkerState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkerState {
    Ready,
    Disconnected,
    Draining,
}

impl WorkerEntry {
    pub(super) fn placeable(&self) -> bool {
        self.conn.is_some()
            && !self.leaving
            && self.info.as_ref().is_some_and(|i| !i.draining)
            && !self.announced.as_ref().is_some_and(|a| a.draining)
    }

    pub(super) fn view(&self) -> Option<WorkerView> {
        let info = self.info.as_ref()?;
        let state = if info.draining {
            WorkerState::Draining
        } else if self.conn.is_some() {
            WorkerState::Ready
        } else {
            WorkerState::Disconnected
        };
        Some(WorkerView {
            info: info.clone(),
            running: self.attempts.len() as u32,
            state,
        })
    }
}

impl<R> LeaderState<R> {
    /// A registration known when the term starts: not placeable until it
    /// attaches.
    pub(super) fn register(&mut self, info: WorkerInfo) {
        let id = info.id.clone();
        self.scheduler.worker_up(id.clone(), worker_spec(&info));
        self.scheduler.set_worker_available(&id, false);
        self.workers.entry(id).or_default().info = Some(info);
    }

    pub(super) fn registered(&mut self, info: WorkerInfo, _now: Now) {
        let id = info.id.clone();
        let entry = self.workers.entry(id.clone()).or_default();
        let newly_draining = info.draining && !entry.info.as_ref().is_some_and(|old| old.draining);
        let running = entry.attempts.len();
        entry.lease_lost_at = None;
        entry.registering = false;
        let lease = info.lease_id;
        let new_lease = entry.info.as_ref().map(|i| i.lease_id) != Some(lease);
        self.scheduler.worker_up(id.clone(), worker_spec(&info));
        entry.info = Some(info);
        if new_lease {
            self.send(&id, ToWorker::Registered(lease));
        }
        if newly_draining {
            self.send(&id, ToWorker::Drain);
            self.observe(Observation::WorkerDraining {
                worker: id.clone(),
                running,
            });
        }
        self.sync_availability(&id);
        self.unschedulable_may_change();
    }

    pub(super) fn deregistered(&mut self, id: &WorkerId, now: Now) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        entry.info = None;
        if entry.conn.is_some() && !entry.leaving {
            // Its stream is alive: etcd lost the lease (an outage, a pause),
            // not the worker. Register it again, and give that a grace.
            entry.lease_lost_at = Some(now.mono_ms);
            self.scheduler.set_worker_available(id, false);
            self.request_registration(id, now);
        } else {
            self.worker_gone(id, "worker lease expired", now);
        }
        self.unschedulable_may_change();
    }

    /// A stream opened. One live stream per worker id: a second one is
    /// refused while the first is open (the same worker reconnecting before
    /// its old stream was seen closed just retries a moment later). A stream
    /// must name the registration the leader knows for the id (its lease), so
    /// a second process started with the same id cannot take the work of the
    /// registered one; before any registration is known it is accepted.
    pub(super) fn attached(
        &mut self,
        worker: WorkerId,
        conn: ConnId,
        running: Vec<AttemptKey>,
        lease_id: i64,
        announced: WorkerInfo,
        now: Now,
    ) {
        let entry = self.workers.entry(worker.clone()).or_default();
        let registered_lease = entry.info.as_ref().map(|i| i.lease_id);
        let refusal = match (entry.conn, registered_lease) {
            (Some(_), _) => Some(format!(
                "worker id {worker} is already attached on another stream: is a second worker \
                 running with --node-id {worker}?"
            )),
            (None, Some(registered)) if lease_id != registered => Some(format!(
                "worker id {worker} is registered under lease {registered:x} but this stream \
                 names lease {lease_id:x}: is a second worker running with --node-id {worker}?"
            )),
            _ => None,
        };
        if let Some(reason) = refusal {
            self.effects.push(Effect::Refuse {
                conn,
                reason: reason.clone(),
            });
            self.observe(Observation::AttachRefused { worker, reason });
            return;
        }
        entry.conn = Some(conn);
        entry.leaving = false;
        let registered = entry.info.clone();
        entry.announced = Some(announced.clone());
        self.effects.push(Effect::Send {
            conn,
            msg: ToWorker::Welcome {
                lease_id: registered.as_ref().map_or(0, |i| i.lease_id),
            },
        });
        match registered {
            // Its registration is live (a reconnect, or a worker a new leader
            // adopted): keep the lease, and rewrite the registration only if
            // what the worker offers changed (a restart with new settings).
            Some(info) => {
                self.effects.push(Effect::RenewLease(info.lease_id));
                if !same_offer(&info, &announced) {
                    let entry = self.workers.entry(worker.clone()).or_default();
                    entry.registering = true;
                    self.effects.push(Effect::Register(Box::new(WorkerInfo {
                        lease_id: info.lease_id,
                        registered_at_ms: info.registered_at_ms,
                        draining: info.draining || announced.draining,
                        ..announced
                    })));
                }
            }
            None => self.request_registration(&worker, now),
        }
        self.sync_availability(&worker);
        let reported: HashSet<AttemptKey> = running.into_iter().collect();
        let unknown: Vec<AttemptKey> = self
            .workers
            .get(&worker)
            .map(|e| {
                e.attempts
                    .keys()
                    .filter_map(|id| {
                        let attempt = self.jobs.get(id)?.attempt;
                        let key = AttemptKey { job: *id, attempt };
                        (!reported.contains(&key)).then_some(key)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for key in unknown {
            self.lose(
                key,
                &worker,
                "worker does not know the attempt after reconnecting",
                now,
            );
        }
        // A cancel accepted while the worker was between streams went nowhere:
        // send it again for every attempt it still runs.
        let to_cancel: Vec<AttemptKey> = reported
            .iter()
            .filter(|key| {
                self.jobs.get(&key.job).is_some_and(|j| {
                    j.cancel_requested
                        && j.attempt == key.attempt
                        && j.state.is_active()
                        && j.worker_id.as_ref() == Some(&worker)
                })
            })
            .copied()
            .collect();
        for key in to_cancel {
            self.send(&worker, ToWorker::Cancel(key));
        }
    }

    pub(super) fn detached(&mut self, worker: &WorkerId, conn: ConnId, now: Now) {
        let Some(entry) = self.workers.get_mut(worker) else {
            return;
        };
        if entry.conn != Some(conn) {
            return;
        }
        entry.conn = None;
        let registered = entry.info.is_some();
        self.scheduler.set_worker_available(worker, false);
        if !registered {
            self.worker_gone(worker, "worker lease expired and its stream closed", now);
        }
    }

    /// Asks the shell to register an attached worker under a new lease,
    /// unless a write is in flight or waits after a failure.
    pub(super) fn request_registration(&mut self, id: &WorkerId, now: Now) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        let Some(announced) = entry.announced.clone() else {
            return;
        };
        if entry.conn.is_none()
            || entry.info.is_some()
            || entry.registering
            || entry.leaving
            || now.mono_ms < entry.register_after
        {
            return;
        }
        entry.registering = true;
        self.effects.push(Effect::Register(Box::new(WorkerInfo {
            lease_id: 0,
            registered_at_ms: now.wall_ms,
            ..announced
        })));
    }

    pub(super) fn registration_failed(&mut self, id: &WorkerId, now: Now) {
        if let Some(entry) = self.workers.get_mut(id) {
            entry.registering = false;
            entry.register_after = now.mono_ms + REGISTER_RETRY_MS;
        }
    }

    /// Attached workers without a registration (a failed write, or a lease
    /// lost in an etcd outage) are registered again.
    pub(super) fn retry_registrations(&mut self, now: Now) {
        let waiting: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, e)| e.conn.is_some() && e.info.is_none() && !e.registering)
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            self.request_registration(&id, now);
        }
    }

    /// A heartbeat: the worker is alive, so its lease is renewed.
    pub(super) fn heartbeat(&mut self, id: &WorkerId) {
        if let Some(lease) = self
            .workers
            .get(id)
            .and_then(|e| e.info.as_ref())
            .map(|i| i.lease_id)
        {
            self.effects.push(Effect::RenewLease(lease));
        }
    }

    /// The worker drains (SIGTERM): its registration says so, so it gets no
    /// new work and `augur workers` shows it.
    pub(super) fn worker_draining(&mut self, id: &WorkerId) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        if let Some(announced) = entry.announced.as_mut() {
            announced.draining = true;
        }
        if entry.info.as_ref().is_some_and(|i| !i.draining) {
            self.effects.push(Effect::MarkDraining(id.clone()));
        }
        self.scheduler.set_worker_available(id, false);
    }

    /// The worker leaves after its drain: its lease is released now, and what
    /// it still held is requeued once the registration is gone.
    pub(super) fn goodbye(&mut self, id: &WorkerId) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        entry.leaving = true;
        if let Some(lease) = entry.info.as_ref().map(|i| i.lease_id) {
            self.effects.push(Effect::ReleaseLease(lease));
        }
        self.scheduler.set_worker_available(id, false);
    }

    pub(super) fn sync_availability(&mut self, id: &WorkerId) {
        let placeable = self.workers.get(id).is_some_and(|e| e.placeable());
        self.scheduler.set_worker_available(id, placeable);
    }

    /// The worker is gone: its attempts are lost and requeued.
    pub(super) fn worker_gone(&mut self, id: &WorkerId, reason: &str, now: Now) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        entry.lease_lost_at = None;
        let lost: Vec<JobId> = entry.attempts.keys().copied().collect();
        if entry.conn.is_none() && entry.info.is_none() {
            self.workers.remove(id);
        }
        self.observe(Observation::WorkerGone {
            worker: id.clone(),
            jobs: lost.len(),
            reason: reason.to_string(),
        });
        for job in lost {
            if let Some(attempt) = self.jobs.get(&job).map(|j| j.attempt) {
                self.lose(AttemptKey { job, attempt }, id, reason, now);
            }
        }
        self.scheduler.worker_removed(id);
    }

    /// Workers whose lease expired with their stream up and that did not
    /// re-register within the grace period are treated as gone.
    pub(super) fn expire_lease_grace(&mut self, now: Now) {
        let grace = self.timing.reconcile_grace_ms;
        let expired: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, e)| {
                e.info.is_none() && e.lease_lost_at.is_some_and(|t| now.mono_ms - t >= grace)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.worker_gone(
                &id,
                "worker did not re-register after its lease expired",
                now,
            );
        }
    }

    /// Assignments that the worker's heartbeats never confirmed are presumed
    /// lost.
    pub(super) fn check_unreported(&mut self, now: Now) {
        let grace = self.timing.assign_report_grace_ms;
        let mut stale = Vec::new();
        for (worker, entry) in &self.workers {
            if entry.conn.is_none() {
                continue;
            }
            for (job, sent) in &entry.attempts {
                if now.mono_ms - sent > grace {
                    if let Some(j) = self.jobs.get(job) {
                        let key = AttemptKey {
                            job: *job,
                            attempt: j.attempt,
                        };
                        stale.push((worker.clone(), key));
                    }
                }
            }
        }
        for (worker, key) in stale {
            self.lose(key, &worker, "worker has not reported the attempt", now);
        }
    }

    /// A new leader dispatches once every worker holding work reconnected, or
    /// the grace ran out; attempts of workers that did not are requeued.
    pub(super) fn finish_reconcile_if_done(&mut self, now: Now) {
        let Some(until) = self.reconcile_until else {
            return;
        };
        let waiting = self
            .workers
            .values()
            .any(|e| !e.attempts.is_empty() && e.conn.is_none());
        if waiting && now.mono_ms < until {
            return;
        }
        self.reconcile_until = None;
        // Attached but not registered (its lease lapsed in an etcd outage):
        // alive, so it gets the same grace to re-register as during a term.
        for entry in self.workers.values_mut() {
            if entry.conn.is_some() && entry.info.is_none() && !entry.attempts.is_empty() {
                entry.lease_lost_at.get_or_insert(now.mono_ms);
            }
        }
        let orphans: Vec<(WorkerId, JobId)> = self
            .workers
            .iter()
            .filter(|(_, e)| e.conn.is_none())
            .flat_map(|(w, e)| e.attempts.keys().map(move |j| (w.clone(), *j)))
            .collect();
        self.observe(Observation::Reconciled {
            orphans: orphans.len(),
        });
        for (worker, job) in orphans {
            if let Some(attempt) = self.jobs.get(&job).map(|j| j.attempt) {
                self.lose(
                    AttemptKey { job, attempt },
                    &worker,
                    "worker did not reconnect after leader change",
                    now,
                );
            }
        }
    }
}

/// Whether a live registration still says what the worker now offers.
fn same_offer(registered: &WorkerInfo, announced: &WorkerInfo) -> bool {
    registered.slots == announced.slots
        && registered.labels == announced.labels
        && registered.executor == announced.executor
        && registered.version == announced.version
        && registered.capacity == announced.capacity
        && (registered.draining || !announced.draining)
}
