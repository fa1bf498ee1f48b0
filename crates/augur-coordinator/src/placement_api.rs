//! The public `PlacementService`: recorded runs, the current runtime model and
//! the placement configuration. Any coordinator answers; everything is read from
//! and written to etcd through the stores, so a follower answers as well as the
//! leader does.
//!
//! Records and configurations travel as JSON of their serde types, which stay
//! the one definition of their fields. A configuration is validated field by
//! field before anything is written ([`placement_config_from_value`]), so a bad
//! one is refused with the field named and changes nothing.

use std::sync::Arc;

use augur_core::auth::Action;
use augur_placement::policy::PLACEMENT_CONFIG_VERSION;
use augur_placement::{PlacementConfig, Policy};
use augur_predict::{Baseline, PredictorConfig};
use augur_proto::v1 as pb;
use augur_proto::v1::placement_service_server::PlacementService;
use augur_store::{
    EtcdClient, Keys, ModelStore, PlacementConfigStore, RunHistory, StoreLimits,
    StoredPlacementConfig,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, info_span, Instrument};

use crate::breaker::Breaker;
use crate::{CoordinatorConfig, Shared};

/// Runs read from etcd per page of an export.
const EXPORT_PAGE: usize = 500;
/// Records buffered between the etcd reader and a slow client.
const EXPORT_BUFFER: usize = 256;

pub struct PlacementApi {
    shared: Arc<Shared>,
    runs: RunHistory,
    models: ModelStore,
    config: PlacementConfigStore,
}

