//! `/workflows`: workflow runs, newest first, filtered by state.

use askama::Template;
use augur_coordinator::services::request;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::encode;
use super::workflow::counts_text;
use super::{html, span, status_page, time, Chrome};
use crate::session::{current, with_cookie};
use crate::Console;

/// Runs a page shows (the API's default page).
const LIMIT: u32 = 100;
/// Run states, as the API names them.
pub(crate) const RUN_STATES: [&str; 5] =
    ["running", "succeeded", "failed", "cancelled", "timed_out"];

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Filter {
    #[serde(default)]
    pub state: String,
}

pub(crate) struct RunRow {
    pub id: String,
    pub name: String,
    pub state: String,
    pub counts: String,
    pub submitted: String,
    pub finished: String,
    pub took: String,
    pub owner: String,
}

#[derive(Template)]
#[template(path = "workflows.html")]
struct WorkflowsPage {
    chrome: Chrome,
    states: Vec<String>,
    filter: Filter,
    runs: Vec<RunRow>,
    limit: u32,
}

pub(crate) fn run_row(run: &pb::WorkflowRun) -> RunRow {
    RunRow {
        id: run.id.clone(),
        name: run.name.clone(),
        state: run.state.clone(),
        counts: counts_text(run.counts.iter().map(|(k, v)| (k.as_str(), *v))),
        submitted: time(run.submitted_at_ms),
        finished: time(run.finished_at_ms),
        took: if run.finished_at_ms > 0 {
            span(run.finished_at_ms - run.submitted_at_ms)
        } else {
            String::new()
        },
        owner: run.owner.clone(),
    }
}

pub(crate) async fn page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let path = if filter.state.is_empty() {
        "/workflows".to_string()
    } else {
        format!("/workflows?state={}", encode(&filter.state))
    };
    let viewer = match current(&console, &headers, &path) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let answer = console
        .services
        .jobs()
        .list_workflows(request(
            viewer.token.as_deref(),
            pb::ListWorkflowsRequest {
                state: filter.state.clone(),
                limit: LIMIT,
            },
        ))
        .await;
    let mut runs = match answer {
        Ok(a) => a.into_inner().runs,
        Err(s) => return status_page(&s),
    };
    // Newest first (as the API answers; made sure of).
    runs.sort_by(|a, b| {
        b.submitted_at_ms
            .cmp(&a.submitted_at_ms)
            .then_with(|| b.id.cmp(&a.id))
    });
    let page = WorkflowsPage {
        chrome: viewer.chrome(&console, "Workflows"),
        states: RUN_STATES.iter().map(|s| s.to_string()).collect(),
        runs: runs.iter().map(run_row).collect(),
        filter,
        limit: LIMIT,
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}
