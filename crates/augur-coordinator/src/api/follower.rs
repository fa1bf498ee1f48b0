//! What a follower does with the calls that need the leader's live view.
//!
//! It forwards them to the leader, with the whole forward (connecting and the
//! call) bounded by [`FORWARD_TIMEOUT`]: a frozen leader (SIGSTOP, a long
//! pause) still has its kernel accept the connection but never answers
//! HTTP/2, and without the bound a caller would wait for its own deadline.
//! Failing to reach the leader is `Unavailable` naming it; the leader's own
//! answers pass through as they are.
//!
//! The reads it can answer without the leader — cluster status and the
//! workers — it answers from etcd when the leader does not answer: who etcd
//! says leads (with its epoch), the worker registrations and the number of
//! pending jobs. Whether a worker's stream is up and what it runs only the
//! leader knows, so those workers are reported with an unknown state (or
//! disconnected when no leader is elected at all).

use std::future::Future;
use std::time::Duration;

use augur_proto::v1 as pb;
use augur_proto::v1::job_service_client::JobServiceClient;
use augur_store::LeaderInfo;
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::info;

use super::Api;
use crate::convert::worker_to_pb;

/// Longest a forwarded call may take, connecting included.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// A status that comes from this side of the connection — the connection
/// failed, broke or timed out — rather than from the leader's handler.
/// tonic attaches the local error as the status's source; a status the
/// leader sent (decoded from its trailers) has none.
fn is_local_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

fn unreachable(leader: &LeaderInfo, reason: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "leader {} at {} unreachable: {reason}; retry shortly",
        leader.node_id, leader.address
    ))
}

impl Api {
    /// Who etcd says leads, if anyone.
    pub(super) async fn current_leader(&self) -> Result<Option<LeaderInfo>, Status> {
        self.shared
            .breaker
            .call(self.shared.leadership.current())
            .await
    }

    /// The leader to forward a call to: `Unavailable` if there is none, or if
    /// etcd names this coordinator while it does not lead (yet, or any more).
    pub(super) async fn leader_to_forward_to(&self) -> Result<LeaderInfo, Status> {
        let leader = self
            .current_leader()
            .await?
            .ok_or_else(|| Status::unavailable("no leader elected yet; retry shortly"))?;
        if leader.node_id == self.shared.node_id {
            return Err(Status::unavailable("leadership is changing; retry shortly"));
        }
        Ok(leader)
    }

