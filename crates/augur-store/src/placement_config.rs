//! The active placement configuration, one key (`{prefix}/config/placement`).
//!
//! Any coordinator or operator may set it (`augur tune --apply`, `augur
//! placement set`), so writes are not fenced; a read-modify-write can guard on
//! the revision it read ([`PlacementConfigStore::put_if`]). The leader reads it
//! when it wins and then watches it, so a change takes effect live.
//!
//! The store keeps the value generic (`serde_json::Value`): the configuration's
//! type and its validation belong to `augur-placement` and the API that accepts
//! it. The revision of a value is the etcd revision that wrote it.

use etcd_client::{Client, Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions, WatchStream};

use crate::codec::{decode, encode};
use crate::keys::Keys;
use crate::Result;

/// A stored configuration and the revision that wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPlacementConfig {
    pub value: serde_json::Value,
    pub revision: i64,
}

/// A change seen by a [`PlacementConfigWatch`].
#[derive(Clone, Debug, PartialEq)]
pub enum PlacementConfigChange {
    /// A new value was written.
    Set(StoredPlacementConfig),
    /// The key was deleted (back to the defaults).
    Removed { revision: i64 },
}

/// Read and write access to the placement configuration.
#[derive(Clone)]
pub struct PlacementConfigStore {
    client: Client,
    keys: Keys,
}

impl PlacementConfigStore {
    pub fn new(client: Client, keys: Keys) -> Self {
        PlacementConfigStore { client, keys }
    }

    /// The stored configuration, if any, and the revision the read saw (start a
    /// watch after it to miss nothing).
    pub async fn get(&self) -> Result<(Option<StoredPlacementConfig>, i64)> {
        let resp = self
            .client
            .clone()
            .get(self.keys.placement_config(), None)
            .await?;
        let read_revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let stored = match resp.kvs().first() {
            Some(kv) => Some(StoredPlacementConfig {
                value: decode(kv.key(), kv.value())?,
                revision: kv.mod_revision(),
            }),
            None => None,
        };
        Ok((stored, read_revision))
    }

    /// Stores `value` unconditionally; returns the revision of the write.
    pub async fn put(&self, value: &serde_json::Value) -> Result<i64> {
        let resp = self
            .client
            .clone()
            .put(self.keys.placement_config(), encode(value), None)
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Stores `value` only if the stored configuration is still the one written
    /// at `expected_revision` (0: only if none is stored). Returns the revision
    /// of the write, or `None` if the configuration changed meanwhile.
    pub async fn put_if(
        &self,
        value: &serde_json::Value,
        expected_revision: i64,
    ) -> Result<Option<i64>> {
        let key = self.keys.placement_config();
        let guard = if expected_revision == 0 {
            Compare::version(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected_revision)
        };
        let txn = Txn::new()
            .when(vec![guard])
            .and_then(vec![TxnOp::put(key, encode(value), None)]);
        let resp = self.client.clone().txn(txn).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// Watches the configuration for changes after `after_revision`.
    pub async fn watch(&self, after_revision: i64) -> Result<PlacementConfigWatch> {
        let key = self.keys.placement_config();
        let opts = WatchOptions::new().with_start_revision(after_revision + 1);
        let stream = self.client.clone().watch(key.clone(), Some(opts)).await?;
        Ok(PlacementConfigWatch { stream, key })
    }
}

/// A watch on the placement configuration.
pub struct PlacementConfigWatch {
    stream: WatchStream,
    key: String,
}

impl PlacementConfigWatch {
    /// The latest change of the next batch (earlier changes in one batch are
    /// superseded). An undecodable value is skipped with a warning, so the
    /// watcher keeps its current configuration. Errors when the watch ends
    /// (the caller reads again and watches after the new revision).
    pub async fn next(&mut self) -> Result<PlacementConfigChange> {
        loop {
            let resp = crate::next_watch_response(&mut self.stream, &self.key).await?;
            let mut latest = None;
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match decode::<serde_json::Value>(kv.key(), kv.value()) {
                        Ok(value) => {
                            latest = Some(PlacementConfigChange::Set(StoredPlacementConfig {
                                value,
                                revision: kv.mod_revision(),
                            }))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring undecodable placement configuration")
                        }
                    },
                    EventType::Delete => {
                        latest = Some(PlacementConfigChange::Removed {
                            revision: kv.mod_revision(),
                        })
                    }
                }
            }
            if let Some(change) = latest {
                return Ok(change);
            }
        }
    }
}
