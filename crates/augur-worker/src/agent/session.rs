//! One stream to the leader, and the task that follows the election for it.
//!
//! The stream's message loop ([`pump`]) never waits on a look-up: a heartbeat
//! is a message built from memory, and the leader is re-resolved every
//! heartbeat interval by a task of its own ([`follow_leader`]) that asks the
//! coordinators (`WhoLeads`) and publishes the answer through a `watch`
//! channel. So an assignment never waits behind a slow coordinator, and a
//! stream to a deposed leader is still dropped within one interval of the
//! election naming another.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use augur_proto::v1 as pb;
use augur_proto::v1::worker_message::Kind as Out;
use augur_proto::v1::worker_service_client::WorkerServiceClient;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::coordinators::{Coordinators, LeaderInfo};
use super::{handle, Agent, Outbound};
use crate::convert::finished_message;
use crate::WorkerError;

/// Resolves the leader every `interval` and publishes it on `leader` when it
/// changes, until `shutdown`. A failed look-up keeps the last answer.
pub(super) async fn follow_leader<F, Fut>(
    mut resolve: F,
    interval: Duration,
    leader: watch::Sender<Option<LeaderInfo>>,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<LeaderInfo>, WorkerError>>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let found = tokio::select! {
            _ = shutdown.cancelled() => return,
            found = resolve() => found,
        };
        match found {
            Ok(now) => {
                leader.send_if_modified(|known| {
                    let changed = *known != now;
                    *known = now;
                    changed
                });
            }
            Err(e) => {
                debug!(error = %e, "cannot learn who leads; keeping the last answer")
            }
        }
    }
}

/// One stream to the current leader, until it breaks, the leader changes or
/// `shutdown` fires.
pub(super) async fn session(
    agent: &Arc<Agent>,
    coordinators: &Coordinators,
    leader_changes: &mut watch::Receiver<Option<LeaderInfo>>,
    shutdown: &CancellationToken,
    sessions: &mut u64,
) -> Result<(), WorkerError> {
    // A fresh look-up (not the follower's last answer, up to an interval
    // old): after a broken stream the leader has often just changed.
    let leader = coordinators
        .who_leads()
        .await?
        .ok_or(WorkerError::NoLeader)?;
    // What the follower published before this look-up is not news.
    leader_changes.borrow_and_update();
    // HTTP/2 pings notice a leader that is frozen (SIGSTOP, a long pause) even
    // though its kernel still holds the TCP connection open.
    let channel = coordinators.endpoint(&leader.address)?.connect().await?;
    let mut client = WorkerServiceClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let hello = agent.hello();
    let _ = tx.send(pb::WorkerMessage {
        kind: Some(Out::Hello(hello)),
    });
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
    if let Ok(value) = agent.id.to_string().parse() {
        request.metadata_mut().insert("x-augur-worker-id", value);
    }
    coordinators.authorise(&mut request);
    let inbound = match client.attach(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            // A follower (the election moved since the look-up) names the
            // leader: ask it first next time.
            coordinators.hint(&status);
            return Err(status.into());
        }
    };
    *agent.outbound.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
    if *sessions > 0 {
        agent.metrics.stream_reconnects.inc();
    }
    *sessions += 1;
    info!(leader = %leader.node_id, epoch = leader.epoch, "attached to leader");
    // Results the previous leader never acknowledged.
    for result in agent.buffer.pending() {
        let _ = tx.send(pb::WorkerMessage {
            kind: Some(Out::Finished(finished_message(&result))),
        });
    }
    pump(agent, &leader, inbound, &tx, leader_changes, shutdown).await
}

