//! Every metric Augur exports, registered once. Names follow
//! `augur_<noun>_<unit>[_total]` in base units; labels take bounded values only
//! (outcomes, states, operations, policies); job and trace ids appear only as
//! exemplars on the latency histograms.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Exemplar labels: the trace of the job that produced the observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    pub priority_class: &'static str,
}

/// Priority classes for queue depth: high (> 0), normal (0), low (< 0).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PriorityClass {
    High,
    Normal,
    Low,
}

impl PriorityClass {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PriorityClass::High => "high",
            PriorityClass::Normal => "normal",
            PriorityClass::Low => "low",
        }
    }

    pub fn of(priority: i32) -> Self {
        match priority {
            p if p > 0 => PriorityClass::High,
            0 => PriorityClass::Normal,
            _ => PriorityClass::Low,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: String,
}

/// An API call or worker attach refused: the action and the gRPC code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub action: String,
    pub code: String,
}

/// `augur_api_refusals` (a handle: clones count into the same family).
pub type RefusalCounter = Family<RefusalLabel, Counter>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    role: String,
}

type ExemplarHistogram = HistogramWithExemplars<TraceExemplar>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type ExemplarFamily<L> = Family<L, ExemplarHistogram, fn() -> ExemplarHistogram>;

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 0.25 ms .. ~4 min
    exponential_buckets(0.000_25, 2.0, 20)
}

fn runtime_buckets() -> impl Iterator<Item = f64> {
    // 1 ms .. ~9 h
    exponential_buckets(0.001, 3.0, 17)
}

fn exemplar_latency() -> ExemplarHistogram {
    HistogramWithExemplars::new(latency_buckets())
}

fn exemplar_runtime() -> ExemplarHistogram {
    HistogramWithExemplars::new(runtime_buckets())
}

fn etcd_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

fn ratio_buckets() -> Histogram {
    // predicted / actual: 1/64 .. 64
    Histogram::new(exponential_buckets(1.0 / 64.0, 2.0, 13))
}

/// Metrics of a coordinator.
pub struct CoordinatorMetrics {
    pub jobs_submitted: Counter,
    pub jobs_finished: Family<OutcomeLabel, Counter>,
    pub job_retries: Counter,
    pub attempts_lost: Counter,
    pub queue_depth: Family<PriorityLabel, Gauge>,
    pub jobs_running: Gauge,
    pub jobs_unschedulable: Gauge,
    pub worker_results_refused: Counter,
    pub queue_wait: ExemplarHistogram,
    pub submit_to_start: ExemplarHistogram,
    pub job_runtime: ExemplarFamily<OutcomeLabel>,
    pub placement_decisions: Family<PolicyLabel, Counter>,
    pub prediction_error_ratio: HistogramFamily<PolicyLabel>,
    pub is_leader: Gauge,
    pub leader_epoch: Gauge,
    pub leader_transitions: Counter,
    pub workers: Family<StateLabel, Gauge>,
    pub etcd_request_duration: HistogramFamily<OperationLabel>,
    pub worker_attaches: Counter,
    pub api_requests: Family<OperationLabel, Counter>,
    pub api_refusals: RefusalCounter,
    pub model_version: Gauge,
    /// The API port's connections (`connections.rs`).
    pub connections: crate::connections::ConnectionMetrics,
    /// Workflow runs that ended, by outcome.
    pub workflow_runs: Family<OutcomeLabel, Counter>,
    /// Submission to end of finished workflow runs.
    pub workflow_run_duration: Histogram,
    /// Task instances that reached a terminal state, by state.
    pub workflow_tasks: Family<StateLabel, Counter>,
    /// Workflow runs the leader drives (leader only).
    pub workflow_runs_active: Gauge,
}

/// Outcomes of workflow runs (series created at zero).
pub const WORKFLOW_RUN_OUTCOMES: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];
/// Terminal states of workflow task instances (series created at zero).
pub const WORKFLOW_TASK_STATES: [&str; 5] = [
    "succeeded",
    "failed",
    "skipped",
    "upstream_failed",
    "cancelled",
];

/// Metrics of a worker.
pub struct WorkerMetrics {
    pub running_attempts: Gauge,
    pub slots: Gauge,
    pub result_buffer_depth: Gauge,
    pub stream_reconnects: Counter,
    pub attempts_finished: Family<OutcomeLabel, Counter>,
    pub attempt_runtime: ExemplarFamily<OutcomeLabel>,
    pub stale_assignments_rejected: Counter,
    pub registrations: Counter,
}

