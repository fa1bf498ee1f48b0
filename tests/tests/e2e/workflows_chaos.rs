//! A workflow run survives its leader being SIGKILLed three times while 200
//! fanned-out task instances are in flight: every instance runs exactly once
//! (a ledger written by the tasks themselves), the run succeeds, and its
//! trace is one tree rooted at `workflow.run`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use augur_e2e::chaos::{coordinator_name, CHAOS_LEASE_TTL};
use augur_e2e::otlp::OtlpReceiver;
use augur_e2e::{poll_until, Cluster, ClusterConfig};

use super::workflows::{instances, Api, DEADLINE};

const WIDTH: usize = 200;

/// A client of some coordinator that is up.
fn api(cluster: &Cluster) -> Api {
    let up = cluster.answering_coordinators();
    Api::new(cluster, up[0])
}

#[test]
fn a_run_survives_three_leader_kills_with_two_hundred_tasks_in_flight() {
    let receiver = OtlpReceiver::start();
    let otlp = vec!["--otlp-endpoint".to_string(), receiver.endpoint()];
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 3,
        workers: 3,
        worker_slots: 8,
        lease_ttl: CHAOS_LEASE_TTL,
        extra_coordinator_args: otlp.clone(),
        extra_worker_args: otlp,
        ..ClusterConfig::default()
    });
    let ledger = cluster.path("ledger");
    std::fs::create_dir_all(&ledger).expect("ledger dir");
    let ledger = ledger.display().to_string();
    let yaml = format!(
        r#"
name: survive
tasks:
  - name: list
    command: [sh, -c, 'seq 1 {WIDTH} > "$AUGUR_OUTPUTS/items.lines"']
  - name: work
    depends_on: [list]
    for_each: ${{{{ tasks.list.outputs.items }}}}
    command: [sh, -c, 'echo "$AUGUR_JOB_ID $AUGUR_ATTEMPT" >> {ledger}/item-${{{{ item }}}}; sleep 0.4; echo ${{{{ item }}}} > "$AUGUR_OUTPUTS/n"']
  - name: total
    depends_on: [work]
    command: [sh, -c, 'echo "$AUGUR_JOB_ID" >> {ledger}/total']
"#
    );
    let leader = cluster.wait_leader(DEADLINE, "elected", |_| true);
    // Submitted through a follower, so its span is exported by a process
    // the first kill spares.
    let follower = (0..3)
        .find(|&i| coordinator_name(i) != leader)
        .expect("a follower");
    let id = Api::new(&cluster, follower).submit(&yaml);
    let mut killed = Vec::new();
    for round in 0..3 {
        // Let some instances start under this leader.
        poll_until(DEADLINE, "task instances in flight", || {
            let run = api(&cluster).get(&id).map_err(|e| e.to_string())?;
            let running = run.counts.get("running").copied().unwrap_or(0);
            if running > 0 || run.state != "running" {
                Ok(())
            } else {
                Err(format!("{:?}", run.counts))
            }
        });
        std::thread::sleep(Duration::from_millis(700));
        let leader = cluster.wait_leader(DEADLINE, "elected", |_| true);
        let run = api(&cluster).get(&id).expect("run");
        eprintln!(
            "round {round}: killing leader {leader} with {:?} ({})",
            run.counts, run.state
        );
        cluster.kill_node(&leader);
        killed.push((leader.clone(), run.counts.clone()));
        cluster.wait_leader(DEADLINE, "another node", |l| l != leader);
        cluster.restart_coordinator(&leader);
    }
    let run = poll_until(Duration::from_secs(180), "the run ends", || {
        match api(&cluster).get(&id) {
            Ok(r) if r.state != "running" => Ok(r),
            Ok(r) => Err(format!("{:?}", r.counts)),
            Err(e) => Err(e.to_string()),
        }
    });
    assert_eq!(run.state, "succeeded", "{run:?}");
    // At least one kill found instances running (the run was not over).
    assert!(
        killed
            .iter()
            .any(|(_, counts)| counts.get("running").copied().unwrap_or(0) > 0),
        "no kill hit a run with instances in flight: {killed:?}"
    );
    let work = instances(&run, "work");
    assert_eq!(work.len(), WIDTH);
    // Exactly once: one ledger line per item, written by the job the run
    // recorded, on its first attempt.
    let mut jobs = BTreeSet::new();
    for (k, i) in work.iter().enumerate() {
        assert_eq!(i.state, "succeeded", "item {k}: {i:?}");
        let lines = std::fs::read_to_string(format!("{ledger}/item-{}", k + 1))
            .unwrap_or_else(|e| panic!("item {} never ran: {e}", k + 1));
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(
            lines,
            [format!("{} 1", i.job_id)],
            "item {} ran more than once or by another job",
            k + 1
        );
        assert!(jobs.insert(i.job_id.clone()), "job shared by two items");
    }
    let total = std::fs::read_to_string(format!("{ledger}/total")).expect("total ran");
    assert_eq!(total.lines().count(), 1, "total ran once: {total}");
    // No job of the run exists twice: every job with the run's label is an
    // instance the run recorded.
    let all: serde_json::Value = cluster.cli_json(&["list"]);
    let labelled = all
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter(|j| j["labels"]["augur.workflow"] == id.as_str())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(labelled, WIDTH + 2, "one job per instance, none doubled");

    // One trace: the workers' spans of every instance's job are in the run's
    // trace, and only `workflow.run` is a root.
    let trace = run.trace_id.clone();
    assert!(!trace.is_empty());
    let spans = receiver.wait_trace(&trace, DEADLINE, "the run's spans", |spans| {
        spans.iter().filter(|s| s.name == "job.execute").count() >= WIDTH + 2
            && spans.iter().any(|s| s.name == "workflow.run")
    });
    let mut executed: BTreeMap<String, usize> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.name == "job.execute") {
        *executed
            .entry(
                s.attributes
                    .get("augur.job.id")
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    for job in &jobs {
        assert_eq!(
            executed.get(job),
            Some(&1),
            "job {job} executed once, traced"
        );
    }
    let roots: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(roots, ["workflow.run"], "one root");
    let stray = receiver
        .spans()
        .into_iter()
        .filter(|s| s.attributes.get("augur.workflow.id") == Some(&id) && s.trace_id != trace)
        .count();
    assert_eq!(stray, 0, "spans of the run outside its trace");
}
