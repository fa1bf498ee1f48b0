//! `/`: the leader, the workers, the queue, and what finished lately.

use askama::Template;
use augur_coordinator::services::request;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{html, job_state, status_page, time, Chrome};
use crate::session::{current, with_cookie};
use crate::Console;

pub(crate) struct WorkerRow {
    pub id: String,
    pub state: String,
    pub slots: u32,
    pub running: u32,
    pub labels: String,
}

pub(crate) struct Failure {
    pub id: String,
    pub name: String,
    pub state: String,
    pub finished: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    leader: String,
    leader_address: String,
    epoch: i64,
    answered_by: String,
    pending: u64,
    running: u64,
    /// Queued jobs by priority class, high first (the leader's view).
    queued: Vec<(String, u64)>,
    workers: Vec<WorkerRow>,
    finished_5m: usize,
    failed_5m: usize,
    finished_1h: usize,
    failed_1h: usize,
    failures: Vec<Failure>,
    capped: bool,
    scanned: usize,
}

/// Newest jobs read to count what finished lately (one page of the API).
const RECENT: u32 = 1000;

pub(crate) fn worker_state(state: i32) -> String {
    pb::WorkerState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("WORKER_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn labels(map: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(", ")
}

pub(crate) async fn page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let viewer = match current(&console, &headers, "/") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let token = viewer.token.as_deref();
    let jobs = console.services.jobs();
    let status = match jobs
        .cluster_status(request(token, pb::ClusterStatusRequest {}))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return status_page(&s),
    };
    let recent = match jobs
        .list_jobs(request(
            token,
            pb::ListJobsRequest {
                page_size: RECENT,
                newest_first: true,
                ..Default::default()
            },
        ))
        .await
    {
        Ok(r) => r.into_inner().jobs,
        Err(s) => return status_page(&s),
    };
    let now = augur_core::now_ms();
    let finished = |within: i64| {
        recent
            .iter()
            .filter(move |j| j.finished_at_ms > 0 && now - j.finished_at_ms <= within)
    };
    let bad = |j: &&pb::Job| {
        let s = job_state(j.state);
        s == "failed" || s == "timed_out"
    };
    let mut failures: Vec<Failure> = finished(3_600_000)
        .filter(bad)
        .map(|j| Failure {
            id: j.id.clone(),
            name: j.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            state: job_state(j.state),
            finished: time(j.finished_at_ms),
            message: j.message.clone(),
        })
        .collect();
    failures.truncate(10);
    let page = Overview {
        chrome: viewer.chrome(&console, "Overview"),
        leader: status.leader,
        leader_address: status.leader_address,
        epoch: status.epoch,
        answered_by: status.answered_by,
        pending: status.pending_jobs,
        running: status.running_jobs,
        queued: ["high", "normal", "low"]
            .iter()
            .filter_map(|c| status.queued_by_class.get(*c).map(|n| (c.to_string(), *n)))
            .collect(),
        workers: status
            .workers
            .iter()
            .map(|w| WorkerRow {
                id: w.id.clone(),
                state: worker_state(w.state),
                slots: w.slots,
                running: w.running,
                labels: labels(&w.labels),
            })
            .collect(),
        finished_5m: finished(300_000).count(),
        failed_5m: finished(300_000).filter(bad).count(),
        finished_1h: finished(3_600_000).count(),
        failed_1h: finished(3_600_000).filter(bad).count(),
        failures,
        capped: recent.len() as u32 >= RECENT,
        scanned: recent.len(),
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}
