//! The writer against the in-memory store (same fence semantics as etcd), so
//! the leader's write path is tested without etcd: follow-ups run only once
//! their record is durable, failed commits are retried without losing
//! records, and a failed fence ends the term.

use std::time::Duration;

use augur_core::{JobId, JobRecord, JobSpecInput, JobState, WorkerId};
use augur_proto::v1 as pb;
use augur_store::MemoryJobStore;
use augur_telemetry::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{spawn, AfterCommit, Writer};
use crate::leader::term::Term;
use crate::leader::LeaderInput;

fn job() -> JobRecord {
    let spec = JobSpecInput {
        name: "w".into(),
        command: "true".into(),
        ..Default::default()
    }
    .validate()
    .expect("valid spec");
    JobRecord::new(JobId::generate(), spec, 1_000)
}

struct Rig {
    term: Term,
    writer: Writer,
    _brain: mpsc::UnboundedReceiver<LeaderInput>,
}

fn rig(store: MemoryJobStore, epoch: i64) -> Rig {
    let fence = store.elect(epoch);
    let mut term = Term::new(fence, CancellationToken::new());
    let (brain_tx, brain) = mpsc::unbounded_channel();
    let metrics = Metrics::new(true, false).coordinator();
    let writer = spawn(&mut term, store.clone(), brain_tx, metrics, None);
    Rig {
        term,
        writer,
        _brain: brain,
    }
}

/// Pushes `record` with a follow-up that sends on a channel, and returns the
/// receiving end.
fn push_with_send(
    writer: &Writer,
    record: JobRecord,
) -> mpsc::UnboundedReceiver<Result<pb::CoordinatorMessage, tonic::Status>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let after = AfterCommit::Send {
        tx,
        msg: Box::new(pb::CoordinatorMessage { kind: None }),
        worker: WorkerId::new("w1").expect("id"),
        job: Some((record.id, 1)),
        span: None,
    };
    writer.push(record, None, Some(after));
    rx
}

/// Waits for the follow-up's message (the writer retries failed commits).
async fn expect_sent(
    rx: &mut mpsc::UnboundedReceiver<Result<pb::CoordinatorMessage, tonic::Status>>,
) {
    let sent = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("committed and sent within the retries")
        .expect("a message");
    assert!(sent.is_ok());
}

#[tokio::test]
async fn a_follow_up_runs_only_once_its_record_is_durable() {
    let store = MemoryJobStore::new();
    let rig = rig(store.clone(), 3);
    let mut record = job();
    record.state = JobState::Assigned;
    record.attempt = 1;
    record.worker_id = Some(WorkerId::new("w1").expect("id"));
    // The first two commits fail as if etcd were away: the follow-up waits.
    store.fail_next_commits(2);
    let mut rx = push_with_send(&rig.writer, record.clone());
    expect_sent(&mut rx).await;
    let stored = store.job(&record.id).expect("durable before it was sent");
    assert_eq!(stored.state, JobState::Assigned);
    assert_eq!(
        store.commits(),
        1,
        "one successful commit after two failures"
    );
    rig.term.end(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn records_of_one_job_coalesce_and_the_latest_wins() {
    let store = MemoryJobStore::new();
    let rig = rig(store.clone(), 1);
    store.fail_next_commits(1);
    let mut record = job();
    rig.writer.push(record.clone(), None, None);
    record.state = JobState::Cancelled;
    record.message = "latest".into();
    let mut rx = push_with_send(&rig.writer, record.clone());
    expect_sent(&mut rx).await;
    let stored = store.job(&record.id).expect("stored");
    assert_eq!(stored.message, "latest");
    rig.term.end(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_failed_fence_ends_the_term_and_sends_nothing() {
    let store = MemoryJobStore::new();
    let rig = rig(store.clone(), 4);
    // Another leader is elected: this term's fence no longer holds.
    store.elect(5);
    let cancel = rig.term.cancel_token();
    let record = job();
    let mut rx = push_with_send(&rig.writer, record.clone());
    tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
        .await
        .expect("the writer ends the term on a failed fence");
    assert!(store.job(&record.id).is_none(), "nothing written");
    rig.term.end(Duration::from_secs(1)).await;
    assert!(rx.recv().await.is_none(), "the follow-up never ran");
}
