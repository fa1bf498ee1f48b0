//! Augur's coordinator: serves the gRPC API on every node, campaigns for
//! leadership, and while leading runs the leader's core that places and dispatches jobs
//! (see [`leader`]).

mod api;
pub mod auth;
mod breaker;
pub mod convert;
pub mod leader;
pub mod listener;
pub(crate) mod placement_api;
mod schedule_api;
pub mod services;
mod stream;
mod token_api;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use augur_proto::v1::job_service_server::JobServiceServer;
use augur_proto::v1::worker_service_server::WorkerServiceServer;
use augur_store::{
    JobStore, Keys, Leadership, LeaseHandle, StoreError, StoreLimits, WorkerRegistry,
};
use augur_telemetry::CoordinatorMetrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use auth::AuthConfig;
pub use leader::{LeaderHandle, LeaderSettings};
pub use services::{HttpExtension, Identity, Services};

/// Everything a coordinator needs to run.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub node_id: String,
    pub etcd_endpoints: Vec<String>,
    pub prefix: String,
    /// Address the gRPC server binds.
    pub listen: SocketAddr,
    /// URL workers and other coordinators use to reach this one.
    pub advertise: String,
    pub lease_ttl: Duration,
    pub etcd_timeout: Duration,
    pub max_txn_ops: usize,
    pub max_output_tail: usize,
    pub retention_age: Duration,
    pub retention_count: usize,
    pub retention_interval: Duration,
    pub run_retention: Duration,
    pub run_retention_count: usize,
    pub retrain_interval: Duration,
    pub min_training_runs: usize,
    /// How long a new leader waits for workers to report; default lease TTL + 2 s.
    pub reconcile_grace: Option<Duration>,
    /// TTL of the lease the leader holds for each worker's registration.
    pub worker_lease_ttl: Duration,
    /// Who may call the API and attach as a worker.
    pub auth: AuthConfig,
    /// TLS (and mTLS) for the API and the worker streams; `None`: plain HTTP/2.
    pub tls: Option<augur_tls::ServerTlsFiles>,
    /// TLS settings this coordinator uses to reach a peer coordinator (to
    /// forward calls to the leader): the cluster CA, and this node's
    /// certificate as client identity under mTLS.
    pub peer_tls: Option<augur_tls::ClientTlsFiles>,
    /// How to authenticate to etcd.
    pub etcd_security: augur_store::EtcdSecurity,
    /// Connection cap, handshake and idle deadlines of the API port.
    pub connections: listener::ConnectionSettings,
    /// HTTP routes served beside gRPC on the API port (the web console);
    /// `None`: gRPC only.
    pub http: Option<HttpExtension>,
}

impl CoordinatorConfig {
    /// Defaults for a coordinator of `node_id` on `listen`.
    pub fn new(node_id: &str, etcd_endpoints: Vec<String>, listen: SocketAddr) -> Self {
        CoordinatorConfig {
            node_id: node_id.to_string(),
            etcd_endpoints,
            prefix: "/augur".into(),
            listen,
            advertise: format!("http://{listen}"),
            lease_ttl: Duration::from_secs(5),
            etcd_timeout: Duration::from_secs(5),
            max_txn_ops: 128,
            max_output_tail: 4096,
            retention_age: Duration::from_secs(24 * 3600),
            retention_count: 10_000,
            retention_interval: Duration::from_secs(30),
            run_retention: Duration::from_secs(7 * 24 * 3600),
            run_retention_count: 100_000,
            retrain_interval: Duration::from_secs(60),
            min_training_runs: 50,
            reconcile_grace: None,
            worker_lease_ttl: Duration::from_secs(5),
            auth: AuthConfig::default(),
            tls: None,
            peer_tls: None,
            etcd_security: Default::default(),
            connections: Default::default(),
            http: None,
        }
    }
}

/// Errors that stop a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// State shared by the API, the worker streams and the leadership loop.
pub(crate) struct Shared {
    pub node_id: String,
    pub leadership: Leadership,
    /// Everything a term of leadership writes to (and the API reads).
    pub leader_stores: leader::Stores,
    pub leader: watch::Sender<Option<LeaderHandle>>,
    pub next_conn: AtomicU64,
    pub metrics: Arc<CoordinatorMetrics>,
    /// Fails API calls fast while etcd is unreachable.
    pub breaker: breaker::Breaker,
    /// Who may call the API and attach as a worker.
    pub auth: Arc<auth::Auth>,
    /// TLS to reach peer coordinators (forwarded calls); `None`: plain.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Shared {
    pub fn leader(&self) -> Option<LeaderHandle> {
        self.leader.borrow().clone()
    }
}

