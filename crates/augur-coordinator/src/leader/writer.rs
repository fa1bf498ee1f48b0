//! The leader's write path: records to persist are queued here, coalesced per
//! job (the latest record wins: etcd refuses two ops on one key in a transaction
//! anyway) and committed in fenced batches, one transaction at a time. Whatever
//! must only happen once a record is durable (sending an assignment, acknowledging
//! a result, answering a cancel) rides along as an [`AfterCommit`] action.

use std::collections::HashMap;
use std::time::Duration;

use augur_core::{JobId, JobRecord};
use augur_proto::v1 as pb;
use std::sync::Arc;

use augur_core::RunRecord;
use augur_store::{Fence, LeaderStore, RecordWrite, StoreError};
use augur_telemetry::context::PhaseSpan;
use augur_telemetry::CoordinatorMetrics;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{error, warn};

use super::workflows::{WorkflowInput, LABEL_RUN};
use super::{LeaderInput, WorkerTx};
use crate::convert::job_to_pb;

/// How long a batch holding only "running" records may wait for company.
const LAZY_WRITE_DELAY: Duration = Duration::from_millis(100);

/// Most records committed together (etcd's op limit splits it further).
const MAX_BATCH: usize = 2048;

/// Done once the records of its batch are durable.
pub(crate) enum AfterCommit {
    /// Send a message to a worker; on failure tell the shell the worker missed it.
    Send {
        tx: WorkerTx,
        msg: Box<pb::CoordinatorMessage>,
        worker: augur_core::WorkerId,
        job: Option<(JobId, u32)>,
        /// A phase span (`job.dispatch`, `job.report`) that ends once done.
        span: Option<PhaseSpan>,
    },
    /// Answer an API call with the record as written.
    Reply(oneshot::Sender<Result<pb::Job, Status>>, Box<JobRecord>),
}

pub(crate) struct WriteRequest {
    pub record: JobRecord,
    /// The run record of a finished attempt, written in the same transaction.
    pub run: Option<RunRecord>,
    pub after: Option<AfterCommit>,
}

/// Handle used by the shell to queue writes.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<WriteRequest>,
}

impl Writer {
    pub fn push(&self, record: JobRecord, run: Option<RunRecord>, after: Option<AfterCommit>) {
        // The writer only stops when leadership ends; then nothing may be written.
        let _ = self.tx.send(WriteRequest { record, run, after });
    }
}

/// Starts the writer as a task of the term. It ends with the term or, on a
/// failed fence, ends the term itself.
pub(crate) fn spawn<S: LeaderStore>(
    term: &mut super::term::Term,
    store: S,
    brain: mpsc::UnboundedSender<LeaderInput>,
    metrics: Arc<CoordinatorMetrics>,
    workflows: Option<mpsc::UnboundedSender<WorkflowInput>>,
) -> Writer {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = run(
        store,
        term.fence().clone(),
        term.cancel_token(),
        rx,
        (brain, workflows),
        metrics,
    );
    term.spawn("writer", task);
    Writer { tx }
}

async fn run<S: LeaderStore>(
    store: S,
    fence: Fence,
    demote: CancellationToken,
    mut rx: mpsc::UnboundedReceiver<WriteRequest>,
    (brain, workflows): (
        mpsc::UnboundedSender<LeaderInput>,
        Option<mpsc::UnboundedSender<WorkflowInput>>,
    ),
    metrics: Arc<CoordinatorMetrics>,
) {
    let mut records: Vec<RecordWrite> = Vec::new();
    let mut index: HashMap<JobId, usize> = HashMap::new();
    let mut actions: Vec<AfterCommit> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    let mut lazy_since: Option<tokio::time::Instant> = None;
    loop {
        if records.is_empty() {
            tokio::select! {
                _ = demote.cancelled() => return,
                req = rx.recv() => match req {
                    Some(req) => add(&mut records, &mut index, &mut actions, req),
                    None => return,
                },
            }
        }
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => add(&mut records, &mut index, &mut actions, req),
                Err(_) => break,
            }
        }
        // A batch of only "now running" records can wait a little: nothing
        // waits on it, and the attempt's result usually arrives soon and
        // replaces it, saving a transaction per short job.
        let lazy = actions.is_empty()
            && records
                .iter()
                .all(|r| r.run.is_none() && r.job.state == augur_core::JobState::Running);
        if lazy {
            let since = lazy_since.get_or_insert_with(tokio::time::Instant::now);
            let deadline = *since + LAZY_WRITE_DELAY;
            if tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = demote.cancelled() => return,
                    req = rx.recv() => {
                        match req {
                            Some(req) => add(&mut records, &mut index, &mut actions, req),
                            None => return,
                        }
                        continue;
                    }
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
        lazy_since = None;
        let started = std::time::Instant::now();
        let result = tokio::select! {
            _ = demote.cancelled() => return,
            r = store.commit_batch(&fence, &records) => r,
        };
        metrics.etcd("commit", started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                backoff = Duration::from_millis(50);
                // A task job's end is durable: its run may go on.
                if let Some(workflows) = &workflows {
                    for r in &records {
                        if r.job.state.is_terminal() && r.job.spec.labels.contains_key(LABEL_RUN) {
                            let _ = workflows.send(WorkflowInput::JobDone(Box::new(r.job.clone())));
                        }
                    }
                }
                records.clear();
                index.clear();
                for action in actions.drain(..) {
                    run_action(action, &brain);
                }
            }
            Err(StoreError::Fenced { epoch }) => {
                error!(
                    epoch,
                    "fencing guard failed: no longer leader, stopping dispatch"
                );
                demote.cancel();
                return;
            }
            Err(e) => {
                // Keep the batch; new records keep coalescing into it.
                warn!(error = %e, pending = records.len(), "leader write failed; retrying");
                tokio::select! {
                    _ = demote.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn add(
    records: &mut Vec<RecordWrite>,
    index: &mut HashMap<JobId, usize>,
    actions: &mut Vec<AfterCommit>,
    req: WriteRequest,
) {
    let id = req.record.id;
    match index.get(&id) {
        Some(&i) => {
            // The latest record wins; a run record already queued for the job
            // stays (it belongs to an attempt that ended in this batch).
            let entry = &mut records[i];
            entry.job = req.record;
            if req.run.is_some() {
                entry.run = req.run;
            }
        }
        None => {
            index.insert(id, records.len());
            records.push(RecordWrite {
                job: req.record,
                run: req.run,
            });
        }
    }
    if let Some(a) = req.after {
        actions.push(a);
    }
}

fn run_action(action: AfterCommit, brain: &mpsc::UnboundedSender<LeaderInput>) {
    match action {
        AfterCommit::Send {
            tx,
            msg,
            worker,
            job,
            span,
        } => {
            let delivered = tx.send(Ok(*msg)).is_ok();
            if let Some(mut span) = span {
                if !delivered {
                    span.fail("stream_closed", "the worker's stream was gone".into());
                }
                span.end();
            }
            if !delivered {
                if let Some((job, attempt)) = job {
                    let _ = brain.send(LeaderInput::SendFailed {
                        worker,
                        job,
                        attempt,
                    });
                }
            }
        }
        AfterCommit::Reply(reply, record) => {
            let _ = reply.send(Ok(job_to_pb(&record)));
        }
    }
}

#[cfg(test)]
mod tests;
