//! Placement and dispatch in the core: the scheduler (augur-placement) says
//! which queued jobs start where; each assignment becomes a write whose
//! follow-up sends the `Assign`, so nothing is sent before it is durable. Also
//! why a pending job cannot run anywhere.

use augur_core::run::speed_of;
use augur_core::{apply, Event, JobRecord, JobState, RunRecord, WorkerInfo};
use augur_placement::{JobRequest, WorkerSpec};

use super::{AfterCommit, Effect, LeaderState, Now, Observation, ToWorker, TraceHook};

/// What the scheduler needs to know about a job.
pub(crate) fn job_request(job: &JobRecord) -> JobRequest {
    JobRequest {
        features: RunRecord::for_submission(job),
        slots: job.spec.resources.slots,
        priority: job.spec.priority,
        constraints: job.spec.constraints.clone(),
        actual_work_s: None,
    }
}

/// What the scheduler needs to know about a worker (speed from its `speed`
/// label; capacity, when it reported one, bounds the CPU and memory requested).
pub(crate) fn worker_spec(info: &WorkerInfo) -> WorkerSpec {
    WorkerSpec {
        slots: info.slots,
        speed: speed_of(&info.labels),
        labels: info.labels.clone(),
        capacity: info.capacity,
    }
}

/// A decision as the job record keeps it.
fn placement_note(
    decision: &augur_placement::Decision<augur_core::JobId, augur_core::WorkerId>,
    at_ms: i64,
) -> augur_core::PlacementNote {
    use augur_placement::Policy;
    let score_meaning = match (decision.policy, &decision.fallback) {
        (Policy::Predictive, None) | (Policy::Oracle, _) => "predicted finish, seconds from now",
        (Policy::LeastLoaded, _) | (Policy::Predictive, Some(_)) => "load (slots in use / slots)",
        (Policy::RoundRobin, _) => "turn after the last chosen worker",
        (Policy::FifoFastestIdle, _) => "minus the worker's speed",
    };
    augur_core::PlacementNote {
        policy: decision.policy.name().to_string(),
        worker: decision.worker.to_string(),
        at_ms,
        predicted_s: decision.predicted_s,
        source: decision.prediction_source.as_ref().map(|s| match s {
            augur_predict::Source::Model => "model".to_string(),
            augur_predict::Source::Fallback(reason) => format!("fallback: {reason}"),
        }),
        model_version: decision.model_version,
        score_meaning: score_meaning.to_string(),
        candidates: decision
            .candidates
            .iter()
            .map(|c| augur_core::CandidateNote {
                worker: c.worker.to_string(),
                score: c.score,
            })
            .collect(),
        fallback: decision.fallback.clone(),
    }
}

impl<R> LeaderState<R> {
    /// Places what the scheduler says fits now, in its order; jobs that fit
    /// nowhere stay queued.
    pub(super) fn dispatch(&mut self, now: Now) {
        let decisions = self.scheduler.next_assignments(now.wall_ms);
        for decision in decisions {
            let id = decision.job;
            let worker = decision.worker.clone();
            let Some(job) = self.jobs.get(&id) else {
                self.scheduler.job_removed(&id);
                continue;
            };
            let conn = self
                .workers
                .get(&worker)
                .filter(|e| e.placeable())
                .and_then(|e| e.conn);
            let Some(conn) = conn else {
                // The scheduler's view of availability lagged: queue it again.
                let request = job_request(job);
                self.scheduler
                    .job_arrived(id, request, job.submitted_at_ms.min(now.wall_ms));
                self.sync_availability(&worker);
                continue;
            };
            let event = Event::Assign {
                worker: worker.clone(),
                epoch: self.epoch,
                now_ms: now.wall_ms,
            };
            let Ok(mut next) = apply(job, &event) else {
                self.scheduler.job_removed(&id);
                continue;
            };
            // Not a state change: the record keeps why it went there.
            next.placement = Some(placement_note(&decision, now.wall_ms));
            if let Some(entry) = self.workers.get_mut(&worker) {
                entry.attempts.insert(id, now.mono_ms);
            }
            self.unschedulable.remove(&id);
            let then = AfterCommit::Send {
                worker,
                conn,
                msg: ToWorker::Assign {
                    record: Box::new(next.clone()),
                },
                trace: Some(TraceHook::Dispatch(Box::new(decision))),
            };
            self.update(next, None, Some(then), now.wall_ms, now);
        }
    }

