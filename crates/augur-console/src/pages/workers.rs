//! `/workers`: every registered worker; `/workers/{id}`: one worker, its
//! newest jobs, and Drain / Undrain for admins (the API checks again).

use askama::Template;
use augur_coordinator::services::request;
use augur_core::auth::Action;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::overview::{labels, worker_state};
use super::{encode, error_page, html, job_state, status_page, time, Chrome};
use crate::session::{acting, current, with_cookie};
use crate::Console;

/// Jobs a worker's page lists.
const JOBS: u32 = 20;

pub(crate) struct WorkerRow {
    pub id: String,
    pub state: String,
    pub slots: u32,
    pub running: u32,
    pub labels: String,
    pub capacity: String,
    pub version: String,
    pub executor: String,
    pub registered: String,
}

/// Bytes as `512 MiB`, `3.2 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn capacity(c: Option<&pb::Capacity>) -> String {
    match c {
        None => "not reported".into(),
        Some(c) => format!(
            "{:.1} CPU, {}",
            c.cpu_millis as f64 / 1000.0,
            bytes(c.memory_bytes)
        ),
    }
}

fn row(w: &pb::Worker) -> WorkerRow {
    WorkerRow {
        id: w.id.clone(),
        state: worker_state(w.state),
        slots: w.slots,
        running: w.running,
        labels: labels(&w.labels),
        capacity: capacity(w.capacity.as_ref()),
        version: w.version.clone(),
        executor: w.executor.clone(),
        registered: time(w.registered_at_ms),
    }
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    chrome: Chrome,
    workers: Vec<WorkerRow>,
}

pub(crate) struct JobRow {
    pub id: String,
    pub name: String,
    pub state: String,
    pub attempts: u32,
    pub submitted: String,
    pub finished: String,
}

#[derive(Template)]
#[template(path = "worker.html")]
struct WorkerPage {
    chrome: Chrome,
    worker: WorkerRow,
    draining: bool,
    may_drain: bool,
    jobs: Vec<JobRow>,
    more: bool,
    jobs_url: String,
    page_size: u32,
}

async fn list(console: &Console, token: Option<&str>) -> Result<Vec<pb::Worker>, tonic::Status> {
    let mut workers = console
        .services
        .jobs()
        .list_workers(request(token, pb::ListWorkersRequest {}))
        .await?
        .into_inner()
        .workers;
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}

pub(crate) async fn page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let viewer = match current(&console, &headers, "/workers") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let workers = match list(&console, viewer.token.as_deref()).await {
        Ok(w) => w,
        Err(s) => return status_page(&s),
    };
    let page = WorkersPage {
        chrome: viewer.chrome(&console, "Workers"),
        workers: workers.iter().map(row).collect(),
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}

pub(crate) async fn worker(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let viewer = match current(&console, &headers, &format!("/workers/{id}")) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let token = viewer.token.as_deref();
    let workers = match list(&console, token).await {
        Ok(w) => w,
        Err(s) => return status_page(&s),
    };
    let Some(w) = workers.iter().find(|w| w.id == id) else {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("No worker {id:?} is registered."),
        );
    };
    let answer = console
        .services
        .jobs()
        .list_jobs(request(
            token,
            pb::ListJobsRequest {
                page_size: JOBS,
                newest_first: true,
                worker_id: id.clone(),
                ..Default::default()
            },
        ))
        .await;
    let answer = match answer {
        Ok(a) => a.into_inner(),
        Err(s) => return status_page(&s),
    };
    let jobs = answer
        .jobs
        .iter()
        .map(|j| JobRow {
            id: j.id.clone(),
            name: j.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            state: job_state(j.state),
            attempts: j.attempts,
            submitted: time(j.submitted_at_ms),
            finished: time(j.finished_at_ms),
        })
        .collect();
    let page = WorkerPage {
        chrome: viewer.chrome(&console, format!("Worker {id}")),
        draining: w.state == pb::WorkerState::Draining as i32,
        may_drain: viewer.identity.role.allows(Action::Operate),
        worker: row(w),
        jobs,
        more: !answer.next_page_token.is_empty(),
        jobs_url: format!("/jobs?worker={}", encode(&id)),
        page_size: JOBS,
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}

#[derive(Deserialize)]
pub(crate) struct DrainForm {
    #[serde(default)]
    csrf: String,
    /// `true`: undrain (make the worker eligible for new work again).
    #[serde(default)]
    undrain: bool,
}

/// Drains or undrains through the API as the viewer (admins only).
pub(crate) async fn drain(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DrainForm>,
) -> Response {
    let viewer = match acting(&console, &headers, &format!("/workers/{id}"), &form.csrf) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let answer = console
        .services
        .jobs()
        .drain_worker(request(
            viewer.token.as_deref(),
            pb::DrainWorkerRequest {
                worker_id: id.clone(),
                cancel: form.undrain,
            },
        ))
        .await;
    match answer {
        Ok(_) => Redirect::to(&format!("/workers/{}", encode(&id))).into_response(),
        Err(s) => status_page(&s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_capacity_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 + 300 * 1024 * 1024), "3.3 GiB");
        assert_eq!(bytes(200 * 1024 * 1024), "200 MiB");
        assert_eq!(capacity(None), "not reported");
        let c = pb::Capacity {
            cpu_millis: 4000,
            memory_bytes: 8 * 1024 * 1024 * 1024,
        };
        assert_eq!(capacity(Some(&c)), "4.0 CPU, 8.0 GiB");
    }
}
