//! Workflows on a real cluster: DAGs with outputs and fan-out, every trigger
//! rule, `when`, `finally`, task retries, cancel, retry of a failed run, and
//! submissions refused with nothing written. (The failover ledger test is in
//! `workflows_chaos.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use augur_e2e::{poll_until, Cluster, ClusterConfig};
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

pub(crate) const DEADLINE: Duration = Duration::from_secs(90);

/// A gRPC client of one coordinator, blocking.
pub(crate) struct Api {
    runtime: tokio::runtime::Runtime,
    client: JobServiceClient<Channel>,
}

impl Api {
    pub(crate) fn new(cluster: &Cluster, coordinator: usize) -> Api {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let url = cluster.api_url(coordinator);
        let client = runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            JobServiceClient::new(channel)
        });
        Api { runtime, client }
    }

    pub(crate) fn submit_with(
        &mut self,
        yaml: &str,
        params: &[(&str, &str)],
        key: &str,
    ) -> Result<pb::SubmitWorkflowResponse, tonic::Status> {
        let request = pb::SubmitWorkflowRequest {
            source: yaml.as_bytes().to_vec(),
            file_name: "workflow.yaml".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            idempotency_key: key.into(),
        };
        let mut client = self.client.clone();
        self.runtime
            .block_on(async move { client.submit_workflow(request).await })
            .map(|r| r.into_inner())
    }

    pub(crate) fn submit(&mut self, yaml: &str) -> String {
        self.submit_with(yaml, &[], "")
            .unwrap_or_else(|e| panic!("submission refused: {e}\n{yaml}"))
            .run_id
    }

    pub(crate) fn get(&mut self, run: &str) -> Result<pb::WorkflowRun, tonic::Status> {
        let mut client = self.client.clone();
        let request = pb::GetWorkflowRequest {
            run_id: run.to_string(),
        };
        self.runtime
            .block_on(async move { client.get_workflow(request).await })
            .map(|r| r.into_inner())
    }

    pub(crate) fn cancel(&mut self, run: &str) -> Result<pb::WorkflowRun, tonic::Status> {
        let mut client = self.client.clone();
        let request = pb::CancelWorkflowRequest {
            run_id: run.to_string(),
        };
        self.runtime
            .block_on(async move { client.cancel_workflow(request).await })
            .map(|r| r.into_inner())
    }

    pub(crate) fn retry(
        &mut self,
        run: &str,
        from: &str,
    ) -> Result<pb::WorkflowRun, tonic::Status> {
        let mut client = self.client.clone();
        let request = pb::RetryWorkflowRequest {
            run_id: run.to_string(),
            from: from.to_string(),
        };
        self.runtime
            .block_on(async move { client.retry_workflow(request).await })
            .map(|r| r.into_inner())
    }

    pub(crate) fn list(&mut self, state: &str) -> Vec<pb::WorkflowRun> {
        let mut client = self.client.clone();
        let request = pb::ListWorkflowsRequest {
            state: state.to_string(),
            limit: 1000,
        };
        self.runtime
            .block_on(async move { client.list_workflows(request).await })
            .map(|r| r.into_inner().runs)
            .unwrap_or_else(|e| panic!("list refused: {e}"))
    }

    fn schedule(
        &mut self,
        request: pb::CreateScheduleRequest,
    ) -> Result<pb::Schedule, tonic::Status> {
        let mut client = self.client.clone();
        self.runtime
            .block_on(async move { client.create_schedule(request).await })
            .map(|r| r.into_inner())
    }

    fn pause(&mut self, name: &str) {
        let mut client = self.client.clone();
        let request = pb::PauseScheduleRequest {
            name: name.to_string(),
            paused: true,
        };
        self.runtime
            .block_on(async move { client.pause_schedule(request).await })
            .unwrap_or_else(|e| panic!("pause refused: {e}"));
    }

    /// Waits for the run to end; returns it.
    pub(crate) fn wait(&mut self, run: &str, timeout: Duration) -> pb::WorkflowRun {
        poll_until(timeout, format!("workflow run {run} ends"), || {
            match self.get(run) {
                Ok(r) if r.state != "running" => Ok(r),
                Ok(r) => Err(format!("{}: {:?}", r.state, r.counts)),
                // A coordinator being replaced: ask again.
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Instances of `task`, by item index.
pub(crate) fn instances<'a>(run: &'a pb::WorkflowRun, task: &str) -> Vec<&'a pb::WorkflowTask> {
    let mut v: Vec<&pb::WorkflowTask> = run.tasks.iter().filter(|t| t.name == task).collect();
    v.sort_by_key(|t| t.item_index);
    v
}

/// The one state of a task that is not fanned out.
fn state_of(run: &pb::WorkflowRun, task: &str) -> String {
    let found = instances(run, task);
    assert_eq!(found.len(), 1, "{task}: {found:?}");
    found[0].state.clone()
}

fn cluster() -> Cluster {
    Cluster::start(ClusterConfig {
        workers: 2,
        worker_slots: 8,
        ..ClusterConfig::default()
    })
}

#[test]
fn a_diamond_with_outputs_and_a_fan_out_of_fifty_runs_every_instance() {
    let cluster = cluster();
    let mut api = Api::new(&cluster, 0);
    let yaml = r#"
name: diamond
params: {n: "50"}
tasks:
  - name: extract
    command: [sh, -c, 'seq 1 ${{ params.n }} > "$AUGUR_OUTPUTS/items.lines"; printf %s "$AUGUR_WORKFLOW_ID" > "$AUGUR_OUTPUTS/run"']
  - name: left
    depends_on: [extract]
    for_each: ${{ tasks.extract.outputs.items }}
    max_parallel: 6
    command: [sh, -c, 'test "$AUGUR_TASK" = left && test "$AUGUR_TASK_ITEM" = "${{ item }}" && echo $(( ${{ item }} * 2 )) > "$AUGUR_OUTPUTS/double"']
  - name: right
    depends_on: [extract]
    command: [sh, -c, 'echo right > "$AUGUR_OUTPUTS/side"']
  - name: join
    depends_on: [left, right]
    env: {DOUBLES: '${{ tasks.left.outputs.double }}', SIDE: '${{ tasks.right.outputs.side }}', RUN: '${{ tasks.extract.outputs.run }}'}
    command: [sh, -c, 'printf %s "$DOUBLES" > "$AUGUR_OUTPUTS/all.json"; test "$SIDE" = right && test "$RUN" = "${{ workflow.id }}"']
"#;
    let id = api.submit(yaml);
    let run = api.wait(&id, DEADLINE);
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(run.tasks.len(), 53, "1 + 50 + 1 + 1 instances");
    let left = instances(&run, "left");
    assert_eq!(left.len(), 50);
    for (k, i) in left.iter().enumerate() {
        assert!(i.fanned);
        assert_eq!(i.item, (k + 1).to_string());
        assert_eq!(i.state, "succeeded");
        assert_eq!(i.outputs.get("double"), Some(&((k + 1) * 2).to_string()));
        assert!(!i.job_id.is_empty());
    }
    let join = instances(&run, "join");
    let all: Vec<String> =
        serde_json::from_str(&join[0].outputs["all"]).expect("join wrote the JSON list");
    let expected: Vec<String> = (1..=50).map(|k| (k * 2).to_string()).collect();
    assert_eq!(all, expected, "the fan-out's outputs in item order");
    assert_eq!(run.counts.get("succeeded"), Some(&53));
    assert!(run.finished_at_ms >= run.submitted_at_ms);
    // Every instance is one job, labelled with its run and task.
    let job: serde_json::Value = cluster.cli_json(&["get", &left[7].job_id]);
    let labels = &job["labels"];
    assert_eq!(labels["augur.workflow"], id.as_str(), "{job}");
    assert_eq!(labels["augur.workflow_task"], "left");
    assert_eq!(labels["augur.workflow_item"], "8");
}

const RULES: &str = r#"
name: rules
params: {mode: full}
tasks:
  - {name: ok, command: ["true"]}
  - {name: bad, command: ["false"]}
  - {name: skipper, depends_on: [ok], when: 'no == yes', command: ["true"]}
  - {name: all-succeeded, depends_on: [ok, bad], command: ["true"]}
  - {name: all-done, depends_on: [ok, bad], trigger: all_done, command: ["true"]}
  - {name: one-failed, depends_on: [ok, bad], trigger: one_failed, command: ["true"]}
  - {name: one-failed-none, depends_on: [ok], trigger: one_failed, command: ["true"]}
  - {name: one-succeeded, depends_on: [ok, bad], trigger: one_succeeded, command: ["true"]}
  - {name: none-failed, depends_on: [ok, bad], trigger: none_failed, command: ["true"]}
  - {name: none-failed-skips, depends_on: [ok, skipper], trigger: none_failed, command: ["true"]}
  - {name: all-succeeded-skips, depends_on: [ok, skipper], command: ["true"]}
  - {name: when-true, depends_on: [ok], when: '${{ params.mode }} == full', command: ["true"]}
  - {name: when-false, depends_on: [ok], when: '${{ params.mode }} != full', command: ["true"]}
finally:
  - {name: cleanup, command: ["true"]}
"#;

#[test]
fn every_trigger_rule_when_and_finally_after_failure_and_success() {
    let cluster = cluster();
    let mut api = Api::new(&cluster, 0);
    let id = api.submit(RULES);
    let run = api.wait(&id, DEADLINE);
    assert_eq!(run.state, "failed", "a failed task fails the run: {run:?}");
    let expected = [
        ("ok", "succeeded"),
        ("bad", "failed"),
        ("skipper", "skipped"),
        ("all-succeeded", "upstream_failed"),
        ("all-done", "succeeded"),
        ("one-failed", "succeeded"),
        ("one-failed-none", "skipped"),
        ("one-succeeded", "succeeded"),
        ("none-failed", "upstream_failed"),
        ("none-failed-skips", "succeeded"),
        ("all-succeeded-skips", "skipped"),
        ("when-true", "succeeded"),
        ("when-false", "skipped"),
        ("cleanup", "succeeded"),
    ];
    for (task, state) in expected {
        assert_eq!(state_of(&run, task), state, "task {task}");
    }
    let cleanup = instances(&run, "cleanup");
    assert!(cleanup[0].finally);
    // The same run with `bad` passing: it succeeds, finally included.
    let passing = RULES.replace(
        r#"{name: bad, command: ["false"]}"#,
        r#"{name: bad, command: ["true"]}"#,
    );
    let id = api.submit(&passing);
    let run = api.wait(&id, DEADLINE);
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(state_of(&run, "cleanup"), "succeeded");
    assert_eq!(state_of(&run, "one-failed"), "skipped");
    // Parameters override their defaults.
    let id = api
        .submit_with(&passing, &[("mode", "quick")], "")
        .expect("submitted")
        .run_id;
    let run = api.wait(&id, DEADLINE);
    assert_eq!(state_of(&run, "when-true"), "skipped");
    assert_eq!(state_of(&run, "when-false"), "succeeded");
    assert_eq!(run.params.get("mode").map(String::as_str), Some("quick"));
}

#[test]
fn task_retries_cancel_and_retry_of_a_failed_run() {
    let cluster = cluster();
    let mut api = Api::new(&cluster, 0);
    let dir = cluster.path("wf");
    std::fs::create_dir_all(&dir).expect("dir");
    let dir = dir.display().to_string();

    // A task retried until its third attempt passes.
    let yaml = r#"
name: flaky
tasks:
  - name: flaky
    retries: 2
    backoff: {initial: 100ms}
    command: [sh, -c, 'test "$AUGUR_ATTEMPT" -ge 3']
"#;
    let id = api.submit(yaml);
    let run = api.wait(&id, DEADLINE);
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(instances(&run, "flaky")[0].attempts, 3);

    // Cancel mid-run: the running job is cancelled, the rest skipped,
    // finally included.
    let yaml = r#"
name: long
tasks:
  - {name: sleeper, command: [sleep, "60"]}
  - {name: after, depends_on: [sleeper], command: ["true"]}
finally:
  - {name: cleanup, command: ["true"]}
"#;
    let id = api.submit(yaml);
    poll_until(DEADLINE, "the sleeper runs", || {
        let run = api.get(&id).map_err(|e| e.to_string())?;
        match instances(&run, "sleeper").first() {
            Some(i) if i.state == "running" && !i.job_id.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let run = api.cancel(&id).expect("cancelled");
    assert_eq!(run.state, "cancelled", "{run:?}");
    assert_eq!(state_of(&run, "sleeper"), "cancelled");
    assert_eq!(state_of(&run, "after"), "skipped");
    assert_eq!(state_of(&run, "cleanup"), "skipped");
    let job = instances(&run, "sleeper")[0].job_id.clone();
    poll_until(DEADLINE, "the sleeper's job is cancelled", || {
        let j: serde_json::Value = cluster.cli_json(&["get", &job]);
        if j["state"] == "cancelled" {
            Ok(())
        } else {
            Err(j["state"].to_string())
        }
    });
    // Cancelling again is fine; retrying a run that still runs is not.
    assert_eq!(api.cancel(&id).expect("again").state, "cancelled");

    // Retry re-runs what failed and what depends on it, not what succeeded.
    let yaml = format!(
        r#"
name: fixme
tasks:
  - {{name: first, command: [sh, -c, 'echo first >> {dir}/ledger']}}
  - {{name: second, depends_on: [first], command: [sh, -c, 'echo second >> {dir}/ledger; test -f {dir}/fixed']}}
  - {{name: third, depends_on: [second], command: [sh, -c, 'echo third >> {dir}/ledger']}}
"#
    );
    let id = api.submit(&yaml);
    let run = api.wait(&id, DEADLINE);
    assert_eq!(run.state, "failed");
    assert_eq!(state_of(&run, "third"), "upstream_failed");
    let first_job = instances(&run, "first")[0].job_id.clone();
    let refused = api.retry(&id, "nope").expect_err("unknown task");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    std::fs::write(format!("{dir}/fixed"), "").expect("fix");
    let retried = api.retry(&id, "").expect("retried");
    assert_eq!(retried.state, "running");
    let run = api.wait(&id, DEADLINE);
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(instances(&run, "first")[0].job_id, first_job, "kept");
    assert_eq!(instances(&run, "second")[0].generation, 1);
    let ledger = std::fs::read_to_string(format!("{dir}/ledger")).expect("ledger");
    assert_eq!(
        ledger.lines().collect::<Vec<_>>(),
        ["first", "second", "second", "third"]
    );
    // `--from` re-runs a task and its downstream even after success.
    api.retry(&id, "third").expect("from third");
    let run = api.wait(&id, DEADLINE);
    assert_eq!(run.state, "succeeded");
    let ledger = std::fs::read_to_string(format!("{dir}/ledger")).expect("ledger");
    assert_eq!(ledger.lines().filter(|l| *l == "third").count(), 2);
    assert_eq!(ledger.lines().filter(|l| *l == "second").count(), 2);
}

#[test]
fn bad_workflows_are_refused_naming_the_task_and_field_and_write_nothing() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        ..ClusterConfig::default()
    });
    let mut api = Api::new(&cluster, 0);
    let before = cluster.etcd_revision();
    let big = format!(
        "name: big\ntasks:\n- {{name: a, command: [x], for_each: [{}]}}\n",
        (0..10_001)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let huge = format!("name: huge\n# {}\ntasks: []\n", "x".repeat(1024 * 1024));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "cycle",
            "name: c\ntasks:\n- {name: a, depends_on: [c], command: [x]}\n- {name: b, depends_on: [a], command: [x]}\n- {name: c, depends_on: [b], command: [x]}\n".into(),
            "is part of a cycle: b -> c -> a -> b",
        ),
        (
            "unknown depends_on",
            "name: c\ntasks:\n- {name: a, depends_on: [ghost], command: [x]}\n".into(),
            "task \"a\": depends_on",
        ),
        (
            "reference to a task not upstream",
            "name: c\ntasks:\n- {name: a, command: [x]}\n- {name: b, command: [echo, '${{ tasks.a.outputs.k }}']}\n".into(),
            "task \"b\"",
        ),
        (
            "duplicate names",
            "name: c\ntasks:\n- {name: a, command: [x]}\n- {name: a, command: [y]}\n".into(),
            "\"a\"",
        ),
        (
            "unknown field",
            "name: c\ntasks:\n- {name: a, command: [x], retry: 3}\n".into(),
            "unknown field",
        ),
        (
            "bad duration",
            "name: c\ntasks:\n- {name: a, command: [x], timeout: 10 parsecs}\n".into(),
            "task \"a\": timeout",
        ),
        (
            "bad quantity",
            "name: c\ntasks:\n- {name: a, command: [x], resources: {memory: lots}}\n".into(),
            "task \"a\": resources.memory",
        ),
        (
            "for_each over a parameter that is not a list",
            "name: c\nparams: {p: one}\ntasks:\n- {name: a, command: [x], for_each: '${{ params.p }}'}\n".into(),
            "task \"a\": for_each",
        ),
        ("more than 10,000 instances", big, "10000"),
        ("over 1 MiB", huge, "1 MiB"),
    ];
    for (what, yaml, says) in &cases {
        let e = api
            .submit_with(yaml, &[], "")
            .expect_err(&format!("{what} is refused"));
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
        assert!(e.message().contains(says), "{what}: {}", e.message());
    }
    let ok = "name: fine\nparams: {p: x}\ntasks:\n- {name: a, command: [\"true\"]}\n";
    let e = api
        .submit_with(ok, &[("nope", "1")], "")
        .expect_err("unknown param");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("nope"), "{}", e.message());
    for bad_id in ["", "wf-x", "../x"] {
        let e = api.get(bad_id).expect_err("bad id");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad_id:?}: {e}");
    }
    assert_eq!(
        cluster.etcd_revision(),
        before,
        "refused submissions wrote nothing"
    );
    // An idempotency key makes a second submission the same run.
    let first = api.submit_with(ok, &[], "nightly-1").expect("first");
    let again = api.submit_with(ok, &[], "nightly-1").expect("again");
    assert!(!first.existing && again.existing);
    assert_eq!(first.run_id, again.run_id);
    let run = api.wait(&first.run_id, DEADLINE);
    assert_eq!(run.state, "succeeded");
    let params: BTreeMap<String, String> = run.params.into_iter().collect();
    assert_eq!(params.get("p").map(String::as_str), Some("x"));
}

