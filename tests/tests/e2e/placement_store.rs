//! Learned placement's durable state, for real: `RunHistory`, `ModelStore` and
//! `PlacementConfigStore` against a real etcd, under a prefix of their own next
//! to a running cluster. The CLI over it is tested in `placement_cli`.

use std::time::Duration;

use augur_core::RunRecord;
use augur_e2e::{Cluster, ClusterConfig};
use augur_store::{
    EtcdClient, Fence, Keys, Leadership, LeaseHandle, ModelStore, PlacementConfigChange,
    PlacementConfigStore, PlacementConfigWatch, RunHistory, StoreError, StoreLimits, StoredModel,
};
use etcd_client::Txn;
use serde_json::json;

/// Keys of the store tests live here, apart from the cluster's `/augur`.
const PREFIX: &str = "/store-test";
/// A watch event must arrive well within this.
const WATCH_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn cluster_without_workers() -> Cluster {
    Cluster::start(ClusterConfig {
        workers: 0,
        ..ClusterConfig::default()
    })
}

pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime")
        .block_on(future)
}

pub(crate) async fn connect(cluster: &Cluster) -> EtcdClient {
    augur_store::connect(&[cluster.etcd_url().to_string()], Duration::from_secs(5))
        .await
        .expect("connect to etcd")
}

/// Leadership of the test's own prefix, for fenced writes.
async fn lead(client: &EtcdClient) -> (LeaseHandle, Fence) {
    let lease = LeaseHandle::grant(client, Duration::from_secs(30))
        .await
        .expect("grant a lease");
    let fence = Leadership::new(client.clone(), Keys::new(PREFIX))
        .campaign(&lease, "store-test", "http://127.0.0.1:1")
        .await
        .expect("win the election of the test prefix");
    (lease, fence)
}

fn run_record(job_id: &str, attempt: u32, finished_at_ms: i64) -> RunRecord {
    serde_json::from_value(json!({
        "v": 1, "job_id": job_id, "name": "etl", "user": "alice", "attempt": attempt,
        "submitted_at_ms": finished_at_ms - 2_000, "runtime_ms": 1_500,
        "finished_at_ms": finished_at_ms, "outcome": "succeeded",
    }))
    .expect("a valid run record")
}

#[test]
fn run_history_pages_in_finish_order_skips_corrupt_records_and_purges_fenced() {
    let cluster = cluster_without_workers();
    block_on(async {
        let client = connect(&cluster).await;
        let keys = Keys::new(PREFIX);
        // A tiny op limit so that purging takes several transactions.
        let history = RunHistory::new(client.clone(), keys.clone(), StoreLimits { max_txn_ops: 4 });
        let (_lease, fence) = lead(&client).await;

        // Runs finishing at 1 s .. 25 s, written newest first; job-7 also has a
        // second attempt finishing in the same millisecond as its first.
        let mut runs: Vec<RunRecord> = (1..=25)
            .rev()
            .map(|i| run_record(&format!("job-{i}"), 1, i * 1_000))
            .collect();
        runs.push(run_record("job-7", 2, 7_000));
        for chunk in runs.chunks(10) {
            let ops = chunk.iter().map(|r| history.put_op(r)).collect::<Vec<_>>();
            let txn = Txn::new().when(vec![fence.guard()]).and_then(ops);
            let resp = client.clone().txn(txn).await.expect("txn");
            assert!(resp.succeeded(), "the fenced put of run records failed");
        }
        // One corrupt value in the middle of the history.
        client
            .clone()
            .put(keys.run(12_500, "corrupt", 1), "{not json", None)
            .await
            .expect("put a corrupt value");
        assert_eq!(history.count().await.expect("count"), 27);

        // Paging: ten at a time, chronological, the corrupt record skipped.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let (page, next) = history
                .list(None, 10, cursor.as_deref())
                .await
                .expect("list");
            assert!(page.len() <= 10);
            seen.extend(page);
            pages += 1;
            assert!(pages < 10, "paging does not end");
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 26, "every decodable run exactly once");
        assert!(seen
            .windows(2)
            .all(|w| w[0].finished_at_ms <= w[1].finished_at_ms));
        assert_eq!(
            seen.iter()
                .filter(|r| r.job_id == "job-7")
                .map(|r| r.attempt)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );

        let (recent, next) = history.list(Some(20_000), 100, None).await.expect("list");
        assert_eq!(
            recent.iter().map(|r| r.finished_at_ms).collect::<Vec<_>>(),
            vec![20_000, 21_000, 22_000, 23_000, 24_000, 25_000]
        );
        assert_eq!(next, None);
        assert_eq!(history.all_since(None).await.expect("all").len(), 26);
        assert_eq!(
            history.all_since(Some(24_500)).await.expect("all since"),
            vec![runs[0].clone()]
        );

        // A deposed leader deletes nothing.
        Leadership::new(client.clone(), keys.clone())
            .resign(&fence)
            .await
            .expect("resign");
        let err = history
            .purge(&fence, i64::MAX, 0)
            .await
            .expect_err("a stale fence must not purge");
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        assert_eq!(history.count().await.expect("count"), 27);

        // By age: the runs that finished before 5.5 s (1..5 s) go.
        let (_lease2, fence) = lead(&client).await;
        assert_eq!(history.purge(&fence, 5_500, 1_000).await.expect("purge"), 5);
        let left = history.all_since(None).await.expect("all");
        assert_eq!(left.first().map(|r| r.finished_at_ms), Some(6_000));
        // By count: the oldest beyond the newest ten go (the corrupt one counts).
        assert_eq!(history.purge(&fence, 0, 10).await.expect("purge"), 12);
        assert_eq!(history.count().await.expect("count"), 10);
        let left = history.all_since(None).await.expect("all");
        assert_eq!(left.first().map(|r| r.finished_at_ms), Some(16_000));
        assert_eq!(left.len(), 10);
        // Nothing more to do.
        assert_eq!(history.purge(&fence, 0, 10).await.expect("purge"), 0);
    });
}

