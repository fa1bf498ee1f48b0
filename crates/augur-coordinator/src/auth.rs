//! Authentication and authorisation of API callers and workers, per-token rate
//! limits and the bound on requests in flight.
//!
//! Every API method calls [`Auth::admit`] first: it takes an in-flight permit,
//! finds the caller from its bearer token, checks the role against the
//! action, and charges the caller's rate limit. Refusals are `Unauthenticated`,
//! `PermissionDenied` or `ResourceExhausted` with a message naming what is
//! missing, and each is logged as an audit line without any secret.
//!
//! Tokens live in etcd as hashes ([`augur_store::TokenStore`]); every
//! coordinator mirrors them in memory ([`spawn_token_sync`]) so a check is a
//! hash and a map look-up. The bootstrap admin token (`--admin-token-file`) is
//! only in the coordinator's configuration, never in etcd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use augur_core::auth::{Action, Role, TokenRecord};
use augur_core::now_ms;
use augur_store::{TokenChange, TokenStore};
use augur_telemetry::metrics::{RefusalCounter, RefusalLabel};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use tracing::{info, warn};

/// Name the bootstrap admin token acts under; no stored token may take it.
pub const BOOTSTRAP_NAME: &str = "bootstrap-admin";
/// Metadata key a worker sends its join token in.
pub const JOIN_TOKEN_HEADER: &str = "x-augur-join-token";
/// Metadata key of the retry hint on `ResourceExhausted`.
pub const RETRY_AFTER_HEADER: &str = "retry-after-ms";
/// The caller name used when the API runs without authentication.
pub const ANONYMOUS: &str = "anonymous";

/// How a worker authenticated when its client certificate was the proof.
pub(crate) const BY_CERTIFICATE: &str = "client-certificate";

/// How callers and workers are checked. Its `Debug` never shows a secret.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Run without authentication where none is configured.
    pub insecure: bool,
    /// The bootstrap admin token's secret.
    pub admin_token: Option<String>,
    /// The secret workers present to attach.
    pub join_token: Option<String>,
    /// Workers may attach with a client certificate (mTLS is on).
    pub worker_certificates: bool,
    /// Requests per second per caller; 0: unlimited.
    pub rate_limit: f64,
    /// Requests a caller may make at once above its rate.
    pub rate_burst: f64,
    /// API requests in flight on this coordinator; 0: unlimited.
    pub max_inflight: usize,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| s.as_ref().map(|_| "<set>");
        f.debug_struct("AuthConfig")
            .field("insecure", &self.insecure)
            .field("admin_token", &set(&self.admin_token))
            .field("join_token", &set(&self.join_token))
            .field("worker_certificates", &self.worker_certificates)
            .field("rate_limit", &self.rate_limit)
            .field("rate_burst", &self.rate_burst)
            .field("max_inflight", &self.max_inflight)
            .finish()
    }
}

impl AuthConfig {
    /// Whether API callers must present tokens.
    pub fn api_auth(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Whether workers must prove themselves.
    pub fn worker_auth(&self) -> bool {
        self.join_token.is_some() || self.worker_certificates
    }

    /// Refuses a configuration that leaves the API or the workers open
    /// without `insecure`.
    pub fn check(&self) -> Result<(), String> {
        if self.insecure {
            return Ok(());
        }
        let mut missing = Vec::new();
        if !self.api_auth() {
            missing.push("API authentication (--admin-token-file or AUGUR_ADMIN_TOKEN)");
        }
        if !self.worker_auth() {
            missing.push("worker authentication (--join-token-file, or --tls-client-ca for mTLS)");
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "refusing to start without {}: anyone who can reach this coordinator could run \
             commands on its workers; configure them, or pass --insecure (AUGUR_INSECURE=1) \
             on a network you trust",
            missing.join(" and ")
        ))
    }
}

/// SHA-256 of a secret, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token secret: `augur_` and 256 random bits in hex.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("augur_{hex}")
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Whether this caller may act on something owned by `owner` (`None`:
    /// made without authentication, so only admins).
    pub fn owns(&self, owner: Option<&str>) -> bool {
        self.role == Role::Admin || owner == Some(self.name.as_str())
    }
}

