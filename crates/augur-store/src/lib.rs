//! Augur's durable state in etcd.
//!
//! Only this crate knows the key layout ([`keys`]) and the value codecs
//! ([`codec`]). Everything above it talks to the narrow domain types:
//! [`JobStore`], [`WorkerRegistry`] and [`Leadership`]. Leader writes are etcd
//! transactions guarded by a [`Fence`] (the leader's election key must still have
//! the create revision it won with), so a deposed leader can never write.

pub mod codec;
mod endpoints;
pub mod jobs;
pub mod keys;
pub mod leader_store;
pub mod leadership;
pub mod lease;
pub mod model;
pub mod placement_config;
pub mod runs;
pub mod schedules;
pub mod tokens;
pub mod workers;
pub mod workflows;

use std::time::Duration;

pub use etcd_client::Client as EtcdClient;
pub use jobs::{CreateOutcome, JobFilter, JobPage, JobStore, JobWrite, StoreLimits};
pub use keys::Keys;
pub use leader_store::{LeaderStore, MemoryJobStore, RecordWrite};
pub use leadership::{Fence, LeaderInfo, Leadership};
pub use lease::LeaseHandle;
pub use model::{ModelStore, StoredModel, STORED_MODEL_VERSION};
pub use placement_config::{
    PlacementConfigChange, PlacementConfigStore, PlacementConfigWatch, StoredPlacementConfig,
};
pub use runs::RunHistory;
pub use schedules::{ScheduleStore, StoredSchedule, Written};
pub use tokens::{TokenChange, TokenStore, TokenWatch};
pub use workers::{WorkerEvent, WorkerRegistry};
pub use workflows::{RunCreated, RunHeader, StoredRun, WorkflowStore, WorkflowWrite};

/// Errors of the store. `is_retryable` tells callers whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd could not be reached or answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The fencing guard failed: this process is no longer the leader.
    #[error("fenced: the leadership epoch {epoch} is no longer current")]
    Fenced { epoch: i64 },
    /// A stored value could not be decoded.
    #[error("corrupt value at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// A watch was cancelled by etcd (e.g. its start revision was compacted).
    #[error("watch on {prefix} ended: {reason}")]
    WatchEnded { prefix: String, reason: String },
    /// The lease backing a registration or leadership expired.
    #[error("lease {0} expired")]
    LeaseExpired(i64),
    /// The connection settings are unusable (e.g. an unreadable CA file).
    #[error("etcd connection settings: {0}")]
    Config(String),
    /// A store other than etcd could not be reached (the in-memory store
    /// told to fail, in tests).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A create found its key taken by a different value: for a job, a
    /// colliding id (the caller may submit again, drawing a new one).
    #[error("{key} already exists: {reason}")]
    AlreadyExists { key: String, reason: String },
}

impl StoreError {
    /// Transport and availability errors are retryable; a failed fence, a corrupt
    /// value and an expired lease are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Etcd(_) | StoreError::WatchEnded { .. } | StoreError::Unavailable(_)
        )
    }

    /// Whether the store could not be reached or did not answer in time (a
    /// transport error, a timeout, no etcd leader), as opposed to an answer
    /// (not found, a lost compare, a failed fence, a value it refused). What
    /// the API's circuit breaker counts as a failure.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Etcd(
                etcd_client::Error::IoError(_) | etcd_client::Error::TransportError(_),
            ) => true,
            // tonic reports a refused or broken connection as Unavailable (or,
            // for some HTTP/2 failures, Unknown) and the client's request
            // timeout as Cancelled; etcd answers "no leader" or "request timed
            // out" as Unavailable or DeadlineExceeded.
            StoreError::Etcd(etcd_client::Error::GRpcStatus(status)) => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ),
            // The in-memory store told to fail stands for an unreachable one.
            StoreError::Unavailable(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How many keys start with `prefix`, counted by etcd without sending them.
pub(crate) async fn count_keys(client: &EtcdClient, prefix: String) -> Result<u64> {
    let opts = etcd_client::GetOptions::new()
        .with_range(keys::prefix_end(&prefix))
        .with_count_only();
    let resp = client.clone().get(prefix, Some(opts)).await?;
    Ok(u64::try_from(resp.count()).unwrap_or(0))
}

/// How to authenticate to etcd: TLS (CA, client certificate) and/or an etcd
/// user. Empty: plain connections without a user.
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// CA the etcd servers' certificates chain to; turns TLS on.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// etcd user and password (etcd's RBAC).
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for EtcdSecurity {
    // The password is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl EtcdSecurity {
    fn apply(
        &self,
        mut options: etcd_client::ConnectOptions,
    ) -> Result<etcd_client::ConnectOptions> {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| StoreError::Config(format!("cannot read {}: {e}", path.display())))
        };
        if let Some(ca) = &self.ca {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Config(
                        "--etcd-cert and --etcd-key go together".into(),
                    ))
                }
            }
            options = options.with_tls(tls);
        } else if self.cert.is_some() || self.key.is_some() {
            return Err(StoreError::Config(
                "--etcd-cert/--etcd-key need --etcd-ca (TLS to etcd)".into(),
            ));
        }
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => {
                options = options.with_user(user.clone(), password.clone());
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::Config(
                    "an etcd user needs its password and a password its user".into(),
                ))
            }
        }
        Ok(options)
    }
}

