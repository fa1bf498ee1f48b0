//! The current runtime model, one key: what the leader trained last, so that a
//! new leader starts warm and any coordinator can say which model is in use.
//!
//! The store keeps the model opaque (`model_json`, produced and parsed by
//! `augur-predict`), next to the facts an operator asks about without parsing
//! it: version, training time, how many runs it learned from, its metrics.
//! Only the leader writes it, fenced.

use etcd_client::{Client, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::keys::Keys;
use crate::leadership::Fence;
use crate::{Result, StoreError};

/// Schema version of [`StoredModel`].
pub const STORED_MODEL_VERSION: u32 = 1;

/// The value under `{prefix}/model/current`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    /// Schema version ([`STORED_MODEL_VERSION`]).
    pub v: u32,
    /// Monotonic model version chosen by the trainer.
    pub version: u64,
    pub trained_at_ms: i64,
    /// Run records the model was trained on.
    pub training_runs: u64,
    /// Training metrics, as the trainer reports them.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// The model itself (`augur_predict::Model` as JSON).
    pub model_json: String,
}

/// Read and write access to the current model.
#[derive(Clone)]
pub struct ModelStore {
    client: Client,
    keys: Keys,
}

impl ModelStore {
    pub fn new(client: Client, keys: Keys) -> Self {
        ModelStore { client, keys }
    }

    /// Replaces the current model. Fenced: only the leader trains.
    pub async fn put(&self, fence: &Fence, model: &StoredModel) -> Result<()> {
        let txn = Txn::new()
            .when(vec![fence.guard()])
            .and_then(vec![TxnOp::put(
                self.keys.model_current(),
                encode(model),
                None,
            )]);
        if self.client.clone().txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                epoch: fence.epoch(),
            })
        }
    }

    /// The current model, if one was ever stored. A value of another schema
    /// version or shape is [`StoreError::Corrupt`] (the caller starts cold).
    pub async fn get(&self) -> Result<Option<StoredModel>> {
        let resp = self
            .client
            .clone()
            .get(self.keys.model_current(), None)
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let model: StoredModel = decode(kv.key(), kv.value())?;
        if model.v != STORED_MODEL_VERSION {
            return Err(StoreError::Corrupt {
                key: self.keys.model_current(),
                reason: format!(
                    "stored model schema version {} is not supported (expected {STORED_MODEL_VERSION})",
                    model.v
                ),
            });
        }
        Ok(Some(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_models_round_trip_and_tolerate_missing_metrics() {
        let model = StoredModel {
            v: STORED_MODEL_VERSION,
            version: 7,
            trained_at_ms: 1_700_000_000_000,
            training_runs: 1234,
            metrics: serde_json::json!({"within_2x": 0.6}),
            model_json: r#"{"v":1}"#.into(),
        };
        let bytes = encode(&model);
        let back: StoredModel = decode(b"/augur/model/current", &bytes).expect("decodes");
        assert_eq!(back, model);
        let sparse =
            br#"{"v":1,"version":1,"trained_at_ms":5,"training_runs":2,"model_json":"{}"}"#;
        let back: StoredModel = decode(b"k", sparse).expect("decodes");
        assert_eq!(back.metrics, serde_json::Value::Null);
    }
}