#[test]
fn model_store_is_fenced_and_refuses_unknown_schema_versions() {
    let cluster = cluster_without_workers();
    block_on(async {
        let client = connect(&cluster).await;
        let keys = Keys::new(PREFIX);
        let models = ModelStore::new(client.clone(), keys.clone());
        assert_eq!(models.get().await.expect("get"), None);

        let (_lease, fence) = lead(&client).await;
        let model = StoredModel {
            v: augur_store::STORED_MODEL_VERSION,
            version: 3,
            trained_at_ms: 1_700_000_000_000,
            training_runs: 512,
            metrics: json!({"within_2x": 0.64, "median_abs_log2": 0.41}),
            model_json: "{\"v\":1}".into(),
        };
        models.put(&fence, &model).await.expect("put");
        assert_eq!(models.get().await.expect("get"), Some(model.clone()));

        Leadership::new(client.clone(), keys.clone())
            .resign(&fence)
            .await
            .expect("resign");
        let newer = StoredModel {
            version: 4,
            ..model.clone()
        };
        let err = models
            .put(&fence, &newer)
            .await
            .expect_err("a stale fence must not write");
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        assert_eq!(models.get().await.expect("get"), Some(model));

        let future = json!({"v": 2, "version": 9, "trained_at_ms": 1, "training_runs": 1, "model_json": "{}"});
        client
            .clone()
            .put(keys.model_current(), future.to_string(), None)
            .await
            .expect("put");
        let err = models.get().await.expect_err("schema version 2");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    });
}

async fn next_change(watch: &mut PlacementConfigWatch) -> PlacementConfigChange {
    tokio::time::timeout(WATCH_DEADLINE, watch.next())
        .await
        .expect("a watch event in time")
        .expect("watch")
}

#[test]
fn placement_config_store_compares_revisions_and_watches_changes() {
    let cluster = cluster_without_workers();
    block_on(async {
        let client = connect(&cluster).await;
        let keys = Keys::new(PREFIX);
        let store = PlacementConfigStore::new(client.clone(), keys.clone());
        let (stored, read_at) = store.get().await.expect("get");
        assert_eq!(stored, None);
        let mut watch = store.watch(read_at).await.expect("watch");

        let first = json!({"policy": "least-loaded"});
        let r1 = store.put(&first).await.expect("put");
        assert!(r1 > read_at);
        match next_change(&mut watch).await {
            PlacementConfigChange::Set(c) => assert_eq!((c.value, c.revision), (first.clone(), r1)),
            other => panic!("expected the first value, got {other:?}"),
        }

        let second = json!({"policy": "predictive", "aging_rate": 0.5});
        assert_eq!(
            store.put_if(&second, 0).await.expect("put_if"),
            None,
            "one is stored"
        );
        assert_eq!(
            store.put_if(&second, r1 - 1).await.expect("put_if"),
            None,
            "stale revision"
        );
        let r2 = store
            .put_if(&second, r1)
            .await
            .expect("put_if")
            .expect("current revision");
        assert!(r2 > r1);
        let (stored, _) = store.get().await.expect("get");
        let stored = stored.expect("stored");
        assert_eq!((stored.value, stored.revision), (second.clone(), r2));

        // An undecodable value is skipped by the watch; the next good one arrives.
        client
            .clone()
            .put(keys.placement_config(), "{oops", None)
            .await
            .expect("put");
        let third = json!({"policy": "round-robin"});
        let r3 = store.put(&third).await.expect("put");
        loop {
            match next_change(&mut watch).await {
                PlacementConfigChange::Set(c) if c.value == second => continue,
                PlacementConfigChange::Set(c) => {
                    assert_eq!((c.value, c.revision), (third.clone(), r3));
                    break;
                }
                other => panic!("expected the third value, got {other:?}"),
            }
        }
        client
            .clone()
            .delete(keys.placement_config(), None)
            .await
            .expect("delete");
        assert!(matches!(
            next_change(&mut watch).await,
            PlacementConfigChange::Removed { .. }
        ));
    });
}
