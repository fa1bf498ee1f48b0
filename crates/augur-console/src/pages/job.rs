//! `/jobs/{id}`: the spec (secret-looking env values masked), where the job
//! is, its timeline, its output tails, its trace, and Cancel for those who
//! may.

use std::collections::BTreeMap;

use askama::Template;
use augur_coordinator::services::request;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::{html, job_state, span, status_page, time, Chrome};
use crate::session::{acting, current, with_cookie};
use crate::Console;

/// A word as a shell would need it written (single quotes when it holds
/// anything but plain characters).
pub(crate) fn quoted(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Env values of keys containing these are shown masked.
const SECRET_WORDS: [&str; 4] = ["SECRET", "TOKEN", "PASSWORD", "KEY"];

pub(crate) fn masked(key: &str, value: &str) -> String {
    let upper = key.to_ascii_uppercase();
    if SECRET_WORDS.iter().any(|w| upper.contains(w)) {
        "••••••".to_string()
    } else {
        value.to_string()
    }
}

pub(crate) struct Phase {
    pub class: String,
    pub label: String,
    pub x: String,
    pub width: String,
}

/// The placement decision as the page shows it.
pub(crate) struct PlacementView {
    pub policy: String,
    pub worker: String,
    pub at: String,
    pub fallback: String,
    pub predicted: String,
    pub source: String,
    pub model_version: u64,
    pub actual: String,
    pub ratio: String,
    pub score_meaning: String,
    pub candidates: Vec<(String, String)>,
}

fn placement_view(job: &pb::Job) -> Option<PlacementView> {
    let p = job.placement.as_ref()?;
    let actual_ms = (job.started_at_ms > 0 && job.finished_at_ms > 0)
        .then(|| job.finished_at_ms - job.started_at_ms);
    let ratio = match (p.predicted_seconds, actual_ms) {
        (Some(pred), Some(ms)) if ms > 0 => format!("{:.2}", pred / (ms as f64 / 1000.0)),
        _ => String::new(),
    };
    Some(PlacementView {
        policy: p.policy.clone(),
        worker: p.worker.clone(),
        at: time(p.at_ms),
        fallback: p.fallback.clone(),
        predicted: p
            .predicted_seconds
            .map(|s| span((s * 1000.0).round() as i64))
            .unwrap_or_else(|| "none".into()),
        source: p.source.clone(),
        model_version: p.model_version,
        actual: actual_ms.map(span).unwrap_or_else(|| "not finished".into()),
        ratio,
        score_meaning: p.score_meaning.clone(),
        candidates: p
            .candidates
            .iter()
            .map(|c| (c.worker.clone(), format!("{:.3}", c.score)))
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    placement: Option<PlacementView>,
    /// The workflow run this job is a task of, if any.
    run: String,
    chrome: Chrome,
    id: String,
    name: String,
    state: String,
    cancel_requested: bool,
    attempts: u32,
    max_attempts: u32,
    message: String,
    may_cancel: bool,
    /// Ended, not a workflow task nor a schedule's tick: it can run again.
    may_retry: bool,
    phases: Vec<Phase>,
    timeline_label: String,
    submitted: String,
    started: String,
    finished: String,
    worker: String,
    exit_code: String,
    owner: String,
    trace_id: String,
    trace_url: String,
    command: String,
    working_dir: String,
    priority: i32,
    timeout: String,
    resources: String,
    labels: String,
    constraints: String,
    env: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    stdout: String,
    stderr: String,
}

/// The job's phases from its record: queued (submission to start), running
/// (start to end, or to now), on a bar 1000 units wide.
fn phases(job: &pb::Job, now: i64) -> (Vec<Phase>, String) {
    let state = job_state(job.state);
    let start = job.submitted_at_ms;
    let end = if job.finished_at_ms > 0 {
        job.finished_at_ms
    } else {
        now
    };
    let total = (end - start).max(1) as f64;
    let mut out = Vec::new();
    let mut label = Vec::new();
    let mut bar = |from: i64, to: i64, class: &str, name: &str| {
        let x = ((from - start) as f64 / total * 1000.0).clamp(0.0, 1000.0);
        let w = ((to - from).max(0) as f64 / total * 1000.0).clamp(2.0, 1000.0);
        let text = format!("{name} {}", span(to - from));
        label.push(text.clone());
        out.push(Phase {
            class: class.to_string(),
            label: text,
            x: format!("{x:.1}"),
            width: format!("{w:.1}"),
        });
    };
    let started = (job.started_at_ms > 0).then_some(job.started_at_ms);
    match started {
        Some(s) => {
            bar(start, s, "queued", "queued");
            let class = match state.as_str() {
                "succeeded" => "done",
                "failed" | "timed_out" | "cancelled" => "ended-bad",
                _ => "running",
            };
            bar(
                s,
                end,
                class,
                if job.finished_at_ms > 0 {
                    &state
                } else {
                    "running"
                },
            );
        }
        None => bar(start, end, "queued", "queued"),
    }
    (out, label.join(", then "))
}

pub(crate) async fn page(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let viewer = match current(&console, &headers, &format!("/jobs/{id}")) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let job = match console
        .services
        .jobs()
        .get_job(request(
            viewer.token.as_deref(),
            pb::GetJobRequest { job_id: id.clone() },
        ))
        .await
    {
        Ok(j) => j.into_inner(),
        Err(s) => return status_page(&s),
    };
    let spec = job.spec.clone().unwrap_or_default();
    let state = job_state(job.state);
    let terminal = matches!(
        state.as_str(),
        "succeeded" | "failed" | "timed_out" | "cancelled"
    );
    let (phases, timeline_label) = phases(&job, augur_core::now_ms());
    let sorted = |m: &std::collections::HashMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let resources = spec
        .resources
        .map(|r| {
            format!(
                "{} slot(s), {} mCPU, {} bytes",
                r.slots.max(1),
                r.cpu_millis,
                r.memory_bytes
            )
        })
        .unwrap_or_default();
    let trace_url = match (&console.options.trace_url_template, job.trace_id.is_empty()) {
        (Some(t), false) => t.replace("{trace_id}", &job.trace_id),
        _ => String::new(),
    };
    let mut command = vec![quoted(&spec.command)];
    command.extend(spec.args.iter().map(|a| quoted(a)));
    let dash = |s: String| if s.is_empty() { "—".to_string() } else { s };
    let run = spec
        .labels
        .get("augur.workflow")
        .cloned()
        .unwrap_or_default();
    let scheduled = spec.labels.contains_key("augur.schedule");
    let may_retry = viewer.may_operate() && terminal && run.is_empty() && !scheduled;
    let page = JobPage {
        placement: placement_view(&job),
        chrome: viewer.chrome(&console, format!("Job {id}")),
        name: spec.name.clone(),
        cancel_requested: job.cancel_requested && !terminal,
        run,
        attempts: job.attempts,
        max_attempts: spec.retry.as_ref().map_or(1, |r| r.max_attempts.max(1)),
        message: job.message.clone(),
        may_cancel: viewer.may_operate() && !terminal && !job.cancel_requested,
        may_retry,
        phases,
        timeline_label,
        submitted: time(job.submitted_at_ms),
        started: time(job.started_at_ms),
        finished: time(job.finished_at_ms),
        worker: job.worker_id.clone(),
        exit_code: job.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        owner: dash(job.owner.clone()),
        trace_id: job.trace_id.clone(),
        trace_url,
        command: command.join(" "),
        working_dir: dash(spec.working_dir.clone()),
        priority: spec.priority,
        timeout: dash(spec.timeout.clone()),
        resources,
        labels: dash(super::overview::labels(&spec.labels)),
        constraints: dash(super::overview::labels(&spec.constraints)),
        env: sorted(&spec.env)
            .into_iter()
            .map(|(k, v)| {
                let shown = masked(&k, &v);
                (k, shown)
            })
            .collect(),
        outputs: sorted(&job.outputs).into_iter().collect(),
        stdout: String::from_utf8_lossy(&job.stdout_tail).into_owned(),
        stderr: String::from_utf8_lossy(&job.stderr_tail).into_owned(),
        state,
        id,
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// Cancels through the API as the viewer (the API decides who may).
pub(crate) async fn cancel(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = match acting(&console, &headers, &format!("/jobs/{id}"), &form.csrf) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match console
        .services
        .jobs()
        .cancel_job(request(
            viewer.token.as_deref(),
            pb::CancelJobRequest { job_id: id.clone() },
        ))
        .await
    {
        Ok(_) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(s) => status_page(&s),
    }
}

/// Runs an ended job again: a new job with the same spec (no idempotency
/// key), submitted through the API as the viewer; shows the new job.
pub(crate) async fn retry(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = match acting(&console, &headers, &format!("/jobs/{id}"), &form.csrf) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let token = viewer.token.as_deref();
    let jobs = console.services.jobs();
    let job = match jobs
        .get_job(request(token, pb::GetJobRequest { job_id: id.clone() }))
        .await
    {
        Ok(j) => j.into_inner(),
        Err(s) => return status_page(&s),
    };
    let mut spec = job.spec.unwrap_or_default();
    spec.idempotency_key.clear();
    match jobs
        .submit_job(request(token, pb::SubmitJobRequest { spec: Some(spec) }))
        .await
    {
        Ok(r) => Redirect::to(&format!("/jobs/{}", r.into_inner().job_id)).into_response(),
        Err(s) => status_page(&s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_as_a_shell_would_read_them() {
        assert_eq!(quoted("sleep"), "sleep");
        assert_eq!(quoted("sleep 4; echo done"), "'sleep 4; echo done'");
        assert_eq!(quoted("it's"), "'it'\\''s'");
        assert_eq!(quoted(""), "''");
    }

    #[test]
    fn secret_looking_env_values_are_masked() {
        assert_eq!(masked("API_TOKEN", "abc"), "••••••");
        assert_eq!(masked("db_password", "abc"), "••••••");
        assert_eq!(masked("AWS_SECRET_ACCESS_KEY", "abc"), "••••••");
        assert_eq!(masked("PATH", "/bin"), "/bin");
    }

    #[test]
    fn the_placement_shows_prediction_against_actual() {
        let job = pb::Job {
            started_at_ms: 1_000,
            finished_at_ms: 3_000,
            placement: Some(pb::Placement {
                policy: "predictive".into(),
                worker: "w2".into(),
                predicted_seconds: Some(1.0),
                source: "model".into(),
                candidates: vec![pb::PlacementCandidate {
                    worker: "w2".into(),
                    score: 1.25,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = placement_view(&job).expect("placed");
        assert_eq!(v.ratio, "0.50");
        assert_eq!(v.actual, "2.000 s");
        assert_eq!(v.candidates, vec![("w2".to_string(), "1.250".to_string())]);
        assert!(placement_view(&pb::Job::default()).is_none());
    }

    #[test]
    fn the_timeline_splits_queue_and_run() {
        let job = pb::Job {
            state: pb::JobState::Succeeded as i32,
            submitted_at_ms: 1_000,
            started_at_ms: 1_250,
            finished_at_ms: 2_000,
            ..Default::default()
        };
        let (p, label) = phases(&job, 5_000);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].class, "queued");
        assert_eq!(p[0].width, "250.0");
        assert_eq!(p[1].class, "done");
        assert!(label.contains("queued 0.250 s"), "{label}");
    }
}
