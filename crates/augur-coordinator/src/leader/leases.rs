//! Worker registrations held by the leader: workers have no etcd access, so
//! the leader grants each attached worker a lease, writes its registration
//! under it (fenced) and renews it whenever the worker's stream heartbeats.
//! A worker whose heartbeats stop is not renewed: its lease expires one TTL
//! later, its registration key goes, and the registry watch tells the core.
//!
//! One small task per lease renews it on demand (coalesced: a burst of
//! heartbeats is one renewal in flight). A lease found in the registry when a
//! term starts is *held* (renewed every TTL/3) through the reconnect grace, so
//! workers that were attached to the previous leader keep their registration
//! while they find the new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::WorkerInfo;
use augur_store::{StoreError, WorkerRegistry};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::term::Term;
use super::LeaderInput;

/// A lease nobody asked to renew for this many TTLs has expired; its task ends.
const IDLE_TTLS: u32 = 2;

#[derive(Clone)]
struct Keeper {
    renew: Arc<Notify>,
    /// Until when it is held without heartbeats (takeover); cleared by the
    /// first renewal a heartbeat asks for, so a worker that attached and
    /// then died is not kept alive through the rest of the grace.
    hold: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
}

pub(crate) struct WorkerLeases {
    registry: WorkerRegistry,
    ttl: Duration,
    keepers: HashMap<i64, Keeper>,
    tx: mpsc::UnboundedSender<LeaderInput>,
}

impl WorkerLeases {
    pub fn new(
        registry: WorkerRegistry,
        ttl: Duration,
        tx: mpsc::UnboundedSender<LeaderInput>,
    ) -> Self {
        WorkerLeases {
            registry,
            ttl,
            keepers: HashMap::new(),
            tx,
        }
    }

    pub fn registry(&self) -> WorkerRegistry {
        self.registry.clone()
    }

    /// Writes `info`'s registration, under a new lease unless it names the
    /// one it holds. Success shows as a registry event; failure is reported
    /// as [`LeaderInput::RegistrationFailed`]. A fenced write ends the term.
    pub fn register(&mut self, mut info: WorkerInfo, term: &mut Term) {
        let registry = self.registry.clone();
        let fence = term.fence().clone();
        let demote = term.cancel_token();
        let tx = self.tx.clone();
        let ttl = self.ttl;
        term.spawn("worker_registration", async move {
            let fresh = info.lease_id == 0;
            let written = async {
                if fresh {
                    info.lease_id = registry.grant(ttl).await?;
                }
                registry.register(&fence, &info).await
            };
            match tokio::time::timeout(ttl, written).await {
                Ok(Ok(())) => {
                    info!(worker_id = %info.id, lease_id = info.lease_id, "worker registered");
                    let _ = tx.send(LeaderInput::LeaseActive(info.lease_id));
                    return;
                }
                Ok(Err(StoreError::Fenced { .. })) => {
                    warn!(worker_id = %info.id, "registration fenced: this node no longer leads");
                    demote.cancel();
                }
                Ok(Err(e)) => {
                    warn!(worker_id = %info.id, error = %e, "worker registration failed; retrying")
                }
                Err(_) => warn!(worker_id = %info.id, "worker registration timed out; retrying"),
            }
            if fresh && info.lease_id != 0 {
                // Granted but not written: do not leave the lease behind.
                let _ = registry.release(info.lease_id).await;
            }
            let _ = tx.send(LeaderInput::RegistrationFailed(info.id));
        });
    }

    /// Renews a worker's lease (a heartbeat arrived); from now on only
    /// heartbeats keep it.
    pub fn renew(&mut self, lease: i64, term: &mut Term) {
        let keeper = self.keeper(lease, None, term);
        *keeper.hold.lock().unwrap_or_else(|p| p.into_inner()) = None;
        keeper.renew.notify_one();
    }

    /// Keeps a lease found at takeover alive until `until`, so its worker
    /// has the reconnect grace to attach here.
    pub fn hold(&mut self, lease: i64, until: Instant, term: &mut Term) {
        self.keeper(lease, Some(until), term).renew.notify_one();
    }

    /// A registration just written: its lease gets a keeper now, so the
    /// first heartbeat finds it ready.
    pub fn active(&mut self, lease: i64, term: &mut Term) {
        self.keeper(lease, None, term);
    }

    /// Ends a lease now (its worker said goodbye): the registration goes.
    pub fn release(&mut self, lease: i64, term: &mut Term) {
        if let Some(keeper) = self.keepers.remove(&lease) {
            keeper.stop.cancel();
        }
        let registry = self.registry.clone();
        term.spawn("worker_lease_release", async move {
            if let Err(e) = registry.release(lease).await {
                warn!(lease_id = lease, error = %e, "could not release a worker's lease; it expires on its own");
            }
        });
    }

    /// A keeper ended (its lease expired, or nobody renewed it).
    pub fn ended(&mut self, lease: i64) {
        self.keepers.remove(&lease);
    }

    /// The keeper of `lease`, started (held until `hold`) if it has none.
    fn keeper(&mut self, lease: i64, hold: Option<Instant>, term: &mut Term) -> Keeper {
        if let Some(keeper) = self.keepers.get(&lease) {
            return keeper.clone();
        }
        let keeper = Keeper {
            renew: Arc::new(Notify::new()),
            hold: Arc::new(Mutex::new(hold)),
            stop: term.cancel_token().child_token(),
        };
        term.spawn(
            "worker_lease",
            keep(
                self.registry.clone(),
                lease,
                self.ttl,
                keeper.clone(),
                self.tx.clone(),
            ),
        );
        self.keepers.insert(lease, keeper.clone());
        keeper
    }
}

/// Renews `lease` each time `renew` is notified (and every TTL/3 until
/// `hold`), until it expires, nobody renews it for a while, or `stop`.
async fn keep(
    registry: WorkerRegistry,
    lease: i64,
    ttl: Duration,
    keeper: Keeper,
    tx: mpsc::UnboundedSender<LeaderInput>,
) {
    let Keeper { renew, hold, stop } = keeper;
    let mut renewer = None;
    loop {
        let holding = hold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until);
        let wait = if holding { ttl / 3 } else { ttl * IDLE_TTLS };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = renew.notified() => {}
            _ = tokio::time::sleep(wait) => {
                if !holding {
                    debug!(lease_id = lease, "worker lease no longer renewed; it expires");
                    break;
                }
            }
        }
        if renewer.is_none() {
            match tokio::time::timeout(ttl, registry.renewer(lease)).await {
                Ok(Ok(r)) => renewer = Some(r),
                Ok(Err(e)) => {
                    debug!(lease_id = lease, error = %e, "cannot open a lease keep-alive");
                    continue;
                }
                Err(_) => continue,
            }
        }
        let Some(r) = renewer.as_mut() else { continue };
        match tokio::time::timeout(ttl, r.renew()).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                debug!(lease_id = lease, "worker lease expired");
                break;
            }
            Ok(Err(e)) => {
                debug!(lease_id = lease, error = %e, "lease renewal failed");
                renewer = None;
            }
            Err(_) => renewer = None,
        }
    }
    let _ = tx.send(LeaderInput::LeaseEnded(lease));
}