/// Trace exporter health, shared by both roles.
#[derive(Debug)]
pub struct TraceMetrics {
    pub spans_exported: Counter,
    pub spans_dropped: Counter,
}

/// A process's registry and its metric handles.
pub struct Metrics {
    pub registry: Registry,
    coordinator: Option<Arc<CoordinatorMetrics>>,
    worker: Option<Arc<WorkerMetrics>>,
    pub traces: Arc<TraceMetrics>,
}

impl Metrics {
    /// The registry of a process running the given roles (`augur dev` runs both).
    pub fn new(coordinator: bool, worker: bool) -> Arc<Self> {
        let mut registry = Registry::default();
        let role = match (coordinator, worker) {
            (true, true) => "dev",
            (true, false) => "coordinator",
            _ => "worker",
        };
        registry.register(
            "augur_build",
            "Augur version and role of this process",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                role: role.to_string(),
            }),
        );
        let traces = TraceMetrics {
            spans_exported: Counter::default(),
            spans_dropped: Counter::default(),
        };
        registry.register(
            "augur_trace_spans_exported",
            "Spans handed to the OTLP exporter",
            traces.spans_exported.clone(),
        );
        registry.register(
            "augur_trace_spans_dropped",
            "Spans dropped because the export queue was full or the exporter failed",
            traces.spans_dropped.clone(),
        );
        let coordinator = coordinator.then(|| Arc::new(register_coordinator(&mut registry)));
        let worker = worker.then(|| Arc::new(register_worker(&mut registry)));
        Arc::new(Metrics {
            registry,
            coordinator,
            worker,
            traces: Arc::new(traces),
        })
    }

    /// The coordinator's metrics; detached (recorded but not exported) if this
    /// registry was made without the coordinator role.
    pub fn coordinator(&self) -> Arc<CoordinatorMetrics> {
        self.coordinator
            .clone()
            .unwrap_or_else(|| Arc::new(register_coordinator(&mut Registry::default())))
    }

    /// The worker's metrics; detached if made without the worker role.
    pub fn worker(&self) -> Arc<WorkerMetrics> {
        self.worker
            .clone()
            .unwrap_or_else(|| Arc::new(register_worker(&mut Registry::default())))
    }
}