    /// Re-examines, at the next tick, which pending jobs no worker could run.
    pub(super) fn unschedulable_may_change(&mut self) {
        self.recheck_unschedulable = true;
    }

    /// Flags one newly queued job if no registered worker could run it (it
    /// is already in `jobs`).
    pub(super) fn check_unschedulable_job(&mut self, id: augur_core::JobId) {
        let reason = self.jobs.get(&id).and_then(|job| {
            unschedulable_reason(job, self.workers.values().filter_map(|e| e.info.as_ref()))
        });
        if reason.is_some() {
            self.set_unschedulable(id, reason);
        }
    }

    /// Flags pending jobs that no registered worker could ever run (too many
    /// slots, or constraints no worker matches), and clears the flag of those
    /// that now could. A flagged job stays queued: workers may join.
    pub(super) fn check_unschedulable(&mut self) {
        self.recheck_unschedulable = false;
        let changes: Vec<_> = self
            .jobs
            .values()
            .filter(|job| job.state == JobState::Pending)
            .filter_map(|job| {
                let reason = unschedulable_reason(
                    job,
                    self.workers.values().filter_map(|e| e.info.as_ref()),
                );
                (self.unschedulable.get(&job.id) != reason.as_ref()).then_some((job.id, reason))
            })
            .collect();
        for (id, reason) in changes {
            self.set_unschedulable(id, reason);
        }
    }

    /// Records that a pending job became unschedulable (`Some`) or schedulable
    /// again (`None`). The reason is part of the record, so `augur get` and
    /// `list` show it from any coordinator: one write when it changes.
    fn set_unschedulable(&mut self, id: augur_core::JobId, reason: Option<String>) {
        match &reason {
            Some(r) => self.unschedulable.insert(id, r.clone()),
            None => self.unschedulable.remove(&id),
        };
        if let Some(job) = self.jobs.get_mut(&id) {
            job.message = match &reason {
                Some(r) => format!("unschedulable: {r}"),
                None => "queued: a worker that can run it is registered".into(),
            };
            let record = Box::new(job.clone());
            self.effects.push(Effect::Write {
                record,
                run: None,
                then: None,
            });
        }
        self.observe(Observation::Unschedulable { job: id, reason });
    }

    /// Why a queued job is waiting, in words, for `augur get`.
    pub fn pending_reason(&self, id: &augur_core::JobId, now: Now) -> Option<String> {
        let job = self.jobs.get(id)?;
        if job.state != JobState::Pending {
            return None;
        }
        if let Some(reason) = self.unschedulable.get(&job.id) {
            return Some(format!("unschedulable: {reason}"));
        }
        if job.not_before_ms > now.wall_ms {
            return Some(format!(
                "waiting for its retry backoff ({} ms left)",
                job.not_before_ms - now.wall_ms
            ));
        }
        if self.reconcile_until.is_some() {
            return Some("waiting: a new leader is waiting for workers to report".into());
        }
        let ahead = self.scheduler.queue_position(&job.id)?;
        Some(format!(
            "queued: {ahead} jobs ahead, waiting for a free slot"
        ))
    }
}

/// Why no registered worker could ever run `job`, if none could.
pub(crate) fn unschedulable_reason<'a>(
    job: &JobRecord,
    workers: impl Iterator<Item = &'a WorkerInfo> + Clone,
) -> Option<String> {
    let slots = job.spec.resources.slots;
    let constraints = &job.spec.constraints;
    if workers.clone().next().is_none() {
        return Some("no worker is registered".into());
    }
    let workers_clone = workers.clone();
    let largest = workers
        .filter(|w| w.matches(constraints))
        .map(|w| w.slots)
        .max();
    match largest {
        None => {
            let wanted: Vec<String> = constraints
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            Some(format!("no worker matches constraint {}", wanted.join(",")))
        }
        Some(largest) if largest < slots => Some(format!(
            "no worker has {slots} slots (largest {largest}{})",
            if constraints.is_empty() {
                ""
            } else {
                " among those matching its constraints"
            }
        )),
        // Among the workers with the slots and labels: one whose reported
        // capacity could ever hold the CPU and memory it requests.
        Some(_) => augur_placement::resources::shortfall(
            augur_placement::resources::Request {
                cpu_millis: job.spec.resources.cpu_millis,
                memory_bytes: job.spec.resources.memory_bytes,
            },
            workers_clone
                .filter(|w| w.matches(constraints) && w.slots >= slots)
                .map(|w| w.capacity.as_ref()),
        ),
    }
}
