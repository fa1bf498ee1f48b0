//! Jobs in the core: taking them in, the retry queue, results, lost attempts
//! and cancellation. Every state change goes through `augur_core::apply`.

use std::cmp::Reverse;

use augur_core::{apply, Event, JobId, JobRecord, JobState, RunRecord, WorkerId};

use super::dispatch::job_request;
use super::{
    AfterCommit, AttemptKey, CancelRefusal, ConnId, Effect, FromWorker, LeaderState, Now,
    Observation, ToWorker, TraceHook, RECENT_DONE,
};

impl<R> LeaderState<R> {
    /// Takes in a job submitted or read elsewhere, unless already known.
    pub(super) fn admit(&mut self, job: JobRecord, now: Now) {
        if self.jobs.contains_key(&job.id) || self.recent_done.0.contains(&job.id) {
            return;
        }
        if job.state == JobState::Pending {
            let id = job.id;
            self.insert(job, now);
            if !self.recheck_unschedulable {
                self.check_unschedulable_job(id);
            }
        }
    }

    pub(super) fn insert(&mut self, job: JobRecord, now: Now) {
        if job.state == JobState::Pending {
            // A job new to this leader keeps its place: its age counts from
            // its submission.
            self.enqueue(&job, job.submitted_at_ms, now);
        }
        self.jobs.insert(job.id, job);
    }

    /// Queues a pending job: at once, or after its backoff. `arrival` orders
    /// it among jobs of its priority (earlier first).
    fn enqueue(&mut self, job: &JobRecord, arrival_ms: i64, now: Now) {
        if job.not_before_ms > now.wall_ms {
            self.delayed.push(Reverse((job.not_before_ms, job.id)));
        } else {
            self.scheduler
                .job_arrived(job.id, job_request(job), arrival_ms.min(now.wall_ms));
        }
    }

    pub(super) fn promote_delayed(&mut self, now: Now) {
        while let Some(Reverse((at, id))) = self.delayed.peek().copied() {
            if at > now.wall_ms {
                break;
            }
            self.delayed.pop();
            if let Some(job) = self.jobs.get(&id) {
                // Stale heap entries (the job was placed or ended since) are
                // skipped: only a job still pending and due is queued.
                if job.state == JobState::Pending && job.not_before_ms <= now.wall_ms {
                    self.scheduler.job_arrived(id, job_request(job), at);
                }
            }
        }
    }