/// Connects to etcd with a bounded connect and request timeout, so an unreachable
/// etcd yields an error rather than a hang. Requests go only to the members
/// that answer while any does ([`endpoints`] says how).
pub async fn connect(endpoints: &[String], request_timeout: Duration) -> Result<EtcdClient> {
    connect_secure(endpoints, request_timeout, &EtcdSecurity::default()).await
}

/// How often clients ping etcd. etcd's gRPC server closes a connection that
/// pings more often than `--grpc-keepalive-min-time` (5 s by default) with
/// "too many pings": the campaign client pinged every 2 s, and followers'
/// campaigns broke with "broken pipe" every ~9 s (seen in the frozen-leader
/// e2e test); the other client pinged at exactly the minimum. 10 s stays
/// clear of it on any etcd configured at its default or lower.
const ETCD_PING_INTERVAL: Duration = Duration::from_secs(10);
const ETCD_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// As [`connect`], with TLS and/or an etcd user.
pub async fn connect_secure(
    endpoints: &[String],
    request_timeout: Duration,
    security: &EtcdSecurity,
) -> Result<EtcdClient> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(request_timeout)
        .with_keep_alive(ETCD_PING_INTERVAL, ETCD_PING_TIMEOUT)
        .with_keep_alive_while_idle(true);
    connect_tracked(endpoints, security.apply(options)?).await
}

/// A client without a per-request timeout, for calls that block by design
/// (a campaign waits until this node leads). Dead connections are still noticed
/// by HTTP/2 keep-alive pings.
pub async fn connect_blocking(endpoints: &[String], security: &EtcdSecurity) -> Result<EtcdClient> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(ETCD_PING_INTERVAL, ETCD_PING_TIMEOUT)
        .with_keep_alive_while_idle(true);
    connect_tracked(endpoints, security.apply(options)?).await
}

/// A client whose requests go only to the members that answer (while any
/// does), rather than etcd-client's default channel over all endpoints, which
/// keeps routing requests to a member whose name no longer resolves or whose
/// port refuses.
async fn connect_tracked(
    endpoints: &[String],
    options: etcd_client::ConnectOptions,
) -> Result<EtcdClient> {
    Ok(EtcdClient::connect_with_balanced_channel(
        endpoints,
        Some(options),
        endpoints::HealthTrackedChannel::spawn(),
    )
    .await?)
}

/// A watch on every key under `prefix`, from the revision after
/// `after_revision` (so a read at that revision followed by this watch misses
/// nothing).
pub(crate) async fn watch_prefix(
    client: &EtcdClient,
    prefix: &str,
    after_revision: i64,
) -> Result<etcd_client::WatchStream> {
    let opts = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_start_revision(after_revision + 1);
    Ok(client.clone().watch(prefix, Some(opts)).await?)
}

/// The next response of a watch, or [`StoreError::WatchEnded`] if etcd closed
/// or cancelled it (e.g. its start revision was compacted): the caller reloads
/// and watches again rather than risk a missed event.
pub(crate) async fn next_watch_response(
    stream: &mut etcd_client::WatchStream,
    prefix: &str,
) -> Result<etcd_client::WatchResponse> {
    let resp = stream
        .message()
        .await?
        .ok_or_else(|| StoreError::WatchEnded {
            prefix: prefix.to_string(),
            reason: "stream closed".into(),
        })?;
    if resp.canceled() {
        return Err(StoreError::WatchEnded {
            prefix: prefix.to_string(),
            reason: format!(
                "cancelled by etcd (compact revision {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            ),
        });
    }
    Ok(resp)
}

/// What follows `prefix` in the keys put since the last call, those `parse`
/// accepts; waits past responses that hold none. Errors as
/// [`next_watch_response`].
pub(crate) async fn next_puts<T>(
    stream: &mut etcd_client::WatchStream,
    prefix: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>> {
    loop {
        let resp = next_watch_response(stream, prefix).await?;
        let found: Vec<T> = resp
            .events()
            .iter()
            .filter(|e| e.event_type() == etcd_client::EventType::Put)
            .filter_map(|e| e.kv())
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                key.strip_prefix(prefix).and_then(&parse)
            })
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
}