/// Runs a coordinator until `shutdown` fires: serves the API, campaigns, leads
/// when elected, and on shutdown resigns so a peer takes over at once.
pub async fn run(
    config: CoordinatorConfig,
    metrics: Arc<CoordinatorMetrics>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| CoordinatorError::Listen {
                addr: config.listen,
                source,
            })?;
    run_on(config, listener, metrics, shutdown).await
}

/// As [`run`], on a listener the caller bound (e.g. to port 0).
pub async fn run_on(
    config: CoordinatorConfig,
    listener: TcpListener,
    metrics: Arc<CoordinatorMetrics>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    config.auth.check().map_err(CoordinatorError::Config)?;
    if config.auth.worker_certificates
        && config
            .tls
            .as_ref()
            .and_then(|t| t.client_ca.as_ref())
            .is_none()
    {
        return Err(CoordinatorError::Config(
            "workers can only prove themselves by certificate when mTLS is on (--tls-client-ca)"
                .into(),
        ));
    }
    let peer_tls = match &config.peer_tls {
        Some(files) => Some(
            augur_tls::client_tls_config(files, None)
                .map_err(|e| CoordinatorError::Config(format!("TLS to peers: {e}")))?,
        ),
        None => None,
    };
    let client = augur_store::connect_secure(
        &config.etcd_endpoints,
        config.etcd_timeout,
        &config.etcd_security,
    )
    .await?;
    let keys = Keys::new(&config.prefix);
    let limits = StoreLimits {
        max_txn_ops: config.max_txn_ops,
    };
    let auth = Arc::new(
        auth::Auth::new(config.auth.clone()).with_refusal_metric(metrics.api_refusals.clone()),
    );
    let shared = Arc::new(Shared {
        node_id: config.node_id.clone(),
        // Campaigning blocks until this node leads: no request timeout there.
        leadership: Leadership::new(client.clone(), keys.clone()).with_campaign_client(
            augur_store::connect_blocking(&config.etcd_endpoints, &config.etcd_security).await?,
        ),
        leader_stores: leader::Stores {
            jobs: JobStore::new(client.clone(), keys.clone(), limits.clone()),
            registry: WorkerRegistry::new(client.clone(), keys.clone()),
            schedules: augur_store::ScheduleStore::new(client.clone(), keys.clone()),
            runs: augur_store::RunHistory::new(client.clone(), keys.clone(), limits.clone()),
            models: augur_store::ModelStore::new(client.clone(), keys.clone()),
            placement: augur_store::PlacementConfigStore::new(client.clone(), keys.clone()),
            workflows: augur_store::WorkflowStore::new(
                client.clone(),
                keys.clone(),
                limits.clone(),
            ),
        },
        leader: watch::channel(None).0,
        next_conn: AtomicU64::new(1),
        metrics,
        breaker: breaker::Breaker::new(Duration::from_secs(1)),
        auth,
        peer_tls,
    });
    let token_store = augur_store::TokenStore::new(client.clone(), keys.clone());
    let token_sync =
        auth::spawn_token_sync(shared.auth.clone(), token_store.clone(), shutdown.clone());
    if config.auth.insecure {
        spawn_insecure_warnings(&config.auth, shutdown.clone());
    }

    let server_stop = CancellationToken::new();
    let api = Arc::new(api::Api {
        shared: shared.clone(),
    });
    let placement = Arc::new(placement_api::PlacementApi::new(
        shared.clone(),
        &client,
        &config,
    ));
    // gRPC services are routed by path (`/augur.v1.Service/Method`); an HTTP
    // extension (the console) gets every other path.
    let base = match &config.http {
        Some(extension) => (extension.0)(services::Services {
            api: api.clone(),
            placement: placement.clone(),
            shared: shared.clone(),
            tls: config.tls.is_some(),
        }),
        None => tonic::service::Routes::default().into_axum_router(),
    };
    let routes = tonic::service::Routes::from(base)
        .add_service(JobServiceServer::from_arc(api))
        .add_service(
            augur_proto::v1::token_service_server::TokenServiceServer::new(token_api::TokenApi {
                shared: shared.clone(),
                store: token_store,
            }),
        )
        .add_service(WorkerServiceServer::new(stream::Streams::new(
            shared.clone(),
        )))
        .add_service(
            augur_proto::v1::placement_service_server::PlacementServiceServer::from_arc(placement),
        );
    let router = tonic::transport::Server::builder()
        // Browsers speak HTTP/1.1 to the console.
        .accept_http1(config.http.is_some())
        // Pings notice a frozen worker (SIGSTOP, a long pause) whose kernel
        // still holds its connection open.
        .http2_keepalive_interval(Some(Duration::from_secs(2)))
        .http2_keepalive_timeout(Some(Duration::from_secs(3)))
        .layer(tower::util::MapResponseLayer::new(
            undecodable_requests_are_invalid_arguments,
        ))
        .add_routes(routes);
    let stopped = server_stop.clone().cancelled_owned();
    let max_connections = connection_cap(&config.connections);
    let conns = shared.metrics.connections.clone();
    let server = match &config.tls {
        Some(files) => {
            let tls = augur_tls::ReloadingServerTls::load(files.clone())
                .map_err(|e| CoordinatorError::Config(format!("TLS: {e}")))?;
            // Certificates reload on SIGHUP or when their files change.
            tls.spawn_reloader(shutdown.clone());
            let incoming = listener::incoming(
                listener,
                max_connections,
                &config.connections,
                Arc::new(conns),
                move |tcp| tokio_rustls::TlsAcceptor::from(tls.server_config()).accept(tcp),
            );
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            let incoming = listener::incoming(
                listener,
                max_connections,
                &config.connections,
                Arc::new(conns),
                |tcp| std::future::ready(Ok(tcp)),
            );
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    info!(node_id = %config.node_id, listen = %config.listen, advertise = %config.advertise, "coordinator serving");

    let settings = Arc::new(LeaderSettings {
        node_id: config.node_id.clone(),
        max_output_tail: config.max_output_tail,
        reconcile_grace: config
            .reconcile_grace
            .unwrap_or(config.lease_ttl + Duration::from_secs(2)),
        worker_lease_ttl: config.worker_lease_ttl,
        retention_age: config.retention_age,
        retention_count: config.retention_count,
        retention_interval: config.retention_interval,
        run_retention: config.run_retention,
        run_retention_count: config.run_retention_count,
        retrain_interval: config.retrain_interval,
        min_training_runs: config.min_training_runs,
    });

    // What to do before the next campaign: nothing, resign the ended term's
    // epoch and campaign again with its lease, or revoke a lease presumed lost
    // whose election key must go before anyone, this node included, can lead.
    let mut next = TermEnd::Done;
    while !shutdown.is_cancelled() {
        let lease = match std::mem::replace(&mut next, TermEnd::Done) {
            TermEnd::Done => None,
            TermEnd::Again(again) => {
                let (lease, fence) = *again;
                // Give up the old epoch (a write of the ended term still in
                // flight then fails its guard) but keep the lease: the
                // campaign that follows wins at once unless another node waits.
                match shared.leadership.resign(&fence).await {
                    Ok(()) => Some(lease),
                    Err(_) if lease.lost().is_cancelled() => {
                        next = TermEnd::LeaseLost(lease.id());
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot resign the ended term yet");
                        next = TermEnd::Again(Box::new((lease, fence)));
                        pause(&shutdown, Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            TermEnd::LeaseLost(id) => {
                if let Err(e) = augur_store::lease::revoke_id(&client, id).await {
                    // etcd is not back yet: try again shortly.
                    tracing::debug!(lease_id = id, error = %e, "cannot revoke the lost lease yet");
                    next = TermEnd::LeaseLost(id);
                    pause(&shutdown, Duration::from_millis(200)).await;
                    continue;
                }
                info!(
                    lease_id = id,
                    "lost leadership lease revoked; campaigning at once"
                );
                None
            }
        };
        match term(&config, &shared, &settings, &client, &shutdown, lease).await {
            Ok(end) => next = end,
            Err(e) => {
                warn!(error = %e, "leadership term ended with an error; campaigning again");
                pause(&shutdown, Duration::from_secs(1)).await;
            }
        }
    }

    server_stop.cancel();
    token_sync.abort();
    match server.await {
        Ok(result) => result?,
        Err(e) => error!(error = %e, "gRPC server task failed"),
    }
    info!("coordinator stopped");
    Ok(())
}

/// The API port's connection cap: as configured, or derived from the
/// open-files limit.
fn connection_cap(settings: &listener::ConnectionSettings) -> usize {
    let open_files = listener::open_files_limit().map(|(soft, _)| soft);
    let cap = match (settings.max_connections, &open_files) {
        (Some(cap), _) => cap,
        (None, Ok(soft)) => listener::derived_max_connections(*soft),
        (None, Err(_)) => listener::derived_max_connections(1024),
    };
    match open_files {
        Ok(soft) if cap as u64 >= soft => warn!(
            max_connections = cap,
            open_files = soft,
            "the connection cap is not below the open-files limit: a flood of connections can starve etcd of files"
        ),
        Ok(soft) => info!(max_connections = cap, open_files = soft, "API connection cap"),
        Err(e) => warn!(max_connections = cap, error = %e, "cannot read the open-files limit"),
    }
    cap
}

/// A request whose protobuf does not decode (e.g. a string field that is not
/// UTF-8) is the caller's fault: tonic answers it `Internal`, as gRPC's status
/// guide says for parse errors; Augur answers `InvalidArgument`, with tonic's
/// message (which names the field), so clients do not report it as a server
/// bug. Only the trailers-only answers of unary calls carry the status in
/// their headers; that is where decoding a request fails.
fn undecodable_requests_are_invalid_arguments<B>(
    mut response: http::Response<B>,
) -> http::Response<B> {
    let headers = response.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|v| v == "13");
    let undecodable = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.starts_with("failed%20to%20decode%20Protobuf%20message"));
    if internal && undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

/// Warns at start and every five minutes while the coordinator runs with
/// part of its authentication off.
fn spawn_insecure_warnings(auth: &AuthConfig, shutdown: CancellationToken) {
    let open: Vec<&str> = [
        (!auth.api_auth()).then_some("the API accepts calls without a token"),
        (!auth.worker_auth()).then_some("workers attach without proof"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if open.is_empty() {
        return;
    }
    let what = open.join(" and ");
    tokio::spawn(async move {
        loop {
            warn!(insecure = true, "running with --insecure: {what}; anyone who can reach this coordinator can run commands on its workers");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            }
        }
    });
}

/// Waits `how_long`, or less if the coordinator shuts down meanwhile.
async fn pause(shutdown: &CancellationToken, how_long: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(how_long) => {}
    }
}

/// How a term ended, and so how the next campaign starts.
enum TermEnd {
    /// Shut down (leadership resigned and the lease revoked), or never led.
    Done,
    /// Leadership ended while the lease lives (a watch or a write failed, e.g.
    /// etcd restarted): resign the term's epoch as soon as etcd answers and
    /// campaign again with the same lease, which wins at once when no other
    /// node waits, so dispatching resumes as soon as etcd is back.
    Again(Box<(LeaseHandle, augur_store::Fence)>),
    /// The lease was presumed lost (not refreshed for a whole TTL: etcd away)
    /// or its campaign failed. etcd may restore it when it returns, keeping
    /// its election key for another TTL ahead of every later candidate;
    /// revoke it first so a campaign succeeds at once.
    LeaseLost(i64),
}

/// One campaign and, if won, one term of leadership.
async fn term(
    config: &CoordinatorConfig,
    shared: &Arc<Shared>,
    settings: &Arc<LeaderSettings>,
    client: &augur_store::EtcdClient,
    shutdown: &CancellationToken,
    lease: Option<LeaseHandle>,
) -> Result<TermEnd, StoreError> {
    let lease = match lease {
        Some(lease) => lease,
        None => LeaseHandle::grant(client, config.lease_ttl).await?,
    };
    let lost = lease.lost();
    let fence = tokio::select! {
        _ = shutdown.cancelled() => { let _ = lease.revoke().await; return Ok(TermEnd::Done) }
        _ = lost.cancelled() => return Ok(TermEnd::LeaseLost(lease.id())),
        fence = shared.leadership.campaign(&lease, &config.node_id, &config.advertise) => match fence {
            Ok(fence) => fence,
            Err(e) => {
                // The campaign's key (under this lease) may still be in etcd,
                // queued ahead of every later candidate, this node's next
                // campaign included: revoke the lease before campaigning again.
                warn!(error = %e, "campaign failed; revoking its lease before the next one");
                return Ok(TermEnd::LeaseLost(lease.id()));
            }
        },
    };
    info!(epoch = fence.epoch(), "elected leader");
    shared.metrics.is_leader.set(1);
    shared.metrics.leader_epoch.set(fence.epoch());
    shared.metrics.leader_transitions.inc();
    let demote = CancellationToken::new();
    let watchdog = {
        let demote = demote.clone();
        let shutdown = shutdown.clone();
        let lost = lost.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => warn!("leadership lease lost; stepping down"),
                _ = shutdown.cancelled() => info!("shutting down; resigning leadership"),
                _ = demote.cancelled() => {}
            }
            demote.cancel();
        })
    };
    let shared_for_ready = shared.clone();
    let result = leader::run(
        settings.clone(),
        shared.metrics.clone(),
        fence.clone(),
        shared.leader_stores.clone(),
        demote.clone(),
        move |handle| {
            shared_for_ready.leader.send_replace(Some(handle));
        },
    )
    .await;
    shared.leader.send_replace(None);
    shared.metrics.demoted();
    shared.metrics.leader_transitions.inc();
    demote.cancel();
    let _ = watchdog.await;
    info!(epoch = fence.epoch(), "leadership ended");
    if let Err(e) = result {
        warn!(error = %e, "leadership term failed");
    }
    if lost.is_cancelled() {
        return Ok(TermEnd::LeaseLost(lease.id()));
    }
    if !shutdown.is_cancelled() {
        return Ok(TermEnd::Again(Box::new((lease, fence))));
    }
    // Hand leadership over at once rather than after the lease TTL.
    if let Err(e) = shared.leadership.resign(&fence).await {
        warn!(error = %e, "resign failed; leadership passes when the lease expires");
    }
    let _ = lease.revoke().await;
    Ok(TermEnd::Done)
}