impl PlacementApi {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: &EtcdClient,
        config: &CoordinatorConfig,
    ) -> Self {
        let keys = Keys::new(&config.prefix);
        let limits = StoreLimits {
            max_txn_ops: config.max_txn_ops,
        };
        PlacementApi {
            shared,
            runs: RunHistory::new(client.clone(), keys.clone(), limits),
            models: ModelStore::new(client.clone(), keys.clone()),
            config: PlacementConfigStore::new(client.clone(), keys),
        }
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, Status> {
    serde_json::to_string(value).map_err(|e| Status::internal(format!("cannot encode JSON: {e}")))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses keys of `input` that `reference` (a default value of the type)
/// does not have, recursively, naming the first one by its path.
fn refuse_unknown_fields(input: &Value, reference: &Value, path: &str) -> Result<(), String> {
    let (Value::Object(input), Value::Object(reference)) = (input, reference) else {
        return Ok(());
    };
    for (key, value) in input {
        let field = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match reference.get(key) {
            Some(expected) => refuse_unknown_fields(value, expected, &field)?,
            None => {
                let known: Vec<&str> = reference.keys().map(String::as_str).collect();
                return Err(format!(
                    "{field}: unknown field; expected one of {}",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn number(object: &serde_json::Map<String, Value>, field: &str) -> Result<Option<f64>, String> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(format!(
            "{field}: must be a number, got {}",
            type_name(other)
        )),
    }
}

/// Parses and validates a placement configuration; errors name the field
/// (`policy: unknown placement policy "x"; expected one of ...`). Absent fields
/// take their defaults. Only policies that can run live are accepted.
pub(crate) fn placement_config_from_value(value: &Value) -> Result<PlacementConfig, String> {
    let Value::Object(object) = value else {
        return Err(format!(
            "the placement configuration must be a JSON object, got {}",
            type_name(value)
        ));
    };
    let reference = serde_json::to_value(PlacementConfig::default())
        .map_err(|e| format!("cannot encode the default configuration: {e}"))?;
    refuse_unknown_fields(value, &reference, "")?;
    if let Some(v) = object.get("v") {
        if v.as_u64() != Some(u64::from(PLACEMENT_CONFIG_VERSION)) {
            return Err(format!(
                "v: schema version {v} is not supported (expected {PLACEMENT_CONFIG_VERSION})"
            ));
        }
    }
    if let Some(policy) = object.get("policy") {
        let Value::String(name) = policy else {
            return Err(format!(
                "policy: must be a string, got {}",
                type_name(policy)
            ));
        };
        let policy: Policy = name.parse().map_err(|e| format!("policy: {e}"))?;
        if policy.simulation_only() {
            return Err(format!(
                "policy: {policy} uses true runtimes and exists in simulation only (`augur tune`)"
            ));
        }
    }
    if let Some(rate) = number(object, "aging_rate")? {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "aging_rate: must be a positive number (seconds of predicted runtime forgiven per second waited), got {rate}"
            ));
        }
    }
    if let Some(factor) = number(object, "overrun_factor")? {
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(format!(
                "overrun_factor: must be a number of at least 1, got {factor}"
            ));
        }
    }
    if let Some(predictor) = object.get("predictor") {
        let Value::Object(fields) = predictor else {
            return Err(format!(
                "predictor: must be an object, got {}",
                type_name(predictor)
            ));
        };
        if let Some(min) = fields.get("min_history") {
            if min.as_u64().is_none() {
                return Err(format!(
                    "predictor.min_history: must be a non-negative integer, got {min}"
                ));
            }
        }
        if let Some(fallback) = fields.get("fallback") {
            serde_json::from_value::<Baseline>(fallback.clone())
                .map_err(|e| format!("predictor.fallback: {e}"))?;
        }
        serde_json::from_value::<PredictorConfig>(predictor.clone())
            .map_err(|e| format!("predictor: {e}"))?;
    }
    serde_json::from_value(value.clone()).map_err(|e| format!("placement configuration: {e}"))
}

/// The reply for a configuration: the effective one (every field present).
fn config_reply(
    config: &PlacementConfig,
    revision: i64,
) -> Result<pb::PlacementConfigJson, Status> {
    Ok(pb::PlacementConfigJson {
        json: json_text(config)?,
        revision,
        is_default: revision == 0,
    })
}

/// The configuration in force: the stored one, or the defaults.
fn effective(stored: Option<StoredPlacementConfig>) -> Result<(PlacementConfig, i64), Status> {
    match stored {
        None => Ok((PlacementConfig::default(), 0)),
        Some(stored) => placement_config_from_value(&stored.value)
            .map(|config| (config, stored.revision))
            .map_err(|reason| {
                Status::internal(format!(
                    "the stored placement configuration (revision {}) is invalid: {reason}; store a valid one with `augur placement set` or `augur tune --apply`",
                    stored.revision
                ))
            }),
    }
}

/// Streams the pages after the first to the client. Ends after the last page,
/// on an etcd error (sent to the client as its status), or when the client
/// goes away.
async fn export_rest(
    breaker: &Breaker,
    runs: RunHistory,
    since_ms: Option<i64>,
    mut remaining: usize,
    mut cursor: String,
    tx: mpsc::Sender<Result<pb::RunRecordJson, Status>>,
) {
    while remaining > 0 {
        let (page, next) = match breaker
            .call(runs.list(since_ms, remaining.min(EXPORT_PAGE), Some(&cursor)))
            .await
        {
            Ok(page) => page,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        remaining = remaining.saturating_sub(page.len());
        for run in page {
            if tx
                .send(json_text(&run).map(|json| pb::RunRecordJson { json }))
                .await
                .is_err()
            {
                return;
            }
        }
        match next {
            Some(next) => cursor = next,
            None => return,
        }
    }
}

#[tonic::async_trait]
impl PlacementService for PlacementApi {
    type ExportRunsStream = ReceiverStream<Result<pb::RunRecordJson, Status>>;

    async fn export_runs(
        &self,
        request: Request<pb::ExportRunsRequest>,
    ) -> Result<Response<Self::ExportRunsStream>, Status> {
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let request = request.into_inner();
        if request.since_ms < 0 {
            return Err(Status::invalid_argument(format!(
                "since_ms: must be a time after the Unix epoch, got {}",
                request.since_ms
            )));
        }
        let since_ms = (request.since_ms > 0).then_some(request.since_ms);
        let limit = match request.limit {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        // The first page is read before answering, so an unreachable etcd is
        // the call's status rather than a stream that breaks at once.
        let (page, next) = self
            .shared
            .breaker
            .call(self.runs.list(since_ms, limit.min(EXPORT_PAGE), None))
            .await?;
        let (tx, rx) = mpsc::channel(EXPORT_BUFFER);
        let remaining = limit.saturating_sub(page.len());
        let runs = self.runs.clone();
        let shared = self.shared.clone();
        // Fate: ends with the export (see `export_rest`); nothing to join.
        tokio::spawn(
            async move {
                for run in page {
                    if tx
                        .send(json_text(&run).map(|json| pb::RunRecordJson { json }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if let Some(cursor) = next {
                    export_rest(&shared.breaker, runs, since_ms, remaining, cursor, tx).await;
                }
            }
            .instrument(info_span!("export_runs")),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let include_model = request.into_inner().include_model;
        let model = self.shared.breaker.call(self.models.get()).await?.ok_or_else(|| {
            Status::not_found(
                "no runtime model has been trained yet: the leader trains one once enough runs are recorded",
            )
        })?;
        Ok(Response::new(pb::ModelInfo {
            version: model.version,
            trained_at_ms: model.trained_at_ms,
            training_runs: model.training_runs,
            metrics_json: json_text(&model.metrics)?,
            model_json: if include_model {
                model.model_json
            } else {
                String::new()
            },
        }))
    }

    async fn get_placement_config(
        &self,
        request: Request<pb::GetPlacementConfigRequest>,
    ) -> Result<Response<pb::PlacementConfigJson>, Status> {
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let (stored, _) = self.shared.breaker.call(self.config.get()).await?;
        let (config, revision) = effective(stored)?;
        config_reply(&config, revision).map(Response::new)
    }

    async fn set_placement_config(
        &self,
        request: Request<pb::SetPlacementConfigRequest>,
    ) -> Result<Response<pb::PlacementConfigJson>, Status> {
        let who = self.shared.auth.admit_name(&request, Action::Operate)?;
        let request = request.into_inner();
        let result = self.set(&request).await;
        match &result {
            Ok(reply) => {
                info!(audit = true, caller = %who, action = "placement_config_set",
                      revision = reply.revision, config = %reply.json, result = "ok", "api call")
            }
            Err(status) => {
                info!(audit = true, caller = %who, action = "placement_config_set",
                      result = ?status.code(), reason = status.message(), "api call refused")
            }
        }
        result.map(Response::new)
    }
}

impl PlacementApi {
    async fn set(
        &self,
        request: &pb::SetPlacementConfigRequest,
    ) -> Result<pb::PlacementConfigJson, Status> {
        let value: Value = serde_json::from_str(&request.json)
            .map_err(|e| Status::invalid_argument(format!("json: not valid JSON: {e}")))?;
        let config = placement_config_from_value(&value).map_err(Status::invalid_argument)?;
        if let Some(expected) = request.expected_revision {
            if expected < 0 {
                return Err(Status::invalid_argument(format!(
                    "expected_revision: must be 0 or a revision, got {expected}"
                )));
            }
        }
        // Stored with every field, as it will be read back.
        let normalised = serde_json::to_value(&config)
            .map_err(|e| Status::internal(format!("cannot encode JSON: {e}")))?;
        let write = async {
            match request.expected_revision {
                None => self.config.put(&normalised).await.map(Some),
                Some(expected) => self.config.put_if(&normalised, expected).await,
            }
        };
        let revision = self.shared.breaker.call(write).await?.ok_or_else(|| {
            Status::failed_precondition(format!(
                "the placement configuration changed since revision {}; read it again and retry",
                request.expected_revision.unwrap_or_default()
            ))
        })?;
        config_reply(&config, revision)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_fill_absent_fields() {
        let config =
            placement_config_from_value(&json!({"policy": "least-loaded"})).expect("valid");
        assert_eq!(config.policy, Policy::LeastLoaded);
        assert_eq!(config.aging_rate, PlacementConfig::default().aging_rate);
        let full = serde_json::to_value(PlacementConfig::default()).expect("encodes");
        assert_eq!(
            placement_config_from_value(&full).expect("valid"),
            PlacementConfig::default()
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                json!({"policy": "nonsense"}),
                "policy: unknown placement policy",
            ),
            (json!({"policy": "oracle"}), "policy: oracle"),
            (json!({"policy": 3}), "policy: must be a string"),
            (
                json!({"aging_rate": -1.0}),
                "aging_rate: must be a positive",
            ),
            (
                json!({"aging_rate": "fast"}),
                "aging_rate: must be a number",
            ),
            (json!({"overrun_factor": 0.5}), "overrun_factor:"),
            (json!({"aging_rat": 1.0}), "aging_rat: unknown field"),
            (
                json!({"predictor": {"fallback": "psychic"}}),
                "predictor.fallback:",
            ),
            (
                json!({"predictor": {"min_history": -2}}),
                "predictor.min_history:",
            ),
            (
                json!({"predictor": {"min_hist": 2}}),
                "predictor.min_hist: unknown field",
            ),
            (json!({"v": 9}), "v: schema version 9"),
            (
                json!([1]),
                "the placement configuration must be a JSON object",
            ),
        ];
        for (input, expected) in cases {
            let err = placement_config_from_value(&input).expect_err(&input.to_string());
            assert!(err.starts_with(expected), "{input}: {err}");
        }
    }
}
