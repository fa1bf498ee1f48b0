//! The `WorkerService`: one bidirectional stream per worker, served by the leader
//! only. Messages in both directions are relayed to and from the leader's shell.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use augur_core::WorkerId;
use augur_proto::v1 as pb;
use augur_proto::v1::worker_service_server::WorkerService;
use augur_store::LeaderInfo;
use futures::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, Instrument};

use crate::leader::LeaderInput;
use crate::Shared;

pub struct Streams {
    pub(crate) shared: Arc<Shared>,
    /// The last answer to "who leads" and when it was read: every worker
    /// asks every heartbeat interval, so answers up to [`WHO_LEADS_CACHE`]
    /// old are served from memory instead of one etcd read per worker.
    pub(crate) who_leads: std::sync::Mutex<Option<(std::time::Instant, Option<LeaderInfo>)>>,
}

/// How long a `WhoLeads` answer is reused.
const WHO_LEADS_CACHE: std::time::Duration = std::time::Duration::from_millis(250);

impl Streams {
    pub fn new(shared: Arc<Shared>) -> Self {
        Streams {
            shared,
            who_leads: std::sync::Mutex::new(None),
        }
    }

    async fn current_leader(&self) -> Result<Option<LeaderInfo>, Status> {
        let cached = self
            .who_leads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < WHO_LEADS_CACHE)
            .map(|(_, leader)| leader.clone());
        if let Some(leader) = cached {
            return Ok(leader);
        }
        let leader = self
            .shared
            .breaker
            .call(self.shared.leadership.current())
            .await?;
        *self.who_leads.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), leader.clone()));
        Ok(leader)
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for Streams {
    type AttachStream = Outbound;

    async fn attach(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let claimed = request
            .metadata()
            .get("x-augur-worker-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let how = self.shared.auth.admit_worker(&request, &claimed)?;
        let certificate = augur_tls::peer_name(&request);
        let peer = crate::auth::peer(&request);
        let Some(leader) = self.shared.leader() else {
            return Err(self.not_the_leader().await);
        };
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream ended before hello"))?;
        let Some(pb::worker_message::Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument("the first message must be hello"));
        };
        let worker = WorkerId::new(hello.worker_id.clone())
            .map_err(|e| Status::invalid_argument(format!("hello.worker_id: {e}")))?;
        let announced =
            crate::leader::announced(&worker, &hello).map_err(Status::invalid_argument)?;
        if how == crate::auth::BY_CERTIFICATE {
            // The certificate proves one identity: the worker may only be the
            // worker its certificate names.
            let named = certificate.as_deref().unwrap_or("");
            if named != worker.as_str() {
                let status = Status::permission_denied(format!(
                    "worker certificate is for {named:?} but the worker says it is {:?}: \
                     issue each worker a certificate named after its --node-id",
                    worker.as_str()
                ));
                self.shared
                    .auth
                    .refuse_worker(&peer, worker.as_str(), &status);
                return Err(status);
            }
        }
        let conn = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.worker_attaches.inc();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        leader.send(LeaderInput::Attached {
            worker: worker.clone(),
            conn,
            hello,
            announced: Box::new(announced),
            tx,
        })?;
        // Relay inbound messages until the worker or the leadership goes away.
        let span = tracing::info_span!("worker_stream", worker_id = %worker, conn);
        tokio::spawn(
            async move {
                while let Some(item) = inbound.next().await {
                    let Ok(msg) = item else { break };
                    let Some(kind) = msg.kind else { continue };
                    if leader
                        .send(LeaderInput::Message {
                            worker: worker.clone(),
                            conn,
                            msg: kind,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
                debug!("worker stream ended");
                let _ = leader.send(LeaderInput::Detached { worker, conn });
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn who_leads(
        &self,
        request: Request<pb::WhoLeadsRequest>,
    ) -> Result<Response<pb::WhoLeadsResponse>, Status> {
        self.shared.auth.admit_worker_lookup(&request)?;
        let leader = self.current_leader().await?;
        Ok(Response::new(match leader {
            Some(l) => pb::WhoLeadsResponse {
                node_id: l.node_id,
                address: l.address,
                epoch: l.epoch,
            },
            None => pb::WhoLeadsResponse::default(),
        }))
    }
}

impl Streams {
    /// A follower's refusal of an attach, naming the leader (if etcd names
    /// one) in the `x-augur-leader` metadata for the worker to follow.
    async fn not_the_leader(&self) -> Status {
        let leader = self
            .current_leader()
            .await
            .ok()
            .flatten()
            .filter(|l| l.node_id != self.shared.node_id);
        let mut status = Status::failed_precondition(format!(
            "{} is not the leader; {}",
            self.shared.node_id,
            match &leader {
                Some(l) => format!("the leader is {} at {}", l.node_id, l.address),
                None => "no leader is elected yet; retry shortly".to_string(),
            }
        ));
        if let Some(value) = leader.and_then(|l| l.address.parse().ok()) {
            status.metadata_mut().insert(LEADER_HEADER, value);
        }
        status
    }
}

/// Metadata naming the leader's address on a follower's refusal.
pub const LEADER_HEADER: &str = "x-augur-leader";