fn register_coordinator(r: &mut Registry) -> CoordinatorMetrics {
    let m = CoordinatorMetrics {
        jobs_submitted: Counter::default(),
        jobs_finished: Family::default(),
        job_retries: Counter::default(),
        attempts_lost: Counter::default(),
        queue_depth: Family::default(),
        jobs_running: Gauge::default(),
        jobs_unschedulable: Gauge::default(),
        worker_results_refused: Counter::default(),
        queue_wait: exemplar_latency(),
        submit_to_start: exemplar_latency(),
        job_runtime: Family::new_with_constructor(exemplar_runtime),
        placement_decisions: Family::default(),
        prediction_error_ratio: Family::new_with_constructor(ratio_buckets),
        is_leader: Gauge::default(),
        leader_epoch: Gauge::default(),
        leader_transitions: Counter::default(),
        workers: Family::default(),
        etcd_request_duration: Family::new_with_constructor(etcd_latency),
        worker_attaches: Counter::default(),
        api_requests: Family::default(),
        api_refusals: Family::default(),
        model_version: Gauge::default(),
        connections: crate::connections::ConnectionMetrics::register(r),
        workflow_runs: Family::default(),
        workflow_run_duration: Histogram::new(runtime_buckets()),
        workflow_tasks: Family::default(),
        workflow_runs_active: Gauge::default(),
    };
    for outcome in WORKFLOW_RUN_OUTCOMES {
        m.workflow_runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc_by(0);
    }
    for state in WORKFLOW_TASK_STATES {
        m.workflow_tasks
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .inc_by(0);
    }
    r.register(
        "augur_workflow_runs",
        "Workflow runs that ended, by outcome",
        m.workflow_runs.clone(),
    );
    r.register_with_unit(
        "augur_workflow_run_duration",
        "Time from a workflow run's submission to its end",
        Unit::Seconds,
        m.workflow_run_duration.clone(),
    );
    r.register(
        "augur_workflow_tasks",
        "Workflow task instances that reached a terminal state, by state",
        m.workflow_tasks.clone(),
    );
    r.register(
        "augur_workflow_runs_active",
        "Workflow runs not yet ended, driven by this leader (leader only)",
        m.workflow_runs_active.clone(),
    );
    r.register(
        "augur_jobs_submitted",
        "Jobs accepted (durable in etcd)",
        m.jobs_submitted.clone(),
    );
    r.register(
        "augur_jobs_finished",
        "Jobs that reached a terminal state, by outcome",
        m.jobs_finished.clone(),
    );
    r.register(
        "augur_job_retries",
        "Attempts requeued after a failure of the job itself",
        m.job_retries.clone(),
    );
    r.register(
        "augur_attempts_lost",
        "Attempts lost with their worker (lease expired or never delivered)",
        m.attempts_lost.clone(),
    );
    r.register(
        "augur_queue_depth",
        "Jobs waiting to be placed, by priority class (leader only)",
        m.queue_depth.clone(),
    );
    r.register(
        "augur_jobs_running",
        "Jobs assigned to or running on a worker (leader only)",
        m.jobs_running.clone(),
    );
    r.register(
        "augur_jobs_unschedulable",
        "Pending jobs no registered worker could run: too many slots or constraints no worker matches (leader only)",
        m.jobs_unschedulable.clone(),
    );
    r.register(
        "augur_worker_results_refused",
        "Worker results the leader could not read (no or an unknown outcome, or no job named), acknowledged and dropped",
        m.worker_results_refused.clone(),
    );
    r.register_with_unit(
        "augur_job_queue_wait",
        "Time from a job becoming placeable (submission or end of retry backoff) to its dispatch",
        Unit::Seconds,
        m.queue_wait.clone(),
    );
    r.register_with_unit(
        "augur_job_submit_to_start",
        "Time from submission to the start of the job's process, per attempt",
        Unit::Seconds,
        m.submit_to_start.clone(),
    );
    r.register_with_unit(
        "augur_job_runtime",
        "Wall-clock runtime of finished attempts, by outcome",
        Unit::Seconds,
        m.job_runtime.clone(),
    );
    r.register(
        "augur_placement_decisions",
        "Placement decisions, by policy",
        m.placement_decisions.clone(),
    );
    r.register(
        "augur_prediction_error_ratio",
        "Predicted over measured runtime of finished attempts, by policy",
        m.prediction_error_ratio.clone(),
    );
    r.register(
        "augur_leader",
        "1 while this coordinator leads, else 0",
        m.is_leader.clone(),
    );
    r.register(
        "augur_leader_epoch",
        "Fencing epoch of this coordinator's leadership (0 when following)",
        m.leader_epoch.clone(),
    );
    r.register(
        "augur_leader_transitions",
        "Times this coordinator became or stopped being leader",
        m.leader_transitions.clone(),
    );
    r.register(
        "augur_workers",
        "Registered workers by state (leader only)",
        m.workers.clone(),
    );
    r.register_with_unit(
        "augur_etcd_request_duration",
        "etcd request latency, by operation",
        Unit::Seconds,
        m.etcd_request_duration.clone(),
    );
    r.register(
        "augur_worker_attaches",
        "Worker streams attached to this leader",
        m.worker_attaches.clone(),
    );
    r.register(
        "augur_api_requests",
        "API calls served, by operation",
        m.api_requests.clone(),
    );
    r.register(
        "augur_api_refusals",
        "API calls and worker attaches refused, by action and gRPC code (unauthenticated, permission_denied, resource_exhausted, unavailable)",
        m.api_refusals.clone(),
    );
    r.register(
        "augur_model_version",
        "Version of the runtime model the leader places with (0: none yet)",
        m.model_version.clone(),
    );
    m.initialise();
    m
}

