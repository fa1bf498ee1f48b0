//! The leader's learning loop: a warm start from the stored model, placement
//! configuration and run history; periodic retraining off the hot path
//! (`spawn_blocking`), stored versioned in etcd so the next leader starts warm;
//! and live pick-up of a new placement configuration (`augur tune --apply`).

use std::sync::Arc;
use std::time::Duration;

use augur_core::{now_ms, RunRecord};
use augur_placement::PlacementConfig;
use augur_predict::{train, Model, TrainConfig};
use augur_store::{
    Fence, ModelStore, PlacementConfigChange, PlacementConfigStore, RunHistory, StoreError,
    StoredModel, STORED_MODEL_VERSION,
};
use augur_telemetry::CoordinatorMetrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{LeaderInput, LeaderSettings};
use crate::placement_api::placement_config_from_value;

/// What a new leader starts with.
pub(crate) struct WarmStart {
    pub config: PlacementConfig,
    pub config_revision: i64,
    pub model: Option<Model>,
    pub runs: Vec<RunRecord>,
}

/// Reads the stored configuration, model and recent runs. A missing or
/// unreadable model or configuration is not fatal: the leader starts cold and
/// says so.
pub(crate) async fn warm_start(
    settings: &LeaderSettings,
    runs: &RunHistory,
    models: &ModelStore,
    configs: &PlacementConfigStore,
) -> Result<WarmStart, StoreError> {
    let (stored, config_revision) = configs.get().await?;
    let config = match stored {
        Some(s) => placement_config_from_value(&s.value).unwrap_or_else(|e| {
            warn!(error = %e, "stored placement configuration is invalid; using the defaults");
            PlacementConfig::default()
        }),
        None => PlacementConfig::default(),
    };
    let model = match models.get().await {
        Ok(Some(stored)) => match Model::from_json(&stored.model_json) {
            Ok(model) => Some(model),
            Err(e) => {
                warn!(error = %e, "stored model unreadable; starting cold");
                None
            }
        },
        Ok(None) => None,
        Err(StoreError::Corrupt { key, reason }) => {
            warn!(key, reason, "stored model unreadable; starting cold");
            None
        }
        Err(e) => return Err(e),
    };
    let since = now_ms() - settings.run_retention.as_millis() as i64;
    let runs = runs.all_since(Some(since)).await?;
    info!(
        policy = %config.policy,
        model_version = model.as_ref().map(|m| m.version),
        runs = runs.len(),
        "placement warm start"
    );
    Ok(WarmStart {
        config,
        config_revision,
        model,
        runs,
    })
}

/// Retrains on the recorded runs every `retrain_interval` when new runs exist.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn trainer(
    settings: Arc<LeaderSettings>,
    runs: RunHistory,
    models: ModelStore,
    fence: Fence,
    brain: mpsc::UnboundedSender<LeaderInput>,
    metrics: Arc<CoordinatorMetrics>,
    mut version: u64,
    demote: CancellationToken,
) {
    let mut trained_on = 0usize;
    loop {
        tokio::select! {
            _ = demote.cancelled() => return,
            _ = tokio::time::sleep(settings.retrain_interval) => {}
        }
        let since = now_ms() - settings.run_retention.as_millis() as i64;
        let records = match runs.all_since(Some(since)).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read run history for training");
                continue;
            }
        };
        if records.len() < settings.min_training_runs || records.len() == trained_on {
            continue;
        }
        let count = records.len();
        let next = version + 1;
        let started = std::time::Instant::now();
        let config = TrainConfig {
            min_records: settings.min_training_runs,
            ..TrainConfig::default()
        };
        // Training runs for seconds on a big history: a demotion or a
        // SIGTERM resign must not wait for it (the blocking thread finishes
        // on its own and its result is dropped).
        let training =
            tokio::task::spawn_blocking(move || train(&records, &config, next, now_ms()));
        let trained = tokio::select! {
            _ = demote.cancelled() => return,
            trained = training => trained,
        };
        let model = match trained {
            Ok(Ok(model)) => model,
            Ok(Err(e)) => {
                info!(error = %e, runs = count, "not enough to train on yet");
                trained_on = count;
                continue;
            }
            Err(e) => {
                warn!(error = %e, "training task failed");
                continue;
            }
        };
        let model_json = match model.to_json() {
            Ok(json) => json,
            Err(e) => {
                warn!(error = %e, "cannot serialise the model");
                continue;
            }
        };
        let stored = StoredModel {
            v: STORED_MODEL_VERSION,
            version: next,
            trained_at_ms: model.trained_at_ms,
            training_runs: count as u64,
            metrics: serde_json::json!({
                "algorithm": model.algorithm,
                "training_seconds": started.elapsed().as_secs_f64(),
            }),
            model_json,
        };
        match models.put(&fence, &stored).await {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => {
                demote.cancel();
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot store the model");
                continue;
            }
        }
        version = next;
        trained_on = count;
        metrics.model_version.set(next as i64);
        info!(
            version = next,
            runs = count,
            seconds = started.elapsed().as_secs_f64(),
            "model trained and stored"
        );
        if brain.send(LeaderInput::Model(Box::new(model))).is_err() {
            return;
        }
    }
}

/// Follows `/config/placement`: every valid new configuration reaches the leader's core.
pub(crate) async fn follow_config(
    configs: PlacementConfigStore,
    mut revision: i64,
    brain: mpsc::UnboundedSender<LeaderInput>,
    demote: CancellationToken,
) {
    loop {
        let mut watch = match configs.watch(revision).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch the placement configuration; retrying");
                tokio::select! {
                    _ = demote.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let change = tokio::select! {
                _ = demote.cancelled() => return,
                change = watch.next() => change,
            };
            let config = match change {
                Ok(PlacementConfigChange::Set(stored)) => {
                    revision = stored.revision;
                    match placement_config_from_value(&stored.value) {
                        Ok(c) => c,
                        Err(e) => {
                            warn!(error = %e, "ignoring an invalid placement configuration");
                            continue;
                        }
                    }
                }
                Ok(PlacementConfigChange::Removed { revision: r }) => {
                    revision = r;
                    PlacementConfig::default()
                }
                Err(e) => {
                    warn!(error = %e, "placement configuration watch ended; re-reading");
                    match configs.get().await {
                        Ok((_, r)) => revision = r,
                        Err(e) => warn!(error = %e, "cannot re-read the placement configuration"),
                    }
                    break;
                }
            };
            info!(policy = %config.policy, "new placement configuration");
            if brain
                .send(LeaderInput::PlacementConfig(Box::new(config)))
                .is_err()
            {
                return;
            }
        }
    }
}
