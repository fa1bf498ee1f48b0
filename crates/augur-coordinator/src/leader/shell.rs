//! The leader's shell around the pure core: one task that turns what arrives
//! (API calls, watch events, worker streams, timers) into core inputs, and the
//! core's effects into I/O — writes queued to the writer with their follow-ups,
//! messages on worker streams, loads and look-ups spawned as tasks of the
//! term, metrics, spans and log lines. It decides nothing itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::{JobId, JobState};
use augur_proto::v1 as pb;
use augur_store::{LeaderStore, WorkerEvent};
use augur_telemetry::CoordinatorMetrics;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, info, warn};

use super::edge::{self, Undecodable};
use super::observe;
use super::state::{
    AfterCommit as CoreAfter, CancelRefusal, ConnId, Effect, Input, LeaderState, Now, Observation,
    ToWorker, TraceHook, WorkerView,
};
use super::term::Term;
use super::writer::{AfterCommit, Writer};
use super::{CancelReply, LeaderInput, LeaderSettings, StatusSnapshot, WorkerTx};
use crate::convert::{job_to_pb, leader_status, store_status, worker_to_pb};

/// Inputs handled before placing again, so a burst is placed in one pass.
const MAX_INPUTS_PER_PASS: usize = 4096;

pub(crate) struct Shell<S: LeaderStore> {
    pub settings: Arc<LeaderSettings>,
    pub metrics: Arc<CoordinatorMetrics>,
    pub core: LeaderState<CancelReply>,
    pub writer: Writer,
    pub store: S,
    pub leases: super::leases::WorkerLeases,
    pub self_tx: mpsc::UnboundedSender<LeaderInput>,
    /// Open worker streams by connection.
    pub conns: HashMap<ConnId, WorkerTx>,
    /// The monotonic origin of `Now::mono_ms`.
    pub origin: Instant,
}

impl<S: LeaderStore> Shell<S> {
    pub fn now(&self) -> Now {
        Now {
            wall_ms: augur_core::now_ms(),
            mono_ms: self.origin.elapsed().as_millis() as i64,
        }
    }

