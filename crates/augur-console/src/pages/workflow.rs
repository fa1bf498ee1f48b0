//! `/workflows/{id}`: one run. Its DAG drawn server-side as SVG (one node
//! per task, a fanned-out task one node with its instances' counts, layered
//! by depth from the tasks' `depends_on`, finally tasks in a last layer), its
//! instances (a fanned-out task collapsed to counts unless `?expand=TASK`),
//! its timeline, and Cancel / Retry for those who may. While the run is
//! running the graph refreshes itself (`/workflows/{id}/graph`).

use std::collections::BTreeMap;

use askama::Template;
use augur_coordinator::services::request;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::{encode, html, span, status_page, time, Chrome};

#[path = "workflow_dag.rs"]
mod dag;
use crate::session::{acting, current, with_cookie};
use crate::Console;
use dag::cut;
pub(crate) use dag::{dag, groups, Dag, Group};

/// Instance states, best to worst: a fanned-out task's node takes the worst
/// state among its instances. Also the order counts are listed in.
const SEVERITY: [&str; 8] = [
    "succeeded",
    "skipped",
    "pending",
    "waiting",
    "running",
    "cancelled",
    "upstream_failed",
    "failed",
];
/// Most instances an expanded task lists.
const MAX_EXPANDED: usize = 1000;

fn rank(state: &str) -> usize {
    // A state this console does not know sits with the unfinished ones.
    SEVERITY.iter().position(|s| *s == state).unwrap_or(4)
}

