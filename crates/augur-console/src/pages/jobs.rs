//! `/jobs`: newest first, filtered, a page at a time (a cursor, never every
//! job); the first page refreshes its rows every 2 s (`/jobs/rows`).

use askama::Template;
use augur_coordinator::services::request;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{encode, html, job_state, status_page, time, Chrome};
use crate::session::{current, with_cookie};
use crate::Console;

const PAGE: u32 = 50;
/// The `since` choices and their length in ms.
pub(crate) const SINCE: [(&str, i64); 4] = [
    ("5m", 300_000),
    ("1h", 3_600_000),
    ("24h", 86_400_000),
    ("7d", 7 * 86_400_000),
];
const STATES: [&str; 7] = [
    "pending",
    "assigned",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
];

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Filter {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub worker: String,
    /// Submitted within this long before now: `5m`, `1h`, `24h`, `7d`.
    #[serde(default)]
    pub since: String,
    /// The cursor: continue after this job.
    #[serde(default)]
    pub after: String,
}

impl Filter {
    fn query(&self, after: &str) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("state", &self.state),
            ("name", &self.name),
            ("owner", &self.owner),
            ("worker", &self.worker),
            ("since", &self.since),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        if !after.is_empty() {
            parts.push(format!("after={}", encode(after)));
        }
        parts.join("&")
    }
}

pub(crate) struct Row {
    pub id: String,
    pub name: String,
    pub state: String,
    pub attempts: u32,
    pub worker: String,
    pub owner: String,
    pub submitted: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    states: Vec<String>,
    sinces: Vec<String>,
    filter: Filter,
    jobs: Vec<Row>,
    next: String,
    live: bool,
    rows_url: String,
    page_size: u32,
}

#[derive(Template)]
#[template(path = "job_rows.html")]
struct Rows {
    jobs: Vec<Row>,
}

async fn fetch(
    console: &Console,
    token: Option<&str>,
    filter: &Filter,
) -> Result<(Vec<Row>, String), tonic::Status> {
    let named =
        pb::JobState::from_str_name(&format!("JOB_STATE_{}", filter.state.to_ascii_uppercase()));
    let states = match named {
        Some(s) if STATES.contains(&filter.state.as_str()) => vec![s as i32],
        _ if filter.state.is_empty() => Vec::new(),
        _ => {
            return Err(tonic::Status::invalid_argument(format!(
                "state: {:?} is not a job state",
                filter.state
            )))
        }
    };
    let submitted_after_ms = match SINCE.iter().find(|(k, _)| *k == filter.since) {
        Some((_, ms)) => augur_core::now_ms() - ms,
        None if filter.since.is_empty() => 0,
        None => {
            return Err(tonic::Status::invalid_argument(format!(
                "since: {:?} is not one of 5m, 1h, 24h, 7d",
                filter.since
            )))
        }
    };
    let answer = console
        .services
        .jobs()
        .list_jobs(request(
            token,
            pb::ListJobsRequest {
                states,
                page_size: PAGE,
                page_token: filter.after.clone(),
                newest_first: true,
                name_contains: filter.name.clone(),
                owner: filter.owner.clone(),
                worker_id: filter.worker.clone(),
                submitted_after_ms,
                submitted_before_ms: 0,
            },
        ))
        .await?
        .into_inner();
    let rows = answer
        .jobs
        .iter()
        .map(|j| Row {
            id: j.id.clone(),
            name: j.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            state: job_state(j.state),
            attempts: j.attempts,
            worker: j.worker_id.clone(),
            owner: j.owner.clone(),
            submitted: time(j.submitted_at_ms),
        })
        .collect();
    Ok((rows, answer.next_page_token))
}

pub(crate) async fn page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let path = format!("/jobs?{}", filter.query(&filter.after));
    let viewer = match current(&console, &headers, &path) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let (jobs, next) = match fetch(&console, viewer.token.as_deref(), &filter).await {
        Ok(x) => x,
        Err(s) => return status_page(&s),
    };
    let page = JobsPage {
        chrome: viewer.chrome(&console, "Jobs"),
        states: STATES.iter().map(|s| s.to_string()).collect(),
        sinces: SINCE.iter().map(|(k, _)| k.to_string()).collect(),
        next: if next.is_empty() {
            String::new()
        } else {
            format!("/jobs?{}", filter.query(&next))
        },
        live: filter.after.is_empty(),
        rows_url: format!("/jobs/rows?{}", filter.query("")),
        filter,
        jobs,
        page_size: PAGE,
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}

/// The first page's rows alone, for live updates.
pub(crate) async fn rows(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let viewer = match current(&console, &headers, "/jobs") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match fetch(&console, viewer.token.as_deref(), &filter).await {
        Ok((jobs, _)) => html(StatusCode::OK, Rows { jobs }.render()),
        Err(s) => status_page(&s),
    }
}