/// The message loop of one stream: heartbeats out, the leader's messages in,
/// and an end when the follower reports another leader. Nothing here waits
/// on etcd.
pub(super) async fn pump<S>(
    agent: &Arc<Agent>,
    leader: &LeaderInfo,
    inbound: S,
    tx: &Outbound,
    leader_changes: &mut watch::Receiver<Option<LeaderInfo>>,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError>
where
    S: Stream<Item = Result<pb::CoordinatorMessage, tonic::Status>>,
{
    let mut inbound = std::pin::pin!(inbound);
    let mut heartbeat = tokio::time::interval(agent.config.heartbeat);
    // False once the follower has stopped (the worker is shutting down).
    let mut following = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = heartbeat.tick() => {
                let running = agent.held_attempts();
                let beat = pb::Heartbeat { running_count: running.len() as u32, running };
                let _ = tx.send(pb::WorkerMessage { kind: Some(Out::Heartbeat(beat)) });
            }
            changed = leader_changes.changed(), if following => {
                if changed.is_err() {
                    following = false;
                    continue;
                }
                // Follow the election: a stream to a deposed leader is dropped
                // even if that leader has not noticed yet.
                let now = leader_changes.borrow_and_update().clone();
                if let Some(now) = now.filter(|now| now.epoch != leader.epoch) {
                    info!(old = %leader.node_id, new = %now.node_id, "leader changed; reattaching");
                    return Ok(());
                }
            }
            msg = inbound.next() => {
                match msg {
                    None => return Ok(()),
                    Some(Err(status)) => return Err(status.into()),
                    Some(Ok(msg)) => {
                        if let Some(kind) = msg.kind {
                            handle(agent, kind);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use augur_core::WorkerId;
    use augur_proto::v1::coordinator_message::Kind as In;

    use super::*;
    use crate::buffer::{BufferedResult, ResultBuffer, BUFFERED_RESULT_VERSION};
    use crate::output::OutputStore;

    /// A liveness bound for the tests below, not a speed assertion.
    const BOUND: Duration = Duration::from_secs(30);

    fn agent(dir: &Path) -> Arc<Agent> {
        let mut config = crate::WorkerConfig::new("w1", Vec::new(), dir.to_path_buf());
        config.heartbeat = Duration::from_millis(10);
        Arc::new(Agent {
            id: WorkerId::new("w1").expect("valid id"),
            buffer: ResultBuffer::open(&dir.join("results"), 10).expect("buffer opens"),
            output: OutputStore::open(&dir.join("output")).expect("output store opens"),
            running: Mutex::new(HashMap::new()),
            outbound: Mutex::new(None),
            highest_epoch: Mutex::new(0),
            lease_id: std::sync::atomic::AtomicI64::new(0),
            metrics: augur_telemetry::Metrics::new(false, true).worker(),
            draining: AtomicBool::new(false),
            handing_back: AtomicBool::new(false),
            config,
        })
    }

    fn leader(epoch: i64) -> LeaderInfo {
        LeaderInfo {
            node_id: format!("c{epoch}"),
            address: "http://127.0.0.1:1".into(),
            epoch,
        }
    }

    fn buffered(job_id: &str) -> BufferedResult {
        BufferedResult {
            v: BUFFERED_RESULT_VERSION,
            job_id: job_id.into(),
            attempt: 1,
            epoch: 3,
            outcome: "exited".into(),
            exit_code: Some(0),
            signal: None,
            started_at_ms: 0,
            finished_at_ms: 1,
            usage: Default::default(),
            stdout_tail: vec![b'x'; 4096],
            stderr_tail: Vec::new(),
            message: String::new(),
            outputs: Default::default(),
        }
    }

    /// The stream loop of a session with leader c3, fed by `in_rx`; returns
    /// its task and what it sends.
    fn spawn_pump(
        agent: &Arc<Agent>,
        in_rx: mpsc::UnboundedReceiver<Result<pb::CoordinatorMessage, tonic::Status>>,
        mut changes: watch::Receiver<Option<LeaderInfo>>,
        shutdown: &CancellationToken,
    ) -> (
        tokio::task::JoinHandle<Result<(), WorkerError>>,
        mpsc::UnboundedReceiver<pb::WorkerMessage>,
    ) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            let inbound = UnboundedReceiverStream::new(in_rx);
            pump(
                &agent,
                &leader(3),
                inbound,
                &out_tx,
                &mut changes,
                &shutdown,
            )
            .await
        });
        (task, out_rx)
    }

    async fn next_heartbeat(out: &mut mpsc::UnboundedReceiver<pb::WorkerMessage>) -> pb::Heartbeat {
        loop {
            let message = tokio::time::timeout(BOUND, out.recv())
                .await
                .expect("a heartbeat in time")
                .expect("the loop is running");
            if let Some(Out::Heartbeat(beat)) = message.kind {
                return beat;
            }
        }
    }

    // Regression (issue 12): the heartbeat read the leader from etcd inside the
    // stream's loop, so an assignment could wait up to the etcd timeout behind
    // it. With etcd never answering, heartbeats go on and messages are handled.
    #[tokio::test]
    async fn the_stream_loop_never_waits_on_a_hung_leader_lookup() {
        let dir = tempfile::tempdir().expect("temp dir");
        let agent = agent(dir.path());
        agent
            .buffer
            .push(&buffered("01JTESTUNACKED00000000000A"))
            .expect("buffered");
        let shutdown = CancellationToken::new();
        let (leader_tx, changes) = watch::channel(None);
        let follower = tokio::spawn(follow_leader(
            std::future::pending,
            Duration::from_millis(10),
            leader_tx,
            shutdown.clone(),
        ));
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (pumping, mut out_rx) = spawn_pump(&agent, in_rx, changes, &shutdown);
        // Several heartbeat intervals pass, each with the look-up hanging; every
        // heartbeat lists the unacknowledged result.
        for _ in 0..3 {
            let beat = next_heartbeat(&mut out_rx).await;
            assert_eq!(beat.running_count, 1);
            assert_eq!(beat.running[0].job_id, "01JTESTUNACKED00000000000A");
            assert_eq!(beat.running[0].epoch, 3);
        }
        in_tx
            .send(Ok(pb::CoordinatorMessage {
                kind: Some(In::Welcome(pb::Welcome {
                    leader: "c9".into(),
                    epoch: 9,
                    lease_id: 0,
                })),
            }))
            .expect("loop is listening");
        tokio::time::timeout(BOUND, async {
            while *agent
                .highest_epoch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                != 9
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the message is handled while the look-up hangs");
        shutdown.cancel();
        assert!(pumping.await.expect("no panic").is_ok());
        follower.await.expect("no panic");
    }

    #[tokio::test]
    async fn a_new_leader_in_etcd_ends_the_stream_and_a_missing_one_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let agent = agent(dir.path());
        let shutdown = CancellationToken::new();
        let answer: Arc<Mutex<Option<LeaderInfo>>> = Arc::new(Mutex::new(Some(leader(3))));
        let (leader_tx, changes) = watch::channel(None);
        let follower = tokio::spawn(follow_leader(
            {
                let answer = answer.clone();
                move || {
                    let now = answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    async move { Ok(now) }
                }
            },
            Duration::from_millis(10),
            leader_tx,
            shutdown.clone(),
        ));
        let (_in_tx, in_rx) = mpsc::unbounded_channel();
        let (pumping, mut out_rx) = spawn_pump(&agent, in_rx, changes, &shutdown);
        // The same leader, then none elected for a while: the stream stays.
        next_heartbeat(&mut out_rx).await;
        *answer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        for _ in 0..3 {
            next_heartbeat(&mut out_rx).await;
        }
        assert!(!pumping.is_finished());
        // Another leader: the loop ends so the worker reattaches.
        *answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader(4));
        let ended = tokio::time::timeout(BOUND, pumping)
            .await
            .expect("the loop ends on a new leader")
            .expect("no panic");
        assert!(ended.is_ok());
        shutdown.cancel();
        follower.await.expect("no panic");
    }
}
