//! `augur bench --workflow fanout --width N`: one 1 → N → 1 workflow run on a
//! cluster of its own, and what the run cost beyond its jobs. Figures are
//! printed, never asserted on.
//!
//! The fan-out is a literal `for_each` list of N items: the null executor
//! (the default) runs no command, so a first task cannot write
//! `$AUGUR_OUTPUTS/items.lines`. The file is not checked here: a width past
//! the server's limits is the server's error, shown as it is.

use std::time::Duration;

use anyhow::Context;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_client::JobServiceClient;
use clap::ValueEnum;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::bench::BenchArgs;
use crate::connection::Conn;
use crate::dev::{LocalCluster, LocalSpec};
use crate::Output;

/// The workflows `bench --workflow` can run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkflowBench {
    /// `split` → `work` × WIDTH → `join`.
    Fanout,
}

/// The three levels of the fan-out, in order.
const LEVELS: [&str; 3] = ["split", "work", "join"];
/// GetJob calls in flight when reading the run's jobs back.
const READS_IN_FLIGHT: usize = 64;
/// Longest wait for the run to end.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// What the run cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub width: usize,
    pub state: String,
    pub run_ms: i64,
    /// Longest job runtime at each of [`LEVELS`].
    pub level_ms: [i64; 3],
    /// Jobs whose started and finished times were read.
    pub jobs_timed: usize,
}

impl Figures {
    pub fn tasks(&self) -> usize {
        self.width + 2
    }

    pub fn critical_path_ms(&self) -> i64 {
        self.level_ms.iter().sum()
    }

    /// (run duration − critical path) / (N + 2).
    pub fn overhead_per_task_ms(&self) -> f64 {
        (self.run_ms - self.critical_path_ms()) as f64 / self.tasks() as f64
    }

    /// (N + 2) / run duration.
    pub fn tasks_per_s(&self) -> f64 {
        self.tasks() as f64 / (self.run_ms.max(1) as f64 / 1000.0)
    }
}

/// The 1 → `width` → 1 workflow, as a JSON file.
pub fn fanout_source(width: usize) -> Vec<u8> {
    let items: Vec<String> = (0..width).map(|i| i.to_string()).collect();
    json!({
        "name": "bench-fanout",
        "tasks": [
            {"name": LEVELS[0], "command": ["true"]},
            {"name": LEVELS[1], "depends_on": [LEVELS[0]], "for_each": items,
             "command": ["true", "${{ item }}"]},
            {"name": LEVELS[2], "depends_on": [LEVELS[1]], "command": ["true"]},
        ],
    })
    .to_string()
    .into_bytes()
}

/// Job runtime (finished − started, ms) of each level, from the jobs' times;
/// jobs without both times are left out.
pub fn level_maxima<'a>(
    jobs: impl IntoIterator<Item = (&'a str, &'a pb::Job)>,
) -> ([i64; 3], usize) {
    let mut maxima = [0i64; 3];
    let mut timed = 0;
    for (task, job) in jobs {
        let Some(level) = LEVELS.iter().position(|l| *l == task) else {
            continue;
        };
        if job.started_at_ms <= 0 || job.finished_at_ms <= 0 {
            continue;
        }
        timed += 1;
        maxima[level] = maxima[level].max(job.finished_at_ms - job.started_at_ms);
    }
    (maxima, timed)
}

pub async fn run(args: &BenchArgs, width: usize, output: Output) -> anyhow::Result<()> {
    let cluster = LocalCluster::start(LocalSpec {
        secure: false,
        data_dir: None,
        listen: "127.0.0.1:0".parse()?,
        workers: args.workers,
        slots: args.slots,
        executor: crate::bench::executor(args.executor),
        etcd_bin: args.etcd_bin.clone(),
        max_txn_ops: 1024,
        // Every job of the run stays readable for its times.
        retention_count: width * 2 + 1000,
        metrics: augur_telemetry::Metrics::new(true, true),
    })
    .await?;
    let result = measure(&cluster.endpoint, width).await;
    cluster.stop().await;
    let figures = result?;
    let report = report(&figures, args);
    match output {
        Output::Json => println!("{report}"),
        Output::Table => print!("{}", report_text(&figures, &report)),
    }
    Ok(())
}

fn report(f: &Figures, args: &BenchArgs) -> Value {
    json!({
        "workflow": "fanout",
        "width": f.width,
        "tasks": f.tasks(),
        "executor": format!("{:?}", args.executor).to_lowercase(),
        "workers": args.workers,
        "slots_per_worker": args.slots,
        "fan_out": format!("literal for_each list of {} items", f.width),
        "state": f.state,
        "run_duration_s": f.run_ms as f64 / 1000.0,
        "critical_path_s": f.critical_path_ms() as f64 / 1000.0,
        "critical_path_levels_ms": f.level_ms,
        "jobs_timed": f.jobs_timed,
        "scheduling_overhead_per_task_ms": f.overhead_per_task_ms(),
        "tasks_per_s": f.tasks_per_s(),
    })
}