    async fn client_of(&self, leader: &LeaderInfo) -> Result<JobServiceClient<Channel>, Status> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(leader.address.clone())
            .map_err(|e| unreachable(leader, e))?;
        if let Some(tls) = &self.shared.peer_tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| unreachable(leader, e))?;
        }
        let channel = endpoint
            .connect_timeout(FORWARD_TIMEOUT)
            .connect()
            .await
            .map_err(|e| unreachable(leader, e))?;
        Ok(JobServiceClient::new(channel))
    }

    /// Forwards one call to `leader`, within [`FORWARD_TIMEOUT`].
    pub(super) async fn forward<T, F, Fut>(
        &self,
        leader: &LeaderInfo,
        call: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(JobServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let attempt = async {
            let client = self.client_of(leader).await?;
            call(client).await.map_err(|status| {
                if is_local_failure(&status) {
                    unreachable(leader, status.message())
                } else {
                    status
                }
            })
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(unreachable(
                leader,
                format!(
                    "no answer within {}s (frozen or overloaded?)",
                    FORWARD_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// The registered workers as etcd holds them. `connected` is the state of
    /// a worker that is not draining, which only the leader knows for sure.
    pub(super) async fn registered_workers(
        &self,
        connected: pb::WorkerState,
    ) -> Result<Vec<pb::Worker>, Status> {
        let (workers, _) = self
            .shared
            .breaker
            .call(self.shared.leader_stores.registry.list())
            .await?;
        Ok(workers
            .iter()
            .map(|w| {
                let state = if w.draining {
                    pb::WorkerState::Draining
                } else {
                    connected
                };
                worker_to_pb(w, 0, state)
            })
            .collect())
    }

    /// The state of a worker that is not draining, in an answer from etcd.
    fn unknown_connection(leader: Option<&LeaderInfo>) -> pb::WorkerState {
        match leader {
            // No leader: no stream to one.
            None => pb::WorkerState::Disconnected,
            Some(_) => pb::WorkerState::Unspecified,
        }
    }

    /// `ListWorkers` on a follower: the leader's answer, or etcd's if the
    /// leader does not answer.
    pub(super) async fn follower_list_workers(
        &self,
        request: tonic::Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let leader = self.current_leader().await?;
        if let Some(l) = leader.as_ref().filter(|l| l.node_id != self.shared.node_id) {
            let (metadata, _, inner) = request.into_parts();
            let forwarded = super::forwarded(&metadata, inner);
            match self
                .forward(l, |mut client| async move {
                    client.list_workers(forwarded).await
                })
                .await
            {
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    info!(leader = %l.node_id, reason = status.message(), "leader did not answer; listing workers from etcd");
                }
                answer => return answer,
            }
        }
        let workers = self
            .registered_workers(Self::unknown_connection(leader.as_ref()))
            .await?;
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    /// `ClusterStatus` on a follower: the leader's answer (marked as answered
    /// here), or one from etcd if the leader does not answer.
    pub(super) async fn follower_cluster_status(
        &self,
        request: tonic::Request<pb::ClusterStatusRequest>,
        leader: Option<LeaderInfo>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        if let Some(l) = leader.as_ref().filter(|l| l.node_id != self.shared.node_id) {
            let (metadata, _, inner) = request.into_parts();
            let forwarded = super::forwarded(&metadata, inner);
            match self
                .forward(l, |mut client| async move {
                    client.cluster_status(forwarded).await
                })
                .await
            {
                Ok(answer) => {
                    let mut answer = answer.into_inner();
                    answer.answered_by = self.shared.node_id.clone();
                    return Ok(Response::new(answer));
                }
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    info!(leader = %l.node_id, reason = status.message(), "leader did not answer; cluster status from etcd");
                }
                Err(status) => return Err(status),
            }
        }
        let workers = self
            .registered_workers(Self::unknown_connection(leader.as_ref()))
            .await?;
        let pending_jobs = self
            .shared
            .breaker
            .call(self.shared.leader_stores.jobs.count_pending())
            .await?;
        // What runs is known to the leader only.
        Ok(self.status_response(leader, workers, pending_jobs, 0, Vec::new()))
    }

    /// A `ClusterStatus` answer from this node, naming the leader it believes in.
    pub(super) fn status_response(
        &self,
        leader: Option<LeaderInfo>,
        workers: Vec<pb::Worker>,
        pending_jobs: u64,
        running_jobs: u64,
        queued_by_class: Vec<(String, u64)>,
    ) -> Response<pb::ClusterStatusResponse> {
        let (leader_id, address, epoch) = leader
            .map(|l| (l.node_id, l.address, l.epoch))
            .unwrap_or_default();
        Response::new(pb::ClusterStatusResponse {
            leader: leader_id,
            leader_address: address,
            epoch,
            workers,
            answered_by: self.shared.node_id.clone(),
            pending_jobs,
            running_jobs,
            queued_by_class: queued_by_class.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_failures_count_as_an_unreachable_leader() {
        // What the leader's handler sent: no source.
        assert!(!is_local_failure(&Status::not_found("no job x")));
        assert!(!is_local_failure(&Status::unavailable(
            "state store unavailable"
        )));
        // What tonic makes of a local error (its request timeout, a broken
        // connection): the error is kept as the source.
        let local = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert!(is_local_failure(&local));
    }
}
