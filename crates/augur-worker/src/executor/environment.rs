//! The environment a job process starts with.
//!
//! A job never inherits the worker's environment wholesale: the worker's may
//! hold its secrets (`AUGUR_TOKEN`, `AUGUR_JOIN_TOKEN`, etcd credentials, TLS
//! key paths, cloud credentials). A job starts from an empty environment and
//! gets, in this order, each later layer overriding the earlier ones:
//!
//! 1. a **baseline**: `PATH`, `LANG`, `LC_ALL` and `TZ` copied from the worker
//!    if set (`PATH` defaults to [`DEFAULT_PATH`]); `HOME`, `USER` and
//!    `LOGNAME` of the `--run-as` user, or the worker's own values without it;
//! 2. the job spec's `env` (which may not set `AUGUR_*`, `TRACEPARENT` or
//!    `TRACESTATE`; validation refuses those);
//! 3. `AUGUR_JOB_ID` and `AUGUR_ATTEMPT`;
//! 4. the variables the worker adds itself ([`worker_variables`], passed as
//!    [`super::ExecRequest::extra_env`]:
//!    `TRACEPARENT`, `TRACESTATE`, `AUGUR_SCHEDULED_AT_MS`, ...).
//!
//! Nothing else of the worker's environment reaches the job.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use super::run_as::RunAs;
use super::ExecRequest;