fn register_worker(r: &mut Registry) -> WorkerMetrics {
    let m = WorkerMetrics {
        running_attempts: Gauge::default(),
        slots: Gauge::default(),
        result_buffer_depth: Gauge::default(),
        stream_reconnects: Counter::default(),
        attempts_finished: Family::default(),
        attempt_runtime: Family::new_with_constructor(exemplar_runtime),
        stale_assignments_rejected: Counter::default(),
        registrations: Counter::default(),
    };
    r.register(
        "augur_worker_running_attempts",
        "Attempts running on this worker",
        m.running_attempts.clone(),
    );
    r.register(
        "augur_worker_slots",
        "Slots this worker offers",
        m.slots.clone(),
    );
    r.register(
        "augur_worker_result_buffer_depth",
        "Finished results not yet acknowledged by the leader",
        m.result_buffer_depth.clone(),
    );
    r.register(
        "augur_worker_stream_reconnects",
        "Streams opened to a leader after the first",
        m.stream_reconnects.clone(),
    );
    r.register(
        "augur_worker_attempts_finished",
        "Attempts finished on this worker, by outcome",
        m.attempts_finished.clone(),
    );
    r.register_with_unit(
        "augur_worker_attempt_runtime",
        "Runtime of attempts on this worker, by outcome",
        Unit::Seconds,
        m.attempt_runtime.clone(),
    );
    r.register(
        "augur_worker_stale_assignments_rejected",
        "Assignments refused because they came from an older leader epoch",
        m.stale_assignments_rejected.clone(),
    );
    r.register(
        "augur_worker_registrations",
        "Registrations under a new lease",
        m.registrations.clone(),
    );
    for outcome in ATTEMPT_RESULTS {
        let label = OutcomeLabel {
            outcome: outcome.to_string(),
        };
        let _ = m.attempts_finished.get_or_create(&label);
        let _ = m.attempt_runtime.get_or_create(&label);
    }
    m
}

/// Attempt results, the `outcome` label of attempt-level metrics (runtime,
/// attempts finished): how the attempt ended, not what became of the job.
pub const ATTEMPT_RESULTS: [&str; 6] = [
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "start_failed",
    "oom_killed",
];
/// How jobs ended, the `outcome` label of `augur_jobs_finished_total`: the
/// terminal state, except that a job failed by its last attempt's OOM kill
/// counts as `oom_killed` (its state is `failed`).
pub const JOB_OUTCOMES: [&str; 5] = [
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "oom_killed",
];
/// etcd operations timed by coordinators.
pub const ETCD_OPERATIONS: [&str; 5] = ["create", "get", "list", "commit", "load_active"];
/// API operations counted by coordinators.
pub const API_OPERATIONS: [&str; 8] = [
    "submit",
    "get",
    "list",
    "cancel",
    "list_workers",
    "cluster_status",
    "drain",
    "schedule",
];

impl CoordinatorMetrics {
    /// Creates every known labelled series at zero, so the first event after a
    /// start shows up in `rate()` rather than being the series' first sample.
    fn initialise(&self) {
        for outcome in JOB_OUTCOMES {
            let _ = self.jobs_finished.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
        }
        for outcome in ATTEMPT_RESULTS {
            let _ = self.job_runtime.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
        }
        for operation in ETCD_OPERATIONS {
            let _ = self.etcd_request_duration.get_or_create(&OperationLabel {
                operation: operation.to_string(),
            });
        }
        for operation in API_OPERATIONS {
            let _ = self.api_requests.get_or_create(&OperationLabel {
                operation: operation.to_string(),
            });
        }
        for class in [
            PriorityClass::High,
            PriorityClass::Normal,
            PriorityClass::Low,
        ] {
            let _ = self.queue_depth.get_or_create(&PriorityLabel {
                priority_class: class.as_str(),
            });
        }
        for state in ["ready", "disconnected", "draining"] {
            let _ = self.workers.get_or_create(&StateLabel {
                state: state.to_string(),
            });
        }
    }

    /// Leader-only gauges go to zero when this coordinator stops leading, so a
    /// sum across coordinators never counts a former leader's stale view.
    pub fn demoted(&self) {
        self.is_leader.set(0);
        self.leader_epoch.set(0);
        self.jobs_running.set(0);
        self.jobs_unschedulable.set(0);
        self.workflow_runs_active.set(0);
        for class in [
            PriorityClass::High,
            PriorityClass::Normal,
            PriorityClass::Low,
        ] {
            self.queue_depth
                .get_or_create(&PriorityLabel {
                    priority_class: class.as_str(),
                })
                .set(0);
        }
        for state in ["ready", "disconnected", "draining"] {
            self.workers
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(0);
        }
    }

    /// Records the duration of one etcd request.
    pub fn etcd(&self, operation: &str, seconds: f64) {
        self.etcd_request_duration
            .get_or_create(&OperationLabel {
                operation: operation.to_string(),
            })
            .observe(seconds);
    }

    pub fn api(&self, operation: &str) {
        self.api_requests
            .get_or_create(&OperationLabel {
                operation: operation.to_string(),
            })
            .inc();
    }
}

/// An exemplar for a trace id, if there is one.
pub fn exemplar(trace_id: Option<String>) -> Option<TraceExemplar> {
    trace_id
        .filter(|t| !t.is_empty())
        .map(|trace_id| TraceExemplar { trace_id })
}
