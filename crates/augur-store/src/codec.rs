//! JSON codecs for stored values. Every value carries a schema version `v` so that
//! `etcdctl get` stays readable and a future reader can tell formats apart. A value
//! that does not decode is an error naming its key, never a panic.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Index entry of a pending job: enough to order the queue without the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub v: u32,
    pub priority: i32,
    pub not_before_ms: i64,
}

/// Index entry of a finished job, for retention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishedEntry {
    pub v: u32,
    /// The job's idempotency key, deleted together with the job.
    pub idempotency_key: Option<String>,
}

/// Value under the election key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderValue {
    pub v: u32,
    pub node_id: String,
    pub address: String,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs to JSON cannot fail (no maps with
    // non-string keys, no custom serialisers that error).
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_values_are_errors() {
        let err = decode::<PendingEntry>(b"/augur/x", b"{not json").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }));
        assert!(err.to_string().contains("/augur/x"));
    }
}