fn report_text(f: &Figures, report: &Value) -> String {
    let [a, b, c] = f.level_ms;
    let mut lines = vec![
        format!("workflow                 fanout: split → work × {} → join", f.width),
        format!(
            "fan-out                  a literal for_each list of {} items (the null executor runs no command, so no task writes $AUGUR_OUTPUTS/items.lines)",
            f.width
        ),
        format!(
            "executor                 {}",
            report["executor"].as_str().unwrap_or("")
        ),
        format!("run ended                {}", f.state),
        format!(
            "run duration             {:.3} s (submitted_at → finished_at)",
            f.run_ms as f64 / 1000.0
        ),
        format!(
            "critical path            {:.3} s (longest job per level: {a} + {b} + {c} ms; {} jobs timed)",
            f.critical_path_ms() as f64 / 1000.0,
            f.jobs_timed
        ),
        format!(
            "overhead per task        {:.2} ms ((run − critical path) / {} tasks)",
            f.overhead_per_task_ms(),
            f.tasks()
        ),
        format!("tasks per second         {:.0}", f.tasks_per_s()),
    ];
    if f.state != "succeeded" {
        lines.push(format!(
            "note                     the run ended {}, so these figures are not a clean run's",
            f.state
        ));
    }
    lines.join("\n") + "\n"
}

async fn measure(endpoint: &str, width: usize) -> anyhow::Result<Figures> {
    let mut client = crate::client::connect(endpoint).await?;
    let submitted = client
        .submit_workflow(pb::SubmitWorkflowRequest {
            source: fanout_source(width),
            file_name: "bench-fanout.json".to_string(),
            params: Default::default(),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner();
    let run = tokio::time::timeout(
        RUN_DEADLINE,
        crate::workflow::wait_for_end(&mut client, &submitted.run_id),
    )
    .await
    .with_context(|| {
        format!(
            "workflow run {} did not end within {} s",
            submitted.run_id,
            RUN_DEADLINE.as_secs()
        )
    })??;
    let jobs = read_jobs(&client, &run).await?;
    let (level_ms, jobs_timed) = level_maxima(jobs.iter().map(|(t, j)| (t.as_str(), j)));
    Ok(Figures {
        width,
        state: run.state.clone(),
        run_ms: (run.finished_at_ms - run.submitted_at_ms).max(0),
        level_ms,
        jobs_timed,
    })
}

/// Every job of the run, with its task's name, read with GetJob.
async fn read_jobs(
    client: &JobServiceClient<Conn>,
    run: &pb::WorkflowRun,
) -> anyhow::Result<Vec<(String, pb::Job)>> {
    let reads = run.tasks.iter().filter(|t| !t.job_id.is_empty()).map(|t| {
        let mut c = client.clone();
        let (task, job_id) = (t.name.clone(), t.job_id.clone());
        async move {
            let job = c.get_job(pb::GetJobRequest { job_id }).await?.into_inner();
            Ok::<_, tonic::Status>((task, job))
        }
    });
    let answers: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(READS_IN_FLIGHT)
        .collect()
        .await;
    Ok(answers.into_iter().collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(started: i64, finished: i64) -> pb::Job {
        pb::Job {
            started_at_ms: started,
            finished_at_ms: finished,
            ..Default::default()
        }
    }

    #[test]
    fn the_fanout_file_is_a_valid_one_to_n_to_one_workflow() {
        let source = fanout_source(3);
        let w = augur_workflow::load("bench-fanout.json", &source).expect("valid");
        let names: Vec<&str> = w.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, LEVELS);
        assert_eq!(
            w.tasks[1].for_each,
            Some(augur_workflow::ForEach::List(vec![
                "0".into(),
                "1".into(),
                "2".into()
            ]))
        );
        assert_eq!(w.tasks[2].upstream, [1]);
    }

    #[test]
    fn the_critical_path_sums_each_levels_longest_job() {
        let jobs = [
            ("split", job(1000, 1010)),
            ("work", job(1020, 1025)),
            ("work", job(1020, 1050)),
            ("work", job(0, 0)), // never started: not timed
            ("join", job(1060, 1062)),
            ("other", job(0, 99)),
        ];
        let (levels, timed) = level_maxima(jobs.iter().map(|(t, j)| (*t, j)));
        assert_eq!(levels, [10, 30, 2]);
        assert_eq!(timed, 4);
        let f = Figures {
            width: 2,
            state: "succeeded".into(),
            run_ms: 242,
            level_ms: levels,
            jobs_timed: timed,
        };
        assert_eq!(f.critical_path_ms(), 42);
        assert_eq!(f.overhead_per_task_ms(), 50.0);
        assert!((f.tasks_per_s() - 4.0 / 0.242).abs() < 1e-9);
    }
}
