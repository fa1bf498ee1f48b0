//! Placement and dispatch: the brain asks the scheduler (augur-placement) which
//! queued jobs to start where, makes each assignment durable through the
//! writer, and sends it to the worker once committed.

use std::time::Instant;

use augur_core::run::speed_of;
use augur_core::{apply, now_ms, Event, JobRecord, RunRecord, WorkerInfo};
use augur_placement::{JobRequest, WorkerSpec};
use augur_proto::v1 as pb;
use augur_proto::v1::coordinator_message::Kind as Out;
use tracing::{debug, warn};

use super::brain::Brain;
use super::observe;
use super::writer::AfterCommit;
use crate::convert::spec_to_pb;

/// What the scheduler needs to know about a job.
pub(super) fn job_request(job: &JobRecord) -> JobRequest {
    JobRequest {
        features: RunRecord::for_submission(job),
        slots: job.spec.resources.slots,
        priority: job.spec.priority,
        constraints: job.spec.constraints.clone(),
        actual_work_s: None,
    }
}

/// What the scheduler needs to know about a worker (speed from its `speed` label).
pub(super) fn worker_spec(info: &WorkerInfo) -> WorkerSpec {
    WorkerSpec {
        slots: info.slots,
        speed: speed_of(&info.labels),
        labels: info.labels.clone(),
    }
}

impl Brain {
    /// Places what the scheduler says fits now, in its order; jobs that fit
    /// nowhere stay queued.
    pub(super) fn dispatch(&mut self) {
        let decisions = self.scheduler.next_assignments(now_ms());
        for decision in decisions {
            let id = decision.job;
            let worker = decision.worker.clone();
            let Some(job) = self.jobs.get(&id) else {
                self.scheduler.job_removed(&id);
                continue;
            };
            let connected = self.workers.get(&worker).is_some_and(|e| e.placeable());
            if !connected {
                // The scheduler's view of availability lagged: queue it again.
                warn!(job_id = %id, worker_id = %worker, "placement on an unavailable worker undone");
                let request = job_request(job);
                self.scheduler.job_arrived(id, request, now_ms());
                continue;
            }
            let event = Event::Assign {
                worker: worker.clone(),
                epoch: self.fence.epoch(),
                now_ms: now_ms(),
            };
            let Ok(next) = apply(job, &event) else {
                self.scheduler.job_removed(&id);
                continue;
            };
            let span = observe::placed(&self.metrics, &next, &decision);
            let Some(entry) = self.workers.get_mut(&worker) else {
                continue;
            };
            entry.used += next.spec.resources.slots;
            entry.attempts.insert(id, Instant::now());
            let Some(conn) = entry.conn.as_ref() else {
                continue;
            };
            let assign = pb::CoordinatorMessage {
                kind: Some(Out::Assign(pb::Assign {
                    attempt: Some(pb::AttemptRef {
                        job_id: id.to_string(),
                        attempt: next.attempt,
                        epoch: self.fence.epoch(),
                    }),
                    spec: Some(spec_to_pb(&next.spec)),
                    trace_context: span.carrier().into_iter().collect(),
                })),
            };
            let after = AfterCommit::Send {
                tx: conn.tx.clone(),
                msg: Box::new(assign),
                worker: worker.clone(),
                job: Some((id, next.attempt)),
                span: Some(span),
            };
            debug!(job_id = %id, worker_id = %worker, attempt = next.attempt, policy = %decision.policy, "job placed");
            self.update(next, Some(after));
        }
    }
}
