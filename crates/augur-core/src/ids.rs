//! Identifiers. Job ids are ULIDs (sortable by submit time); worker and node ids
//! are operator-chosen names restricted to a safe character set because they
//! appear inside etcd keys and metric exemplars.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// A job's id: a ULID, so ids sort by submission time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Ulid);

impl JobId {
    /// A fresh id for a job submitted now.
    pub fn generate() -> Self {
        JobId(Ulid::new())
    }

    /// When the id was made (a ULID's time), unix milliseconds.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Error for an id that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct IdError(pub String);

impl FromStr for JobId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(JobId).map_err(|_| {
            IdError(format!(
                "job id {s:?} is not a valid ULID (26 characters of Crockford base32)"
            ))
        })
    }
}

/// A worker's (or coordinator's) node id. Decoding (from etcd, from a file)
/// validates it like [`WorkerId::new`]: an id that could not have been
/// registered is refused, not carried into keys and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkerId(String);

impl TryFrom<String> for WorkerId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        WorkerId::new(s)
    }
}

impl From<WorkerId> for String {
    fn from(id: WorkerId) -> String {
        id.0
    }
}

/// Longest node id accepted.
pub const MAX_NODE_ID_LEN: usize = 128;

impl WorkerId {
    /// Validates a node id: 1..=128 characters of `[A-Za-z0-9._-]`.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        validate_node_id(&s)?;
        Ok(WorkerId(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A placeholder for "no worker yet" (an empty id, which `new` refuses).
    pub fn unknown() -> Self {
        WorkerId(String::new())
    }
}

/// Checks a node id (worker or coordinator) for use in keys and labels.
pub fn validate_node_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > MAX_NODE_ID_LEN {
        return Err(IdError(format!(
            "node id must be 1..={MAX_NODE_ID_LEN} characters, got {}",
            s.len()
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdError(format!(
            "node id {s:?} contains {c:?}; allowed are letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_validated_when_decoded() {
        let id: WorkerId = serde_json::from_str("\"w-1.a_b\"").expect("valid id");
        assert_eq!(id.as_str(), "w-1.a_b");
        assert_eq!(serde_json::to_string(&id).expect("encodes"), "\"w-1.a_b\"");
        for bad in ["\"\"", "\"a/b\"", "\"a b\"", "\"w\\n\""] {
            let err = serde_json::from_str::<WorkerId>(bad).expect_err(bad);
            assert!(err.to_string().contains("node id"), "{bad}: {err}");
        }
        let long = format!("\"{}\"", "w".repeat(MAX_NODE_ID_LEN + 1));
        assert!(serde_json::from_str::<WorkerId>(&long).is_err());
    }

    #[test]
    fn job_ids_round_trip_and_reject_garbage() {
        let id = JobId::generate();
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        assert!("not-a-ulid".parse::<JobId>().is_err());
    }

    #[test]
    fn node_ids_are_restricted() {
        assert!(WorkerId::new("worker-1.a_b").is_ok());
        assert!(WorkerId::new("").is_err());
        assert!(WorkerId::new("a/b").is_err());
        assert!(WorkerId::new("x".repeat(129)).is_err());
    }
}
