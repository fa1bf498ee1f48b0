//! Workflow runs in etcd: a header per run (state, params, owner, trace), the
//! workflow file stored once, one record per task (its decision and its
//! `for_each` items) and one per task instance (state, job, outputs). The
//! leader writes them in fenced transactions; an instance's record and the
//! job it creates always share one transaction, so a leader that dies at any
//! point leaves either both or neither (see ARCHITECTURE.md, "Workflows").

use std::collections::BTreeMap;

use augur_core::{JobId, JobRecord};
use augur_workflow::engine::{Instance, TaskRun};
use augur_workflow::{InstanceState, Outputs, RunState, RunStatus, WorkflowFile};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchStream,
};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::jobs::{pending_entry, StoreLimits};
use crate::keys::{prefix_end, Keys};
use crate::leadership::Fence;
use crate::{Result, StoreError};

/// Run ids are `wf-` and a ULID, so they sort by submission time.
pub const RUN_ID_PREFIX: &str = "wf-";

/// A fresh run id.
pub fn new_run_id() -> String {
    format!("{RUN_ID_PREFIX}{}", JobId::generate())
}

/// Checks a run id from a caller (it becomes part of keys).
pub fn check_run_id(id: &str) -> std::result::Result<(), String> {
    match id.strip_prefix(RUN_ID_PREFIX).map(str::parse::<JobId>) {
        Some(Ok(_)) => Ok(()),
        _ => Err(format!(
            "{id:?} is not a workflow run id (wf- and 26 characters)"
        )),
    }
}

/// A run's header: everything but its tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub v: u32,
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    pub params: BTreeMap<String, String>,
    pub status: RunStatus,
    pub started: bool,
    pub submitted_at_ms: i64,
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    #[serde(default)]
    pub deadline_ms: Option<i64>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The `workflow.run` span's context: every task's job joins its trace.
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
    /// The schedule that fired it, if any.
    #[serde(default)]
    pub schedule: Option<String>,
    /// How many tasks the workflow has (DAG and finally).
    pub tasks: usize,
    /// Instances by state, as of the last write.
    #[serde(default)]
    pub counts: BTreeMap<String, u32>,
}

impl RunHeader {
    /// The header's run fields taken from `state` (the rest kept).
    pub fn update_from(&mut self, state: &RunState) {
        self.status = state.status;
        self.started = state.started;
        self.finished_at_ms = state.finished_at_ms;
        self.deadline_ms = state.deadline_ms;
        self.params = state.params.clone();
        self.counts = counts(state);
    }
}

/// Instances of a run by state name.
pub fn counts(state: &RunState) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for t in &state.tasks {
        if !t.decided {
            *counts
                .entry(state_name(InstanceState::Pending))
                .or_insert(0) += 1;
            continue;
        }
        for i in &t.instances {
            *counts.entry(state_name(i.state)).or_insert(0) += 1;
        }
    }
    counts
}