    fn remember_done(&mut self, id: JobId) {
        let (set, order) = &mut self.recent_done;
        if set.insert(id) {
            order.push_back(id);
            if order.len() > RECENT_DONE {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// Stores a new version of a job: memory, queue, and a write whose `then`
    /// runs once it is durable. `arrival_ms` orders it if it is queued again.
    pub(super) fn update(
        &mut self,
        next: JobRecord,
        run: Option<RunRecord>,
        then: Option<AfterCommit<R>>,
        arrival_ms: i64,
        now: Now,
    ) {
        let id = next.id;
        let previous = self.jobs.get(&id).map(|j| j.state);
        if previous != Some(next.state) {
            self.observe(Observation::Transition {
                previous,
                record: Box::new(next.clone()),
            });
        }
        if !next.state.is_active() {
            // Ended, cancelled or back to the queue: the scheduler forgets the
            // old placement (a no-op if it never knew the job).
            self.scheduler.job_removed(&id);
        }
        if next.state.is_terminal() {
            self.jobs.remove(&id);
            self.unschedulable.remove(&id);
            self.remember_done(id);
        } else {
            if next.state == JobState::Pending {
                self.enqueue(&next, arrival_ms, now);
            }
            self.jobs.insert(id, next.clone());
        }
        self.effects.push(Effect::Write {
            record: Box::new(next),
            run: run.map(Box::new),
            then,
        });
    }

    pub(super) fn message(&mut self, worker: WorkerId, conn: ConnId, msg: FromWorker, now: Now) {
        let current = self
            .workers
            .get(&worker)
            .is_some_and(|e| e.conn == Some(conn));
        if !current {
            // A message from a connection that was replaced or refused.
            return;
        }
        match msg {
            FromWorker::Started { attempt, at_ms } => {
                let Some(job) = self.jobs.get(&attempt.job) else {
                    return;
                };
                if job.worker_id.as_ref() != Some(&worker) {
                    return;
                }
                let event = Event::Start {
                    attempt: attempt.attempt,
                    now_ms: at_ms,
                };
                if let Ok(next) = apply(job, &event) {
                    self.observe(Observation::Started {
                        record: Box::new(next.clone()),
                        at_ms,
                    });
                    self.scheduler.job_started(&attempt.job, at_ms);
                    self.update(next, None, None, now.wall_ms, now);
                }
            }
            FromWorker::Finished {
                attempt,
                report,
                outcome,
            } => self.finished(worker, conn, attempt, report, outcome, now),
            FromWorker::Draining => self.worker_draining(&worker),
            FromWorker::Goodbye => self.goodbye(&worker),
            FromWorker::Heartbeat { running } => {
                self.heartbeat(&worker);
                if let Some(entry) = self.workers.get_mut(&worker) {
                    // Refresh the send time of attempts the worker confirms.
                    for key in running {
                        if let Some(sent) = entry.attempts.get_mut(&key.job) {
                            *sent = now.mono_ms;
                        }
                    }
                }
            }
        }
    }

    fn finished(
        &mut self,
        worker: WorkerId,
        conn: ConnId,
        key: AttemptKey,
        report: Result<Box<augur_core::AttemptReport>, String>,
        outcome: &'static str,
        now: Now,
    ) {
        let current = self.jobs.get(&key.job).is_some_and(|j| {
            j.attempt == key.attempt && j.worker_id.as_ref() == Some(&worker) && j.state.is_active()
        });
        let report = match report {
            Ok(report) => report,
            Err(reason) => {
                // Unreadable: the worker would re-send it on every reconnect
                // forever. Refuse it, acknowledge it, and (if it is the current
                // attempt) count the attempt as lost, so the job runs again.
                self.observe(Observation::ResultRefused {
                    worker: worker.clone(),
                    attempt: key,
                    reason: reason.clone(),
                });
                if current {
                    self.lose(
                        key,
                        &worker,
                        &format!("worker sent an unreadable result: {reason}"),
                        now,
                    );
                }
                self.effects.push(Effect::Send {
                    conn,
                    msg: ToWorker::Ack(key),
                });
                return;
            }
        };
        let Some(job) = self.jobs.get(&key.job).filter(|_| current) else {
            // Stale or already recorded: acknowledge so the worker drops it.
            self.effects.push(Effect::Send {
                conn,
                msg: ToWorker::Ack(key),
            });
            return;
        };
        let speed = self
            .workers
            .get(&worker)
            .and_then(|e| e.info.as_ref())
            .map_or(1.0, |i| augur_core::run::speed_of(&i.labels));
        let run = RunRecord::from_attempt(job, &worker, speed, &report);
        let event = Event::Finish {
            report: *report,
            now_ms: now.wall_ms,
            jitter_sample: jitter(&key),
        };
        match apply(job, &event) {
            Ok(next) => {
                let before = job.clone();
                if let Some(p) = self.scheduler.prediction(&next.id) {
                    let predicted_s = p.seconds_on(speed);
                    let policy = self.scheduler.policy();
                    self.observe(Observation::PredictionError {
                        policy,
                        predicted_s,
                        run: Box::new(run.clone()),
                    });
                }
                self.scheduler.job_finished(&next.id, Some(&run));
                self.release(&worker, &next.id);
                let then = AfterCommit::Send {
                    worker: worker.clone(),
                    conn,
                    msg: ToWorker::Ack(key),
                    trace: Some(TraceHook::Report {
                        before: Box::new(before),
                        outcome,
                    }),
                };
                let arrival = next.not_before_ms;
                self.update(next, Some(run), Some(then), arrival, now);
            }
            Err(_) => {
                self.effects.push(Effect::Send {
                    conn,
                    msg: ToWorker::Ack(key),
                });
            }
        }
    }

    /// Forgets an attempt on a worker's list (its slots are the scheduler's).
    pub(super) fn release(&mut self, worker: &WorkerId, job: &JobId) {
        if let Some(entry) = self.workers.get_mut(worker) {
            entry.attempts.remove(job);
        }
    }

    /// The attempt is gone with its worker (or never reached it). Not the
    /// job's fault: it keeps its place in the queue.
    pub(super) fn lose(&mut self, key: AttemptKey, worker: &WorkerId, reason: &str, now: Now) {
        let Some(job) = self.jobs.get(&key.job) else {
            return;
        };
        if job.attempt != key.attempt
            || job.worker_id.as_ref() != Some(worker)
            || !job.state.is_active()
        {
            return;
        }
        let event = Event::Lost {
            attempt: key.attempt,
            reason: reason.to_string(),
            now_ms: now.wall_ms,
        };
        if let Ok(next) = apply(job, &event) {
            let submitted = job.submitted_at_ms;
            self.observe(Observation::AttemptLost {
                attempt: key,
                worker: worker.clone(),
                reason: reason.to_string(),
            });
            if next.state.is_terminal() {
                self.observe(Observation::Finished(Box::new(next.clone())));
            }
            self.release(worker, &key.job);
            // If the worker is still there, make sure it stops the orphan.
            self.send(worker, ToWorker::Cancel(key));
            self.update(next, None, None, submitted, now);
        }
    }

    pub(super) fn cancel(&mut self, id: JobId, reply: R, now: Now) {
        let Some(job) = self.jobs.get(&id) else {
            // Not active here: it is terminal (or unknown).
            self.effects.push(Effect::CancelFromStore { id, reply });
            return;
        };
        match apply(
            job,
            &Event::Cancel {
                now_ms: now.wall_ms,
            },
        ) {
            Ok(next) => {
                if next.state.is_active() {
                    if let Some(worker) = next.worker_id.clone() {
                        let key = AttemptKey {
                            job: id,
                            attempt: next.attempt,
                        };
                        self.send(&worker, ToWorker::Cancel(key));
                    }
                }
                if next.state.is_terminal() {
                    self.observe(Observation::Finished(Box::new(next.clone())));
                }
                let arrival = next.submitted_at_ms;
                self.update(next, None, Some(AfterCommit::Reply(reply)), arrival, now);
            }
            Err(e) => self.effects.push(Effect::CancelRefused {
                reply,
                refusal: CancelRefusal::NotApplicable(e.to_string()),
            }),
        }
    }
}

/// The random share of a retry's backoff, derived from the attempt so the
/// core stays deterministic (different jobs still spread out).
fn jitter(key: &AttemptKey) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
