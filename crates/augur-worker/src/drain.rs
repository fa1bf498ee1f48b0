//! Graceful shutdown of a worker (SIGTERM): stop taking work (and tell the
//! leader, which marks the registration draining), let running jobs finish
//! within the drain timeout, hand back what is left, then say goodbye so the
//! leader ends the registration and requeues the handed-back attempts at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use augur_proto::v1 as pb;
use augur_proto::v1::worker_message::Kind as Out;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agent::Agent;

/// Time for the goodbye to leave before the stream is closed.
const GOODBYE_FLUSH: Duration = Duration::from_millis(200);

fn running(agent: &Agent) -> usize {
    agent
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len()
}

async fn wait_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Waits for `shutdown`, drains, then fires `stopped`.
pub(crate) async fn on_shutdown(
    agent: Arc<Agent>,
    shutdown: CancellationToken,
    stopped: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = stopped.cancelled() => return,
    }
    agent.draining.store(true, Ordering::SeqCst);
    let timeout = agent.config.drain_timeout;
    info!(
        running = running(&agent),
        timeout_ms = timeout.as_millis() as u64,
        "draining: no new work, waiting for running jobs"
    );
    // A stream opened later says so in its hello.
    agent.send(Out::Draining(pb::Draining {}));
    let finished = wait_until(Instant::now() + timeout, || running(&agent) == 0).await;
    if !finished {
        let left = running(&agent);
        warn!(
            handed_back = left,
            "drain timeout passed; handing back what still runs"
        );
        agent.handing_back.store(true, Ordering::SeqCst);
        agent.cancel_all();
        // The executor's own TERM → grace → KILL bounds this.
        let bound = agent_kill_bound(&agent);
        wait_until(Instant::now() + bound, || running(&agent) == 0).await;
    }
    // Give the leader a moment to acknowledge the last results, so they are
    // not re-sent from the buffer on the next start.
    wait_until(Instant::now() + Duration::from_secs(5), || {
        agent.buffer.is_empty()
    })
    .await;
    // The registration goes now rather than one lease TTL after the stream
    // closes. Best effort: if the goodbye is lost, the lease expires.
    agent.send(Out::Goodbye(pb::Goodbye {}));
    tokio::time::sleep(GOODBYE_FLUSH).await;
    info!("drain complete");
    stopped.cancel();
}

fn agent_kill_bound(agent: &Agent) -> Duration {
    match &agent.config.executor {
        crate::executor::Executor::Process(p) => p.kill_grace + Duration::from_secs(5),
        crate::executor::Executor::Null => Duration::from_secs(1),
    }
}