#[test]
fn a_schedule_runs_a_workflow_once_per_tick() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        ..ClusterConfig::default()
    });
    let mut api = Api::new(&cluster, 0);
    let yaml = "name: ticking\nparams: {who: nobody}\ntasks:\n- {name: a, command: [sh, -c, 'echo ${{ params.who }} > \"$AUGUR_OUTPUTS/who\"']}\n";
    let request = |source: &str, params: &[(&str, &str)]| pb::CreateScheduleRequest {
        name: "every-second".into(),
        cron: "* * * * * *".into(),
        workflow_source: source.as_bytes().to_vec(),
        workflow_file_name: "ticking.yaml".into(),
        workflow_params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    // A bad workflow or parameter is refused when the schedule is created.
    let before = cluster.etcd_revision();
    let e = api
        .schedule(request("name: x\ntasks: [{name: a}]\n", &[]))
        .expect_err("no command");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let e = api
        .schedule(request(yaml, &[("nope", "1")]))
        .expect_err("unknown param");
    assert!(e.message().contains("nope"), "{e}");
    assert_eq!(cluster.etcd_revision(), before, "nothing written");
    let created = api
        .schedule(request(yaml, &[("who", "cron")]))
        .expect("created");
    assert_eq!(created.workflow, "ticking");
    assert!(created.spec.is_none(), "no job spec shown");
    let runs = poll_until(DEADLINE, "three scheduled runs succeeded", || {
        let done: Vec<pb::WorkflowRun> = api
            .list("succeeded")
            .into_iter()
            .filter(|r| r.name == "ticking")
            .collect();
        if done.len() >= 3 {
            Ok(done)
        } else {
            Err(format!("{} so far", done.len()))
        }
    });
    api.pause("every-second");
    let run = api.get(&runs[0].id).expect("run");
    assert_eq!(
        instances(&run, "a")[0]
            .outputs
            .get("who")
            .map(String::as_str),
        Some("cron")
    );
    // One run per tick: their submission times are a second apart at least.
    let mut at: Vec<i64> = api
        .list("")
        .iter()
        .filter(|r| r.name == "ticking")
        .map(|r| r.submitted_at_ms)
        .collect();
    at.sort_unstable();
    for pair in at.windows(2) {
        assert!(pair[1] - pair[0] >= 500, "two runs for one tick: {at:?}");
    }
}