/// Variables copied from the worker's environment when set.
pub const PASSED_FROM_WORKER: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];
/// Identity variables: the `--run-as` user's, or else copied from the worker.
pub const IDENTITY: &[&str] = &["HOME", "USER", "LOGNAME"];
/// `PATH` of a job when the worker has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The worker's `PATH`, or [`DEFAULT_PATH`]: where bare command names are
/// looked up when an allowlist is configured.
pub fn worker_path<I>(worker_env: I) -> OsString
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    worker_env
        .into_iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value)
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// The full environment of one attempt's process, from the worker's own
/// environment `worker_env` (normally `std::env::vars_os()`).
pub fn job_environment<I>(
    worker_env: I,
    run_as: Option<&RunAs>,
    req: &ExecRequest,
) -> BTreeMap<OsString, OsString>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut env = BTreeMap::new();
    let identity: &[&str] = if run_as.is_some() { &[] } else { IDENTITY };
    for (key, value) in worker_env {
        if PASSED_FROM_WORKER
            .iter()
            .chain(identity)
            .any(|name| OsStr::new(name) == key)
        {
            env.insert(key, value);
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    if let Some(user) = run_as {
        env.insert("HOME".into(), user.home.clone().into_os_string());
        env.insert("USER".into(), user.name.clone().into());
        env.insert("LOGNAME".into(), user.name.clone().into());
    }
    for (key, value) in &req.spec.env {
        env.insert(key.into(), value.into());
    }
    env.insert("AUGUR_JOB_ID".into(), req.job_id.to_string().into());
    env.insert("AUGUR_ATTEMPT".into(), req.attempt.to_string().into());
    if let Some(dir) = &req.outputs_dir {
        env.insert("AUGUR_OUTPUTS".into(), dir.clone().into_os_string());
    }
    for (key, value) in &req.extra_env {
        env.insert(key.into(), value.into());
    }
    env
}

/// The variables the worker adds itself (layer 4): the trace context of the
/// attempt's `job.execute` span (`TRACEPARENT`, `TRACESTATE`), the worker's
/// declared speed (`AUGUR_WORKER_SPEED`, so a simulated workload on one
/// machine can scale its duration by it) and, for a scheduled job, which
/// schedule and tick it runs for (`AUGUR_SCHEDULE`, `AUGUR_SCHEDULED_AT_MS`).
/// The one place besides [`job_environment`] that decides a job's variables.
pub fn worker_variables(
    trace_carrier: &BTreeMap<String, String>,
    worker_labels: &BTreeMap<String, String>,
    spec: &augur_core::JobSpec,
) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for (key, var) in [("traceparent", "TRACEPARENT"), ("tracestate", "TRACESTATE")] {
        if let Some(value) = trace_carrier.get(key) {
            vars.push((var.to_string(), value.clone()));
        }
    }
    if let Some(speed) = worker_labels.get("speed") {
        vars.push(("AUGUR_WORKER_SPEED".to_string(), speed.clone()));
    }
    for (label, var) in [
        ("augur.schedule", "AUGUR_SCHEDULE"),
        ("augur.schedule_tick_ms", "AUGUR_SCHEDULED_AT_MS"),
        ("augur.workflow", "AUGUR_WORKFLOW_ID"),
        ("augur.workflow_task", "AUGUR_TASK"),
        ("augur.workflow_item", "AUGUR_TASK_ITEM"),
        ("augur.workflow_item_index", "AUGUR_TASK_ITEM_INDEX"),
    ] {
        if let Some(value) = spec.labels.get(label) {
            vars.push((var.to_string(), value.clone()));
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::{JobId, JobSpecInput};

    fn worker_env() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/worker/bin:/usr/bin"),
            ("HOME", "/root"),
            ("USER", "root"),
            ("LANG", "C.UTF-8"),
            ("AUGUR_TOKEN", "tok-secret"),
            ("AUGUR_JOIN_TOKEN", "join-secret"),
            ("AUGUR_ADMIN_TOKEN", "admin-secret"),
            ("ETCDCTL_PASSWORD", "etcd-secret"),
            ("ETCD_PASSWORD", "etcd-secret"),
            ("AUGUR_TLS_KEY", "/etc/augur/key.pem"),
            ("AWS_SECRET_ACCESS_KEY", "cloud-secret"),
        ]
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
    }

    fn request(env: &[(&str, &str)], extra: &[(&str, &str)]) -> ExecRequest {
        let spec = JobSpecInput {
            command: "env".into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
        .validate()
        .expect("a valid spec");
        ExecRequest {
            job_id: JobId::generate(),
            attempt: 2,
            spec,
            extra_env: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            outputs_dir: None,
        }
    }

    fn get<'a>(env: &'a BTreeMap<OsString, OsString>, key: &str) -> Option<&'a str> {
        env.get(OsStr::new(key)).and_then(|v| v.to_str())
    }

    #[test]
    fn no_worker_secret_passes() {
        let req = request(&[], &[]);
        let env = job_environment(worker_env(), None, &req);
        for (key, value) in &env {
            let (key, value) = (key.to_string_lossy(), value.to_string_lossy());
            assert!(
                !key.starts_with("AUGUR_") || key == "AUGUR_JOB_ID" || key == "AUGUR_ATTEMPT",
                "{key} leaked"
            );
            assert!(!key.starts_with("ETCD"), "{key} leaked");
            assert!(!value.contains("secret"), "{key}={value} leaked");
            assert!(!value.contains("key.pem"), "{key}={value} leaked");
        }
        assert_eq!(get(&env, "PATH"), Some("/worker/bin:/usr/bin"));
        assert_eq!(get(&env, "LANG"), Some("C.UTF-8"));
        assert_eq!(get(&env, "HOME"), Some("/root"));
        assert_eq!(get(&env, "AUGUR_ATTEMPT"), Some("2"));
        assert_eq!(
            get(&env, "AUGUR_JOB_ID"),
            Some(req.job_id.to_string().as_str())
        );
        // Exactly the baseline plus the two job variables.
        let keys: Vec<String> = env
            .keys()
            .map(|k| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "AUGUR_ATTEMPT",
                "AUGUR_JOB_ID",
                "HOME",
                "LANG",
                "PATH",
                "USER"
            ]
        );
    }

    #[test]
    fn worker_variables_carry_the_trace_the_speed_and_the_schedule() {
        let mut spec = JobSpecInput {
            command: "true".into(),
            ..Default::default()
        }
        .validate()
        .expect("valid spec");
        spec.labels
            .insert("augur.schedule".into(), "nightly".into());
        spec.labels
            .insert("augur.schedule_tick_ms".into(), "1700000000000".into());
        let carrier = BTreeMap::from([("traceparent".to_string(), "00-aa-bb-01".to_string())]);
        let labels = BTreeMap::from([("speed".to_string(), "2".to_string())]);
        let vars: BTreeMap<String, String> = worker_variables(&carrier, &labels, &spec)
            .into_iter()
            .collect();
        assert_eq!(
            vars.get("TRACEPARENT").map(String::as_str),
            Some("00-aa-bb-01")
        );
        assert_eq!(
            vars.get("AUGUR_WORKER_SPEED").map(String::as_str),
            Some("2")
        );
        assert_eq!(
            vars.get("AUGUR_SCHEDULE").map(String::as_str),
            Some("nightly")
        );
        assert_eq!(
            vars.get("AUGUR_SCHEDULED_AT_MS").map(String::as_str),
            Some("1700000000000")
        );
        assert!(!vars.contains_key("TRACESTATE"));
        // A workflow task's job carries its run, task and item.
        spec.labels.insert("augur.workflow".into(), "wf-1".into());
        spec.labels
            .insert("augur.workflow_task".into(), "transform".into());
        spec.labels
            .insert("augur.workflow_item".into(), "a.csv".into());
        spec.labels
            .insert("augur.workflow_item_index".into(), "3".into());
        let vars: BTreeMap<String, String> = worker_variables(&carrier, &labels, &spec)
            .into_iter()
            .collect();
        for (var, value) in [
            ("AUGUR_WORKFLOW_ID", "wf-1"),
            ("AUGUR_TASK", "transform"),
            ("AUGUR_TASK_ITEM", "a.csv"),
            ("AUGUR_TASK_ITEM_INDEX", "3"),
        ] {
            assert_eq!(vars.get(var).map(String::as_str), Some(value), "{var}");
        }
        let plain = JobSpecInput {
            command: "true".into(),
            ..Default::default()
        }
        .validate()
        .expect("valid spec");
        assert!(worker_variables(&BTreeMap::new(), &BTreeMap::new(), &plain).is_empty());
    }

    #[test]
    fn job_env_wins_over_the_baseline_and_extra_env_wins_last() {
        let req = request(
            &[
                ("PATH", "/job/bin"),
                ("LANG", "de_DE.UTF-8"),
                ("GREETING", "hi"),
            ],
            &[
                ("TRACEPARENT", "00-aa-bb-01"),
                ("LANG", "from-worker-extra"),
            ],
        );
        let env = job_environment(worker_env(), None, &req);
        assert_eq!(get(&env, "PATH"), Some("/job/bin"));
        assert_eq!(get(&env, "GREETING"), Some("hi"));
        assert_eq!(get(&env, "TRACEPARENT"), Some("00-aa-bb-01"));
        assert_eq!(get(&env, "LANG"), Some("from-worker-extra"));
    }

    #[test]
    fn run_as_sets_the_identity_and_path_has_a_default() {
        // The worker's own user always resolves, root or not.
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        let user = RunAs::resolve(&euid.to_string()).expect("the current user resolves");
        let worker: Vec<(OsString, OsString)> = worker_env()
            .into_iter()
            .filter(|(k, _)| k != "PATH")
            .collect();
        let env = job_environment(worker.clone(), Some(&user), &request(&[], &[]));
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&env, "USER"), Some(user.name.as_str()));
        assert_eq!(get(&env, "LOGNAME"), Some(user.name.as_str()));
        assert_eq!(
            env.get(OsStr::new("HOME")),
            Some(&user.home.clone().into_os_string())
        );
        assert_eq!(worker_path(worker), OsString::from(DEFAULT_PATH));
        assert_eq!(
            worker_path(worker_env()),
            OsString::from("/worker/bin:/usr/bin")
        );
    }
}