/// An instance state's name as the API shows it.
pub fn state_name(state: InstanceState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A run state's name as the API shows it.
pub fn status_name(status: RunStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The workflow file of a run, stored once at submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecRecord {
    pub v: u32,
    pub file: WorkflowFile,
}

/// One task's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub v: u32,
    pub decided: bool,
    pub placeholder: bool,
    pub fanned: bool,
    pub generation: u32,
    /// How many instances it has; those without a record are waiting.
    pub instances: usize,
    /// The `for_each` items of a fanned-out task, by instance.
    #[serde(default)]
    pub items: Vec<String>,
}

impl TaskRecord {
    pub fn of(run: &TaskRun) -> TaskRecord {
        TaskRecord {
            v: 1,
            decided: run.decided,
            placeholder: run.placeholder,
            fanned: run.fanned,
            generation: run.generation,
            instances: run.instances.len(),
            items: if run.fanned {
                run.instances
                    .iter()
                    .map(|i| i.item.clone().unwrap_or_default())
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// One task instance (its item lives in the task's record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub v: u32,
    pub state: InstanceState,
    pub generation: u32,
    #[serde(default)]
    pub outputs: Outputs,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub interrupted: bool,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub attempts: u32,
}

impl InstanceRecord {
    pub fn of(i: &Instance) -> InstanceRecord {
        InstanceRecord {
            v: 1,
            state: i.state,
            generation: i.generation,
            outputs: i.outputs.clone(),
            message: i.message.clone(),
            interrupted: i.interrupted,
            job_id: i.job_id.clone(),
            attempts: i.attempts,
        }
    }
}

/// A run as stored.
#[derive(Clone, Debug)]
pub struct StoredRun {
    pub header: RunHeader,
    pub file: WorkflowFile,
    pub tasks: Vec<Option<TaskRecord>>,
    pub instances: BTreeMap<(usize, usize), InstanceRecord>,
}

impl StoredRun {
    /// The engine's state of the run.
    pub fn state(&self) -> RunState {
        let h = &self.header;
        let tasks = (0..h.tasks)
            .map(|t| {
                let Some(Some(rec)) = self.tasks.get(t) else {
                    return TaskRun::default();
                };
                let mut run = TaskRun {
                    decided: rec.decided,
                    placeholder: rec.placeholder,
                    fanned: rec.fanned,
                    generation: rec.generation,
                    instances: (0..rec.instances)
                        .map(|k| {
                            let item = rec.fanned.then(|| rec.items.get(k).cloned()).flatten();
                            match self.instances.get(&(t, k)) {
                                Some(i) => Instance {
                                    item,
                                    state: i.state,
                                    generation: i.generation,
                                    outputs: i.outputs.clone(),
                                    message: i.message.clone(),
                                    interrupted: i.interrupted,
                                    job_id: i.job_id.clone(),
                                    attempts: i.attempts,
                                },
                                None => Instance {
                                    item,
                                    state: InstanceState::Waiting,
                                    generation: rec.generation,
                                    outputs: Outputs::new(),
                                    message: None,
                                    interrupted: false,
                                    job_id: None,
                                    attempts: 0,
                                },
                            }
                        })
                        .collect(),
                    ..TaskRun::default()
                };
                run.recount();
                run
            })
            .collect();
        RunState {
            run_id: h.id.clone(),
            workflow_name: h.name.clone(),
            params: h.params.clone(),
            status: h.status,
            started: h.started,
            submitted_at_ms: h.submitted_at_ms,
            finished_at_ms: h.finished_at_ms,
            deadline_ms: h.deadline_ms,
            tasks,
        }
    }
}

/// One thing the leader writes about a run.
#[derive(Clone, Debug)]
pub enum WorkflowWrite {
    Header(Box<RunHeader>),
    Task {
        run: String,
        task: usize,
        record: TaskRecord,
    },
    /// Instance records from `from` on are removed (a task a retry reset).
    Truncate {
        run: String,
        task: usize,
        from: usize,
    },
    /// An instance's record, with the job it creates (record, pending-index
    /// entry and idempotency key) in the same transaction.
    Instance {
        run: String,
        task: usize,
        index: usize,
        record: Box<InstanceRecord>,
        job: Option<Box<JobRecord>>,
    },
    /// The run ended: it leaves the active index.
    Ended {
        run: String,
    },
    /// An ended run runs again (a retry): it is back in the active index.
    Reopened {
        run: String,
    },
}

/// Result of a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunCreated {
    Created,
    /// The idempotency key was taken: this is the run it names.
    Existing(String),
}

/// Read and write access to workflow runs.
#[derive(Clone)]
pub struct WorkflowStore {
    client: Client,
    keys: Keys,
    limits: StoreLimits,
}

/// Keys read per page.
const PAGE: i64 = 500;

impl WorkflowStore {
    pub fn new(client: Client, keys: Keys, limits: StoreLimits) -> Self {
        WorkflowStore {
            client,
            keys,
            limits,
        }
    }

    /// Stores a new run (header, file, active-index entry, idempotency key)
    /// in one transaction; any coordinator may. A taken idempotency key
    /// writes nothing and names the existing run.
    pub async fn create(&self, header: &RunHeader, file: &WorkflowFile) -> Result<RunCreated> {
        let k = &self.keys;
        let run_key = k.workflow_run(&header.id);
        let mut guards = vec![Compare::version(run_key.clone(), CompareOp::Equal, 0)];
        let spec = SpecRecord {
            v: 1,
            file: file.clone(),
        };
        let mut ops = vec![
            TxnOp::put(run_key, encode(header), None),
            TxnOp::put(k.workflow_spec(&header.id), encode(&spec), None),
            TxnOp::put(k.workflow_active(&header.id), Vec::new(), None),
        ];
        let mut otherwise = Vec::new();
        if let Some(key) = &header.idempotency_key {
            let idem = k.workflow_idempotency(key);
            guards.push(Compare::version(idem.clone(), CompareOp::Equal, 0));
            ops.push(TxnOp::put(idem.clone(), header.id.clone(), None));
            otherwise.push(TxnOp::get(idem, None));
        }
        let resp = self
            .client
            .clone()
            .txn(Txn::new().when(guards).and_then(ops).or_else(otherwise))
            .await?;
        if resp.succeeded() {
            return Ok(RunCreated::Created);
        }
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    return Ok(RunCreated::Existing(
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    ));
                }
            }
        }
        // The run key existed: a retry of this very call whose answer was
        // lost (ids are fresh ULIDs).
        Ok(RunCreated::Created)
    }

    /// Every key under `prefix` at `revision` (0: now), page by page.
    async fn range(&self, prefix: &str, revision: i64) -> Result<(Vec<KeyValue>, i64)> {
        let end = prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        let mut revision = revision;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self.client.clone().get(start.clone(), Some(opts)).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.kvs().to_vec();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            let done = !more || kvs.is_empty();
            out.extend(kvs);
            if done {
                return Ok((out, revision));
            }
        }
    }

    /// A run's header alone.
    pub async fn header(&self, run: &str) -> Result<Option<RunHeader>> {
        let resp = self
            .client
            .clone()
            .get(self.keys.workflow_run(run), None)
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(decode(kv.key(), kv.value())?)),
            None => Ok(None),
        }
    }

    /// A run with its tasks and instances, read at one revision.
    pub async fn get(&self, run: &str) -> Result<Option<StoredRun>> {
        let k = &self.keys;
        let resp = self.client.clone().get(k.workflow_run(run), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let header: RunHeader = decode(kv.key(), kv.value())?;
        let spec_key = k.workflow_spec(run);
        let spec = self
            .client
            .clone()
            .get(
                spec_key.clone(),
                Some(GetOptions::new().with_revision(revision)),
            )
            .await?;
        let file = match spec.kvs().first() {
            Some(kv) => decode::<SpecRecord>(kv.key(), kv.value())?.file,
            None => {
                return Err(StoreError::Corrupt {
                    key: spec_key,
                    reason: "the run's workflow file is missing".into(),
                })
            }
        };
        let mut tasks = vec![None; header.tasks];
        let prefix = k.workflow_tasks_prefix(run);
        for kv in self.range(&prefix, revision).await?.0 {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let index = key
                .strip_prefix(&prefix)
                .and_then(|t| t.parse::<usize>().ok());
            if let Some(slot) = index.and_then(|t| tasks.get_mut(t)) {
                *slot = Some(decode::<TaskRecord>(kv.key(), kv.value())?);
            }
        }
        let mut instances = BTreeMap::new();
        let prefix = k.workflow_instances_prefix(run);
        for kv in self.range(&prefix, revision).await?.0 {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some((t, i)) = key.strip_prefix(&prefix).and_then(|rest| {
                let (t, i) = rest.split_once('/')?;
                Some((t.parse::<usize>().ok()?, i.parse::<usize>().ok()?))
            }) else {
                continue;
            };
            instances.insert((t, i), decode::<InstanceRecord>(kv.key(), kv.value())?);
        }
        Ok(Some(StoredRun {
            header,
            file,
            tasks,
            instances,
        }))
    }

    /// Run headers, newest first, whose status is `status` (any when
    /// `None`), at most `limit`. Undecodable headers are skipped with a warning.
    pub async fn list(&self, status: Option<RunStatus>, limit: usize) -> Result<Vec<RunHeader>> {
        let prefix = self.keys.workflow_runs_prefix();
        let mut end = prefix_end(&prefix);
        let mut out = Vec::new();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_sort(SortTarget::Key, SortOrder::Descend);
            let resp = self.client.clone().get(prefix.clone(), Some(opts)).await?;
            for kv in resp.kvs() {
                match decode::<RunHeader>(kv.key(), kv.value()) {
                    Ok(h) if status.is_none_or(|s| s == h.status) => {
                        out.push(h);
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping undecodable workflow run"),
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => end = last.key().to_vec(),
                _ => return Ok(out),
            }
        }
    }

    /// Ids of runs not yet ended, and the revision they were read at.
    pub async fn active(&self) -> Result<(Vec<String>, i64)> {
        let prefix = self.keys.workflow_active_prefix();
        let (kvs, revision) = self.range(&prefix, 0).await?;
        let ids = kvs
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                key.strip_prefix(&prefix).map(str::to_string)
            })
            .filter(|id| check_run_id(id).is_ok())
            .collect();
        Ok((ids, revision))
    }

    /// Watches the active index after `revision`: runs submitted through
    /// any coordinator appear here.
    pub async fn watch_active(&self, after_revision: i64) -> Result<ActiveWatch> {
        let prefix = self.keys.workflow_active_prefix();
        let stream = crate::watch_prefix(&self.client, &prefix, after_revision).await?;
        Ok(ActiveWatch { stream, prefix })
    }

    /// The operations of one write, and the guards they need.
    fn ops_of(&self, write: &WorkflowWrite) -> (Vec<Compare>, Vec<TxnOp>) {
        let k = &self.keys;
        match write {
            WorkflowWrite::Header(h) => (
                Vec::new(),
                vec![TxnOp::put(k.workflow_run(&h.id), encode(h.as_ref()), None)],
            ),
            WorkflowWrite::Task { run, task, record } => (
                Vec::new(),
                vec![TxnOp::put(
                    k.workflow_task(run, *task),
                    encode(record),
                    None,
                )],
            ),
            WorkflowWrite::Truncate { run, task, from } => {
                let end = prefix_end(&k.workflow_task_instances_prefix(run, *task));
                let opts = etcd_client::DeleteOptions::new().with_range(end);
                (
                    Vec::new(),
                    vec![TxnOp::delete(
                        k.workflow_instance(run, *task, *from),
                        Some(opts),
                    )],
                )
            }
            WorkflowWrite::Instance {
                run,
                task,
                index,
                record,
                job,
            } => {
                let mut guards = Vec::new();
                let mut ops = vec![TxnOp::put(
                    k.workflow_instance(run, *task, *index),
                    encode(record.as_ref()),
                    None,
                )];
                if let Some(job) = job {
                    ops.push(TxnOp::put(k.job(&job.id), encode(job.as_ref()), None));
                    ops.push(TxnOp::put(
                        k.pending(&job.id),
                        encode(&pending_entry(job)),
                        None,
                    ));
                    if let Some(key) = &job.spec.idempotency_key {
                        let idem = k.idempotency(key);
                        guards.push(Compare::version(idem.clone(), CompareOp::Equal, 0));
                        ops.push(TxnOp::put(idem, job.id.to_string(), None));
                    }
                }
                (guards, ops)
            }
            WorkflowWrite::Ended { run } => (
                Vec::new(),
                vec![TxnOp::delete(k.workflow_active(run), None)],
            ),
            WorkflowWrite::Reopened { run } => (
                Vec::new(),
                vec![TxnOp::put(k.workflow_active(run), Vec::new(), None)],
            ),
        }
    }

    /// Writes these in order, in as few fenced transactions as etcd's op
    /// limit allows (one write's operations are never split). A failed fence
    /// is [`StoreError::Fenced`]; a job's idempotency key found taken is
    /// [`StoreError::AlreadyExists`] (the caller reloads the run: an earlier
    /// try whose answer was lost did commit). Transactions before the failing
    /// one stay committed.
    pub async fn commit(&self, fence: &Fence, writes: &[WorkflowWrite]) -> Result<usize> {
        let budget = self.limits.max_txn_ops.max(8);
        let mut guards = vec![fence.guard()];
        let mut ops: Vec<TxnOp> = Vec::new();
        let mut txns = 0;
        for write in writes {
            let (g, o) = self.ops_of(write);
            if !ops.is_empty() && (ops.len() + o.len() > budget || guards.len() + g.len() > budget)
            {
                self.commit_ops(fence, std::mem::take(&mut guards), std::mem::take(&mut ops))
                    .await?;
                txns += 1;
                guards.push(fence.guard());
            }
            guards.extend(g);
            ops.extend(o);
        }
        if !ops.is_empty() {
            self.commit_ops(fence, guards, ops).await?;
            txns += 1;
        }
        Ok(txns)
    }

    async fn commit_ops(&self, fence: &Fence, guards: Vec<Compare>, ops: Vec<TxnOp>) -> Result<()> {
        let only_fence = guards.len() == 1;
        let resp = self
            .client
            .clone()
            .txn(Txn::new().when(guards).and_then(ops))
            .await?;
        if resp.succeeded() {
            return Ok(());
        }
        if !only_fence {
            let check = self
                .client
                .clone()
                .txn(Txn::new().when(vec![fence.guard()]))
                .await?;
            if check.succeeded() {
                return Err(StoreError::AlreadyExists {
                    key: self.keys.idempotency("wf/"),
                    reason: "a task job's idempotency key is taken: the run is reloaded".into(),
                });
            }
        }
        Err(StoreError::Fenced {
            epoch: fence.epoch(),
        })
    }

    /// Removes ended runs (every key of the run) that ended before
    /// `cutoff_ms`, and beyond the newest `keep_max` ended runs. Fenced.
    pub async fn purge_finished(
        &self,
        fence: &Fence,
        cutoff_ms: i64,
        keep_max: usize,
    ) -> Result<usize> {
        let mut ended: Vec<RunHeader> = self
            .list(None, usize::MAX)
            .await?
            .into_iter()
            .filter(|h| h.status != RunStatus::Running)
            .collect();
        // Newest first.
        ended.sort_by_key(|h| std::cmp::Reverse(h.finished_at_ms.unwrap_or(h.submitted_at_ms)));
        let k = &self.keys;
        let mut removed = 0;
        for (rank, h) in ended.iter().enumerate() {
            let at = h.finished_at_ms.unwrap_or(h.submitted_at_ms);
            if at >= cutoff_ms && rank < keep_max {
                continue;
            }
            let range = |prefix: String| {
                let end = prefix_end(&prefix);
                TxnOp::delete(
                    prefix,
                    Some(etcd_client::DeleteOptions::new().with_range(end)),
                )
            };
            let mut ops = vec![
                TxnOp::delete(k.workflow_run(&h.id), None),
                TxnOp::delete(k.workflow_spec(&h.id), None),
                TxnOp::delete(k.workflow_active(&h.id), None),
                range(k.workflow_tasks_prefix(&h.id)),
                range(k.workflow_instances_prefix(&h.id)),
            ];
            if let Some(key) = &h.idempotency_key {
                ops.push(TxnOp::delete(k.workflow_idempotency(key), None));
            }
            self.commit_ops(fence, vec![fence.guard()], ops).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A watch on the active index.
pub struct ActiveWatch {
    stream: WatchStream,
    prefix: String,
}

impl ActiveWatch {
    /// Ids of runs added to the active index since the last call. Errors
    /// when the watch ends (the caller reloads).
    pub async fn next(&mut self) -> Result<Vec<String>> {
        crate::next_puts(&mut self.stream, &self.prefix, |id| {
            check_run_id(id).is_ok().then(|| id.to_string())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_checked() {
        let id = new_run_id();
        assert!(check_run_id(&id).is_ok(), "{id}");
        for bad in ["", "wf-", "wf-x", "01J0", "wf-../../x"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_names_are_snake_case() {
        assert_eq!(state_name(InstanceState::UpstreamFailed), "upstream_failed");
        assert_eq!(status_name(RunStatus::TimedOut), "timed_out");
    }
}

#[cfg(test)]
#[path = "workflows_count_tests.rs"]
mod count_tests;