    /// Runs until the term ends or every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<LeaderInput>, term: &mut Term) {
        let cancel = term.cancel_token();
        let mut gauges = tokio::time::interval(Duration::from_millis(250));
        loop {
            let now = self.now();
            let wake = self.core.next_wake(now) - now.mono_ms;
            let wake = tokio::time::Instant::now() + Duration::from_millis(wake.max(0) as u64);
            tokio::select! {
                _ = cancel.cancelled() => break,
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    self.input(input, term);
                    let mut n = 1;
                    while n < MAX_INPUTS_PER_PASS {
                        match rx.try_recv() {
                            Ok(input) => self.input(input, term),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = gauges.tick() => self.gauges(),
            }
            self.core_input(Input::Tick, term);
            term.reap();
        }
        // Tell every connected worker to find the next leader.
        for tx in self.conns.values() {
            let _ = tx.send(Err(leader_status::stepped_down()));
        }
        self.metrics.jobs_unschedulable.set(0);
    }

    fn core_input(&mut self, input: Input<CancelReply>, term: &mut Term) {
        let now = self.now();
        let effects = self.core.handle(input, now);
        for effect in effects {
            self.effect(effect, term);
        }
    }

    fn input(&mut self, input: LeaderInput, term: &mut Term) {
        let core = match input {
            LeaderInput::Submitted(job) => Input::Submitted(job),
            LeaderInput::Loaded(jobs) => Input::Loaded(jobs),
            LeaderInput::PendingIds(ids) => Input::PendingIds(ids),
            LeaderInput::Workers(events) => {
                for event in events {
                    let input = match event {
                        WorkerEvent::Up(info) => Input::WorkerRegistered(Box::new(info)),
                        WorkerEvent::Down(id) => Input::WorkerDeregistered(id),
                    };
                    self.core_input(input, term);
                }
                return;
            }
            LeaderInput::Attached {
                worker,
                conn,
                hello,
                announced,
                tx,
            } => {
                info!(worker_id = %worker, conn, running = hello.running.len(), "worker attached");
                self.conns.insert(conn, tx);
                Input::Attached {
                    worker,
                    conn,
                    running: edge::attempt_keys(&hello.running),
                    lease_id: hello.lease_id,
                    announced,
                }
            }
            LeaderInput::RegistrationFailed(worker) => Input::RegistrationFailed { worker },
            LeaderInput::LeaseActive(lease) => {
                self.leases.active(lease, term);
                return;
            }
            LeaderInput::LeaseEnded(lease) => {
                self.leases.ended(lease);
                return;
            }
            LeaderInput::Detached { worker, conn } => {
                self.conns.remove(&conn);
                Input::Detached { worker, conn }
            }
            LeaderInput::Message { worker, conn, msg } => {
                match edge::decode(msg, self.settings.max_output_tail) {
                    Ok(msg) => Input::Message { worker, conn, msg },
                    Err(Undecodable::Ignore(why)) => {
                        debug!(worker_id = %worker, why, "worker message ignored");
                        return;
                    }
                    Err(Undecodable::AckAndDrop { attempt, reason }) => {
                        warn!(worker_id = %worker, reason, "result refused: it names no job; acknowledged so the worker drops it");
                        self.metrics.worker_results_refused.inc();
                        if let Some(tx) = self.conns.get(&conn) {
                            let _ = tx.send(Ok(edge::raw_ack(attempt)));
                        }
                        return;
                    }
                }
            }
            LeaderInput::SendFailed {
                worker,
                job,
                attempt,
            } => Input::DeliveryFailed {
                worker,
                attempt: super::state::AttemptKey { job, attempt },
            },
            LeaderInput::Cancel { id, reply } => Input::Cancel { id, reply },
            LeaderInput::Model(model) => Input::Model(model),
            LeaderInput::PlacementConfig(config) => Input::PlacementConfig(config),
            LeaderInput::Status { reply } => {
                let _ = reply.send(self.snapshot());
                return;
            }
            LeaderInput::Explain { id, reply } => {
                let _ = reply.send(self.core.pending_reason(&id, self.now()));
                return;
            }
        };
        self.core_input(core, term);
    }

    fn encode(&self, msg: &ToWorker, trace: HashMap<String, String>) -> pb::CoordinatorMessage {
        edge::encode(msg, &self.settings.node_id, self.core.epoch(), trace)
    }

    fn effect(&mut self, effect: Effect<CancelReply>, term: &mut Term) {
        match effect {
            Effect::Write { record, run, then } => {
                let after = then.and_then(|then| self.after_commit(&record, then));
                self.writer.push(*record, run.map(|r| *r), after);
            }
            Effect::Send { conn, msg } => {
                let msg = self.encode(&msg, HashMap::new());
                if let Some(tx) = self.conns.get(&conn) {
                    let _ = tx.send(Ok(msg));
                }
            }
            Effect::Refuse { conn, reason } => {
                if let Some(tx) = self.conns.remove(&conn) {
                    let _ = tx.send(Err(leader_status::stream_refused(reason)));
                }
            }
            Effect::Load(ids) => {
                let store = self.store.clone();
                let tx = self.self_tx.clone();
                term.spawn("load_submitted", async move {
                    let mut loaded = Vec::with_capacity(ids.len());
                    for id in ids {
                        match store.get_job(&id).await {
                            Ok(Some(job)) => loaded.push(job),
                            Ok(None) => {}
                            Err(e) => {
                                warn!(job_id = %id, error = %e, "could not read submitted job")
                            }
                        }
                    }
                    let _ = tx.send(LeaderInput::Loaded(loaded));
                });
            }
            Effect::CancelFromStore { id, reply } => {
                let store = self.store.clone();
                term.spawn("cancel_lookup", async move {
                    let _ = reply.send(cancel_from_store(&store, id).await);
                });
            }
            Effect::CancelRefused { reply, refusal } => {
                let CancelRefusal::NotApplicable(why) = refusal;
                let _ = reply.send(Err(leader_status::cancel_not_applicable(why)));
            }
            Effect::Register(info) => self.leases.register(*info, term),
            Effect::RenewLease(lease) => self.leases.renew(lease, term),
            Effect::ReleaseLease(lease) => self.leases.release(lease, term),
            Effect::MarkDraining(worker) => {
                let registry = self.leases.registry();
                term.spawn("worker_draining", async move {
                    if let Err(e) = registry.set_draining(&worker, true).await {
                        warn!(worker_id = %worker, error = %e, "could not mark the worker draining");
                    }
                });
            }
            Effect::Observe(observation) => self.observe(observation),
        }
    }

    /// The writer's follow-up for a core follow-up: the message encoded, the
    /// stream it goes to, and the span that ends once it is done.
    fn after_commit(
        &self,
        record: &augur_core::JobRecord,
        then: CoreAfter<CancelReply>,
    ) -> Option<AfterCommit> {
        match then {
            CoreAfter::Reply(reply) => Some(AfterCommit::Reply(reply, Box::new(record.clone()))),
            CoreAfter::Send {
                worker,
                conn,
                msg,
                trace,
            } => {
                let (span, job) = match trace {
                    Some(TraceHook::Dispatch(decision)) => (
                        Some(observe::placed(&self.metrics, record, &decision)),
                        Some((record.id, record.attempt)),
                    ),
                    Some(TraceHook::Report { before, outcome }) => (
                        Some(observe::reported(&self.metrics, &before, record, outcome)),
                        None,
                    ),
                    None => (None, None),
                };
                let carrier = span
                    .as_ref()
                    .filter(|_| job.is_some())
                    .map(|s| s.carrier().into_iter().collect())
                    .unwrap_or_default();
                let msg = self.encode(&msg, carrier);
                // A stream already gone: the writer reports the assignment
                // undeliverable once it is durable (a closed sender fails).
                let tx = match self.conns.get(&conn) {
                    Some(tx) => tx.clone(),
                    None => mpsc::unbounded_channel().0,
                };
                Some(AfterCommit::Send {
                    tx,
                    msg: Box::new(msg),
                    worker,
                    job,
                    span,
                })
            }
        }
    }

    fn observe(&self, observation: Observation) {
        let metrics = &self.metrics;
        match observation {
            Observation::Transition { previous, record } => {
                observe::audit_transition(previous, &record, &self.settings.node_id)
            }
            Observation::Started { record, at_ms } => observe::started(metrics, &record, at_ms),
            Observation::Finished(record) => observe::finished(metrics, &record),
            Observation::AttemptLost {
                attempt,
                worker,
                reason,
            } => {
                warn!(job_id = %attempt.job, attempt = attempt.attempt, worker_id = %worker, reason, "attempt lost");
                metrics.attempts_lost.inc();
            }
            Observation::PredictionError {
                policy,
                predicted_s,
                run,
            } => observe::prediction_error(metrics, policy, predicted_s, &run),
            Observation::ResultRefused {
                worker,
                attempt,
                reason,
            } => {
                warn!(worker_id = %worker, job_id = %attempt.job, attempt = attempt.attempt, reason,
                      "result refused: the leader cannot read it; acknowledged, the attempt counts as lost");
                metrics.worker_results_refused.inc();
            }
            Observation::AttachRefused { worker, reason } => {
                warn!(audit = true, worker_id = %worker, action = "worker_attach", result = "AlreadyExists",
                      reason, "worker stream refused");
                metrics
                    .api_refusals
                    .get_or_create(&augur_telemetry::metrics::RefusalLabel {
                        action: "worker_attach".into(),
                        code: "already_exists".into(),
                    })
                    .inc();
            }
            Observation::PolicyChanged(policy) => {
                observe::initialise(metrics, policy);
                info!(policy = %policy, "placement configuration applied");
            }
            Observation::ModelLoaded(version) => {
                info!(version, "placing with a new runtime model")
            }
            Observation::WorkerDraining { worker, running } => {
                info!(worker_id = %worker, running, "worker draining: no new placements")
            }
            Observation::WorkerGone {
                worker,
                jobs,
                reason,
            } => warn!(worker_id = %worker, jobs, reason, "worker gone; requeuing its jobs"),
            Observation::Reconciled { orphans } => {
                info!(orphans, "reconciliation done; dispatching")
            }
            Observation::Unschedulable { job, reason } => match reason {
                Some(reason) => {
                    warn!(job_id = %job, reason, "job unschedulable: no registered worker could run it")
                }
                None => info!(job_id = %job, "job schedulable again"),
            },
        }
    }

    fn gauges(&self) {
        let g = self.core.gauges();
        let mut queued = [0i64; 3];
        for priority in &g.queued {
            queued[observe::class_index(*priority)] += 1;
        }
        observe::gauges(
            &self.metrics,
            &observe::Gauges {
                queued,
                running: g.running,
                workers_ready: g.workers_ready,
                workers_disconnected: g.workers_disconnected,
                workers_draining: g.workers_draining,
            },
        );
        self.metrics.jobs_unschedulable.set(g.unschedulable);
    }

    fn snapshot(&self) -> StatusSnapshot {
        let snapshot = self.core.snapshot();
        let mut queued = [0u64; 3];
        for priority in &self.core.gauges().queued {
            queued[observe::class_index(*priority)] += 1;
        }
        StatusSnapshot {
            workers: snapshot.workers.iter().map(worker_pb).collect(),
            pending: snapshot.pending,
            running: snapshot.running,
            queued_by_class: ["high", "normal", "low"]
                .iter()
                .zip(queued)
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
        }
    }
}

fn worker_pb(view: &WorkerView) -> pb::Worker {
    use super::state::WorkerState as S;
    let state = match view.state {
        S::Ready => pb::WorkerState::Ready,
        S::Disconnected => pb::WorkerState::Disconnected,
        S::Draining => pb::WorkerState::Draining,
    };
    worker_to_pb(&view.info, view.running, state)
}

/// The answer to cancelling a job the leader does not hold: from the store.
async fn cancel_from_store<S: LeaderStore>(store: &S, id: JobId) -> Result<pb::Job, Status> {
    match store.get_job(&id).await {
        // Cancelling twice is not an error; cancelling a job that ended
        // otherwise is.
        Ok(Some(job)) if job.state == JobState::Cancelled => Ok(job_to_pb(&job)),
        Ok(Some(job)) if job.state.is_terminal() => {
            Err(leader_status::already_ended(&id, job.state))
        }
        Ok(Some(job)) => Ok(job_to_pb(&job)),
        Ok(None) => Err(leader_status::no_job(&id)),
        Err(e) => Err(store_status(e)),
    }
}