/// An admitted request: who called, and its in-flight permit (released on drop).
#[derive(Debug)]
pub struct Admitted {
    pub caller: Caller,
    _permit: Option<OwnedSemaphorePermit>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The checks, shared by every service of a coordinator.
pub struct Auth {
    config: AuthConfig,
    bootstrap_hash: Option<String>,
    join_hash: Option<String>,
    /// Stored tokens by hash.
    tokens: RwLock<HashMap<String, TokenRecord>>,
    tokens_loaded: AtomicBool,
    buckets: Mutex<HashMap<String, Bucket>>,
    inflight: Option<Arc<Semaphore>>,
    /// `augur_api_refusals`, counted with every audit line of a refusal.
    refusals: RefusalCounter,
}

/// The label value of a refusal's gRPC code.
fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::Unavailable => "unavailable",
        _ => "other",
    }
}

fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        Status::unauthenticated("the authorization header is not valid text; send `Bearer TOKEN`")
    })?;
    match text.strip_prefix("Bearer ") {
        Some(token) if !token.trim().is_empty() => Ok(Some(token.trim())),
        _ => Err(Status::unauthenticated(
            "the authorization header must be `Bearer TOKEN`",
        )),
    }
}

pub(crate) fn peer<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl Auth {
    pub fn new(config: AuthConfig) -> Self {
        Auth {
            bootstrap_hash: config.admin_token.as_deref().map(hash_secret),
            join_hash: config.join_token.as_deref().map(hash_secret),
            inflight: (config.max_inflight > 0)
                .then(|| Arc::new(Semaphore::new(config.max_inflight))),
            config,
            tokens: RwLock::new(HashMap::new()),
            tokens_loaded: AtomicBool::new(false),
            buckets: Mutex::new(HashMap::new()),
            refusals: RefusalCounter::default(),
        }
    }

    /// Counts refusals into `family` (the coordinator's `augur_api_refusals`).
    pub fn with_refusal_metric(mut self, family: RefusalCounter) -> Self {
        self.refusals = family;
        self
    }

    /// Refuses `caller` an `action` on `what` (e.g. `job 01H…`), which belongs
    /// to `owner`; `only` says what the caller may do instead (e.g. "cancel
    /// only its own jobs"). Audited and counted like every refusal.
    pub fn refuse_not_owner(
        &self,
        caller: &Caller,
        action: &str,
        what: &str,
        owner: Option<&str>,
        only: &str,
    ) -> Status {
        let status = Status::permission_denied(format!(
            "{what} belongs to {}; the token {:?} (role {}) may {only}",
            owner
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "no token".into()),
            caller.name,
            caller.role
        ));
        warn!(audit = true, caller = %caller.name, action, target = %what,
              result = ?status.code(), reason = status.message(), "api call refused");
        self.count_refusal(action, status.code());
        status
    }

    fn count_refusal(&self, action: &str, code: tonic::Code) {
        self.refusals
            .get_or_create(&RefusalLabel {
                action: action.to_string(),
                code: code_name(code).to_string(),
            })
            .inc();
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Admits a request for `action`, or says why not (and logs the refusal).
    pub fn admit<T>(&self, request: &Request<T>, action: Action) -> Result<Admitted, Status> {
        let permit = match &self.inflight {
            Some(sem) => Some(sem.clone().try_acquire_owned().map_err(|_| {
                let status = retry_status(
                    format!(
                        "this coordinator has {} API requests in flight, its limit; retry shortly",
                        self.config.max_inflight
                    ),
                    Duration::from_millis(100),
                );
                self.audit_refusal(request, "-", action, &status);
                status
            })?),
            None => None,
        };
        let caller = self
            .authenticate(request.metadata())
            .and_then(|caller| self.authorize(caller, action))
            .and_then(|caller| self.charge(caller));
        match caller {
            Ok(caller) => Ok(Admitted {
                caller,
                _permit: permit,
            }),
            Err((name, status)) => {
                self.audit_refusal(request, &name, action, &status);
                Err(status)
            }
        }
    }

    /// [`Auth::admit`] for calls that only need the caller's name (the
    /// in-flight permit is released at once).
    pub fn admit_name<T>(&self, request: &Request<T>, action: Action) -> Result<String, Status> {
        self.admit(request, action).map(|a| a.caller.name)
    }

    fn audit_refusal<T>(&self, request: &Request<T>, who: &str, action: Action, status: &Status) {
        warn!(audit = true, caller = %who, peer = %peer(request), action = action.as_str(),
              result = ?status.code(), reason = status.message(), "api call refused");
        self.count_refusal(action.as_str(), status.code());
    }

    /// The caller behind the request's bearer token. Errors carry the name to
    /// log ("-" when unknown).
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, (String, Status)> {
        if !self.config.api_auth() {
            return Ok(Caller {
                name: ANONYMOUS.into(),
                role: Role::Admin,
            });
        }
        let unknown = |status| ("-".to_string(), status);
        let token = bearer(metadata).map_err(unknown)?.ok_or_else(|| {
            unknown(Status::unauthenticated(
                "no API token: send `authorization: Bearer TOKEN` (augur --token or AUGUR_TOKEN)",
            ))
        })?;
        let hash = hash_secret(token);
        if let Some(bootstrap) = &self.bootstrap_hash {
            if constant_time_eq(hash.as_bytes(), bootstrap.as_bytes()) {
                return Ok(Caller {
                    name: BOOTSTRAP_NAME.into(),
                    role: Role::Admin,
                });
            }
        }
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        match tokens.get(&hash) {
            Some(record) if record.expired(now_ms()) => Err((
                record.name.clone(),
                Status::unauthenticated(format!(
                    "the token {:?} has expired; ask an admin for a new one",
                    record.name
                )),
            )),
            Some(record) => Ok(Caller {
                name: record.name.clone(),
                role: record.role,
            }),
            None if !self.tokens_loaded.load(Ordering::Acquire) => {
                Err(unknown(Status::unavailable(
                    "this coordinator has not loaded its tokens from etcd yet; retry shortly",
                )))
            }
            None => Err(unknown(Status::unauthenticated(
                "unknown or revoked API token",
            ))),
        }
    }

    fn authorize(&self, caller: Caller, action: Action) -> Result<Caller, (String, Status)> {
        if caller.role.allows(action) {
            return Ok(caller);
        }
        let status = Status::permission_denied(format!(
            "the token {:?} has role {}; {} needs role {} or higher",
            caller.name,
            caller.role,
            action.as_str(),
            action.least_role()
        ));
        Err((caller.name, status))
    }

    /// Takes one request from the caller's bucket. The bootstrap admin token
    /// is exempt: it is the operator's way in when everything else is busy.
    fn charge(&self, caller: Caller) -> Result<Caller, (String, Status)> {
        let rate = self.config.rate_limit;
        if rate <= 0.0 || caller.name == BOOTSTRAP_NAME {
            return Ok(caller);
        }
        let burst = self.config.rate_burst.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(caller.name.clone()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(caller);
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
        let status = retry_status(
            format!(
                "rate limit of {rate} requests/s for {:?} exceeded; retry after {} ms",
                caller.name,
                wait.as_millis().max(1)
            ),
            wait,
        );
        Err((caller.name, status))
    }

    /// Checks a worker attaching its stream: the join token, or a verified
    /// client certificate under mTLS. Returns how it proved itself.
    pub fn admit_worker<T>(
        &self,
        request: &Request<T>,
        worker: &str,
    ) -> Result<&'static str, Status> {
        let result = self.check_worker(request);
        match &result {
            Ok(how) => {
                info!(audit = true, worker_id = %worker, peer = %peer(request), method = how,
                             action = "worker_attach", result = "ok", "worker authenticated")
            }
            Err(status) => {
                warn!(audit = true, worker_id = %worker, peer = %peer(request),
                      action = "worker_attach", result = ?status.code(),
                      reason = status.message(), "worker refused");
                self.count_refusal("worker_attach", status.code());
            }
        }
        result
    }

    /// Checks a worker's credential for a lookup (`WhoLeads`, the first step
    /// of attaching): refusals are audited and counted as refused attaches
    /// (`action=worker_attach`), successes are not logged (a worker asks
    /// every heartbeat interval).
    pub fn admit_worker_lookup<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match self.check_worker(request) {
            Ok(_) => Ok(()),
            Err(status) => {
                warn!(audit = true, peer = %peer(request), action = "worker_attach",
                      call = "who_leads", result = ?status.code(), reason = status.message(),
                      "worker refused");
                self.count_refusal("worker_attach", status.code());
                Err(status)
            }
        }
    }

    /// Refuses a worker that authenticated but claims an identity its
    /// credential does not give it: audited and counted like any refusal.
    pub fn refuse_worker(&self, peer: &str, worker: &str, status: &Status) {
        warn!(audit = true, worker_id = %worker, peer = %peer, action = "worker_attach",
              result = ?status.code(), reason = status.message(), "worker refused");
        self.count_refusal("worker_attach", status.code());
    }

    fn check_worker<T>(&self, request: &Request<T>) -> Result<&'static str, Status> {
        if let Some(expected) = &self.join_hash {
            let given = request
                .metadata()
                .get(JOIN_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok());
            return match given {
                Some(given) if constant_time_eq(hash_secret(given).as_bytes(), expected.as_bytes()) => {
                    Ok("join-token")
                }
                Some(_) => Err(Status::unauthenticated(
                    "wrong join token: give the worker the cluster's --join-token-file",
                )),
                None => Err(Status::unauthenticated(
                    "no join token: start the worker with --join-token-file (the coordinator requires one)",
                )),
            };
        }
        if self.config.worker_certificates {
            // rustls verified the chain against the client CA before the
            // request got here; a request without certificates did not use mTLS.
            let has_cert = request.peer_certs().is_some_and(|certs| !certs.is_empty());
            return if has_cert {
                Ok(BY_CERTIFICATE)
            } else {
                Err(Status::unauthenticated(
                    "no client certificate: workers must connect over mTLS with a certificate of the cluster CA",
                ))
            };
        }
        Ok("none (insecure)")
    }

    /// Replaces the mirrored tokens with `records`.
    pub fn replace_tokens(&self, records: Vec<TokenRecord>) {
        let map = records.into_iter().map(|r| (r.hash.clone(), r)).collect();
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.tokens_loaded.store(true, Ordering::Release);
    }

    /// Applies watched changes to the mirror.
    pub fn apply(&self, changes: Vec<TokenChange>) {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        for change in changes {
            match change {
                TokenChange::Put(record) => {
                    tokens.retain(|_, r| r.name != record.name);
                    tokens.insert(record.hash.clone(), record);
                }
                TokenChange::Removed(name) => tokens.retain(|_, r| r.name != name),
            }
        }
    }
}

fn retry_status(message: String, wait: Duration) -> Status {
    let mut status = Status::resource_exhausted(message);
    if let Ok(value) = (wait.as_millis().max(1) as u64).to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_HEADER, value);
    }
    status
}

/// Keeps `auth`'s token mirror equal to etcd until `shutdown`: loads, watches,
/// and reloads whenever the watch ends.
pub fn spawn_token_sync(
    auth: Arc<Auth>,
    store: TokenStore,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !auth.config.api_auth() {
            return;
        }
        loop {
            let synced = async {
                let (records, revision) = store.load().await?;
                auth.replace_tokens(records);
                let mut watch = store.watch(revision).await?;
                loop {
                    let changes = watch.next().await?;
                    auth.apply(changes);
                }
            };
            let result: Result<(), augur_store::StoreError> = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = synced => r,
            };
            if let Err(e) = result {
                warn!(error = %e, "token mirror out of date; reloading from etcd");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests;
