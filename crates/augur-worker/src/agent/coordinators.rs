//! How a worker finds the leader without etcd: it asks the coordinators it
//! was given (`--coordinators`), any of which answers `WhoLeads` from the
//! election it follows. A follower that refuses an attach names the leader's
//! address; that coordinator is asked first next time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use augur_proto::v1 as pb;
use augur_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::WorkerError;

/// Who leads, as a coordinator said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    pub node_id: String,
    /// Its advertised API URL.
    pub address: String,
    pub epoch: i64,
}

/// Metadata naming the leader on a follower's refusal of an attach.
pub(crate) const LEADER_HEADER: &str = "x-augur-leader";

/// How long one coordinator may take to say who leads.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The coordinators a worker knows, with a channel to each (connected lazily).
pub(crate) struct Coordinators {
    urls: Vec<String>,
    tls: Option<ClientTlsConfig>,
    join_token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    channels: Mutex<HashMap<String, Channel>>,
    next: AtomicUsize,
    /// A leader address a follower named: asked first.
    hint: Mutex<Option<String>>,
}

impl Coordinators {
    pub fn new(
        urls: Vec<String>,
        tls: Option<ClientTlsConfig>,
        join_token: Option<&augur_core::auth::Secret>,
    ) -> Result<Self, WorkerError> {
        if urls.is_empty() {
            return Err(WorkerError::Config(
                "--coordinators: give at least one coordinator URL".into(),
            ));
        }
        let join_token = match join_token {
            Some(token) => Some(token.expose().parse().map_err(|_| {
                WorkerError::Config("the join token is not printable ASCII".into())
            })?),
            None => None,
        };
        let coordinators = Coordinators {
            urls,
            tls,
            join_token,
            channels: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            hint: Mutex::new(None),
        };
        for url in &coordinators.urls {
            coordinators.endpoint(url)?;
        }
        Ok(coordinators)
    }

    /// The endpoint of a coordinator URL: TLS when configured, HTTP/2 pings
    /// that notice a frozen peer, bounded connects.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, WorkerError> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| WorkerError::Config(format!("coordinator address {url:?}: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| WorkerError::Config(format!("TLS to {url}: {e}")))?;
        }
        Ok(endpoint
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true))
    }

    /// Attaches the worker's credentials to a request.
    pub fn authorise<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(token) = &self.join_token {
            request
                .metadata_mut()
                .insert("x-augur-join-token", token.clone());
        }
    }

    /// Remembers the leader a follower named.
    pub fn hint(&self, status: &tonic::Status) {
        let named = status
            .metadata()
            .get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if named.is_some() {
            *self.hint.lock().unwrap_or_else(|p| p.into_inner()) = named;
        }
    }

    fn channel(&self, url: &str) -> Result<Channel, WorkerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = self.endpoint(url)?.connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// The order to ask in: the hinted leader, then every coordinator from
    /// the next in turn (so a dead first one does not delay every look-up).
    fn order(&self) -> Vec<String> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<String> = self
            .hint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .into_iter()
            .collect();
        for i in 0..self.urls.len() {
            let url = &self.urls[(start + i) % self.urls.len()];
            if !order.contains(url) {
                order.push(url.clone());
            }
        }
        order
    }

    /// Who leads, from the first coordinator that answers. `Ok(None)`: one
    /// answered that no leader is elected. A refusal of this worker's
    /// credentials is returned as it is (asking others would not help).
    pub async fn who_leads(&self) -> Result<Option<LeaderInfo>, WorkerError> {
        let mut last = None;
        for url in self.order() {
            let mut client = WorkerServiceClient::new(self.channel(&url)?);
            let mut request = tonic::Request::new(pb::WhoLeadsRequest {});
            request.set_timeout(ASK_TIMEOUT);
            self.authorise(&mut request);
            match tokio::time::timeout(ASK_TIMEOUT, client.who_leads(request)).await {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    if answer.node_id.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(LeaderInfo {
                        node_id: answer.node_id,
                        address: answer.address,
                        epoch: answer.epoch,
                    }));
                }
                Ok(Err(status))
                    if matches!(
                        status.code(),
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                    ) =>
                {
                    return Err(status.into())
                }
                Ok(Err(status)) => last = Some(WorkerError::Stream(status)),
                Err(_) => {
                    last = Some(WorkerError::Stream(tonic::Status::deadline_exceeded(
                        format!("coordinator {url} did not say who leads in time"),
                    )))
                }
            }
        }
        Err(last.unwrap_or(WorkerError::NoLeader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinators(urls: &[&str]) -> Coordinators {
        Coordinators::new(urls.iter().map(|u| u.to_string()).collect(), None, None)
            .expect("valid URLs")
    }

    #[test]
    fn every_coordinator_is_asked_in_turn_and_a_named_leader_first() {
        let c = coordinators(&["http://a:1", "http://b:1", "http://c:1"]);
        assert_eq!(c.order(), ["http://a:1", "http://b:1", "http://c:1"]);
        assert_eq!(c.order(), ["http://b:1", "http://c:1", "http://a:1"]);
        let mut refusal = tonic::Status::failed_precondition("not the leader");
        refusal
            .metadata_mut()
            .insert(LEADER_HEADER, "http://c:1".parse().expect("ascii metadata"));
        c.hint(&refusal);
        assert_eq!(c.order(), ["http://c:1", "http://a:1", "http://b:1"]);
        // The hint is used once.
        assert_eq!(c.order(), ["http://a:1", "http://b:1", "http://c:1"]);
    }

    #[test]
    fn no_coordinators_or_a_bad_url_is_a_configuration_error() {
        assert!(Coordinators::new(Vec::new(), None, None).is_err());
        assert!(Coordinators::new(vec!["not a url".into()], None, None).is_err());
    }
}