/// Counts by state, best first: `48 succeeded, 2 failed`.
pub(crate) fn counts_text<'a>(counts: impl IntoIterator<Item = (&'a str, u32)>) -> String {
    let mut v: Vec<(&str, u32)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
    v.sort_by_key(|(s, _)| (rank(s), *s));
    if v.is_empty() {
        return "no tasks".to_string();
    }
    v.iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row of the instances table: a task (counts when fanned out) or, when
/// expanded, one instance.
pub(crate) struct Row {
    pub task: String,
    pub finally: bool,
    pub fanned: bool,
    pub instances: usize,
    pub item: String,
    pub state: String,
    pub job_id: String,
    pub attempts: u64,
    pub outputs: String,
    pub message: String,
    pub expand: String,
}

fn outputs_text(t: &pb::WorkflowTask) -> String {
    let sorted: BTreeMap<_, _> = t.outputs.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", cut(v, 200)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn instance_row(t: &pb::WorkflowTask) -> Row {
    Row {
        task: t.name.clone(),
        finally: t.finally,
        fanned: t.fanned,
        instances: 1,
        item: if t.fanned {
            format!("[{}] {}", t.item_index, t.item)
        } else {
            String::new()
        },
        state: t.state.clone(),
        job_id: t.job_id.clone(),
        attempts: u64::from(t.attempts),
        outputs: outputs_text(t),
        message: t.message.clone(),
        expand: String::new(),
    }
}

/// One row per task, a fanned-out task as counts.
pub(crate) fn collapsed(groups: &[Group]) -> Vec<Row> {
    groups
        .iter()
        .map(|g| match (g.fanned, g.instances.as_slice()) {
            (false, [t]) => instance_row(t),
            _ => Row {
                task: g.name.clone(),
                finally: g.finally,
                fanned: true,
                instances: g.instances.len(),
                item: String::new(),
                state: counts_text(g.counts.iter().map(|(k, v)| (k.as_str(), *v))),
                job_id: String::new(),
                attempts: g.instances.iter().map(|t| u64::from(t.attempts)).sum(),
                outputs: String::new(),
                message: String::new(),
                expand: format!("?expand={}#expanded", encode(&g.name)),
            },
        })
        .collect()
}

/// What the graph shows: also what refreshes while the run is running.
pub(crate) struct Graph {
    pub run_state: String,
    pub counts: String,
    pub dag: Dag,
    pub rows: Vec<Row>,
    pub expanded: String,
    pub expanded_rows: Vec<Row>,
    pub expanded_total: usize,
}

pub(crate) fn graph(run: &pb::WorkflowRun, expand: &str) -> Graph {
    let groups = groups(run);
    let mut expanded_rows = Vec::new();
    let mut expanded_total = 0;
    let mut expanded = String::new();
    if let Some(g) = groups.iter().find(|g| g.name == expand) {
        expanded = g.name.clone();
        expanded_total = g.instances.len();
        expanded_rows = g
            .instances
            .iter()
            .take(MAX_EXPANDED)
            .map(|t| instance_row(t))
            .collect();
    }
    Graph {
        run_state: run.state.clone(),
        counts: counts_text(run.counts.iter().map(|(k, v)| (k.as_str(), *v))),
        dag: dag(&groups),
        rows: collapsed(&groups),
        expanded,
        expanded_rows,
        expanded_total,
    }
}

#[derive(Template)]
#[template(path = "workflow.html")]
struct WorkflowPage {
    chrome: Chrome,
    id: String,
    name: String,
    owner: String,
    trace_id: String,
    trace_url: String,
    params: Vec<(String, String)>,
    submitted: String,
    finished: String,
    took: String,
    bar_class: String,
    may_cancel: bool,
    may_retry: bool,
    retry_from: Vec<String>,
    live_url: String,
    graph: Graph,
}

#[derive(Template)]
#[template(path = "workflow_graph.html")]
struct GraphFragment {
    graph: Graph,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct View {
    #[serde(default)]
    expand: String,
}

async fn fetch(
    console: &Console,
    token: Option<&str>,
    id: &str,
) -> Result<pb::WorkflowRun, tonic::Status> {
    let run = console
        .services
        .jobs()
        .get_workflow(request(
            token,
            pb::GetWorkflowRequest {
                run_id: id.to_string(),
            },
        ))
        .await?;
    Ok(run.into_inner())
}

fn page_of(
    run: &pb::WorkflowRun,
    expand: &str,
    chrome: Chrome,
    may_operate: bool,
    trace_template: Option<&str>,
) -> WorkflowPage {
    let running = run.state == "running";
    let now = augur_core::now_ms();
    let end = if run.finished_at_ms > 0 {
        run.finished_at_ms
    } else {
        now
    };
    let took = span(end - run.submitted_at_ms);
    let graph = graph(run, expand);
    let retry_from = groups(run)
        .iter()
        .filter(|g| !g.finally)
        .map(|g| g.name.clone())
        .collect();
    let params: BTreeMap<_, _> = run.params.clone().into_iter().collect();
    WorkflowPage {
        chrome,
        id: run.id.clone(),
        name: run.name.clone(),
        owner: run.owner.clone(),
        trace_id: run.trace_id.clone(),
        trace_url: match trace_template {
            Some(t) if !run.trace_id.is_empty() => t.replace("{trace_id}", &run.trace_id),
            _ => String::new(),
        },
        params: params.into_iter().collect(),
        submitted: time(run.submitted_at_ms),
        finished: time(run.finished_at_ms),
        took: if running {
            format!("running for {took}")
        } else {
            took
        },
        bar_class: match run.state.as_str() {
            "running" => "running",
            "succeeded" => "done",
            _ => "ended-bad",
        }
        .to_string(),
        may_cancel: may_operate && running,
        may_retry: may_operate && !running,
        retry_from,
        live_url: if running {
            let mut url = format!("/workflows/{}/graph", encode(&run.id));
            if !expand.is_empty() {
                url.push_str(&format!("?expand={}", encode(expand)));
            }
            url
        } else {
            String::new()
        },
        graph,
    }
}

pub(crate) async fn page(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(view): Query<View>,
) -> Response {
    let viewer = match current(&console, &headers, &format!("/workflows/{id}")) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let run = match fetch(&console, viewer.token.as_deref(), &id).await {
        Ok(r) => r,
        Err(s) => return status_page(&s),
    };
    let chrome = viewer.chrome(&console, format!("Workflow run {}", run.id));
    let page = page_of(
        &run,
        &view.expand,
        chrome,
        viewer.may_operate(),
        console.options.trace_url_template.as_deref(),
    );
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}

/// The graph and instances alone, for live updates.
pub(crate) async fn graph_fragment(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(view): Query<View>,
) -> Response {
    let viewer = match current(&console, &headers, &format!("/workflows/{id}")) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match fetch(&console, viewer.token.as_deref(), &id).await {
        Ok(run) => html(
            StatusCode::OK,
            GraphFragment {
                graph: graph(&run, &view.expand),
            }
            .render(),
        ),
        Err(s) => status_page(&s),
    }
}

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// Retry: the task to re-run from; empty: what failed.
    #[serde(default)]
    from: String,
}

/// Cancels the run through the API as the viewer.
pub(crate) async fn cancel(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = match acting(&console, &headers, &format!("/workflows/{id}"), &form.csrf) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let answer = console
        .services
        .jobs()
        .cancel_workflow(request(
            viewer.token.as_deref(),
            pb::CancelWorkflowRequest { run_id: id },
        ))
        .await;
    match answer {
        Ok(run) => {
            Redirect::to(&format!("/workflows/{}", encode(&run.into_inner().id))).into_response()
        }
        Err(s) => status_page(&s),
    }
}

/// Retries the ended run (from a task, or what failed) as the viewer.
pub(crate) async fn retry(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let viewer = match acting(&console, &headers, &format!("/workflows/{id}"), &form.csrf) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let answer = console
        .services
        .jobs()
        .retry_workflow(request(
            viewer.token.as_deref(),
            pb::RetryWorkflowRequest {
                run_id: id,
                from: form.from,
            },
        ))
        .await;
    match answer {
        Ok(run) => {
            Redirect::to(&format!("/workflows/{}", encode(&run.into_inner().id))).into_response()
        }
        Err(s) => status_page(&s),
    }
}

#[cfg(test)]
#[path = "workflow_tests.rs"]
mod tests;
