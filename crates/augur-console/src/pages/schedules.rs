//! `/schedules`: every schedule, what each tick runs, its last and next
//! tick, and Pause / Resume for those who may (the API checks ownership).

use askama::Template;
use augur_coordinator::services::request;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::{html, status_page, time, Chrome};
use crate::session::{acting, current, with_cookie};
use crate::Console;

pub(crate) struct ScheduleRow {
    pub name: String,
    pub cron: String,
    /// `workflow` or `job`.
    pub kind: String,
    /// The workflow's name, or the job's command line.
    pub runs: String,
    pub paused: bool,
    pub missed: String,
    pub owner: String,
    pub last_tick: String,
    pub next_tick: String,
}

fn row(s: &pb::Schedule) -> ScheduleRow {
    let (kind, runs) = if s.workflow.is_empty() {
        let spec = s.spec.clone().unwrap_or_default();
        let mut command = vec![spec.command.clone()];
        command.extend(spec.args);
        let line = command.join(" ");
        let runs = if spec.name.is_empty() || spec.name == spec.command {
            line
        } else {
            format!("{}: {line}", spec.name)
        };
        ("job", runs)
    } else {
        ("workflow", s.workflow.clone())
    };
    ScheduleRow {
        name: s.name.clone(),
        cron: s.cron.clone(),
        kind: kind.to_string(),
        runs,
        paused: s.paused,
        missed: s.missed.clone(),
        owner: s.owner.clone(),
        last_tick: time(s.last_tick_ms),
        next_tick: time(s.next_tick_ms),
    }
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    chrome: Chrome,
    schedules: Vec<ScheduleRow>,
    may_operate: bool,
}

pub(crate) async fn page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let viewer = match current(&console, &headers, "/schedules") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let answer = console
        .services
        .jobs()
        .list_schedules(request(
            viewer.token.as_deref(),
            pb::ListSchedulesRequest {},
        ))
        .await;
    let mut schedules = match answer {
        Ok(a) => a.into_inner().schedules,
        Err(s) => return status_page(&s),
    };
    schedules.sort_by(|a, b| a.name.cmp(&b.name));
    let page = SchedulesPage {
        chrome: viewer.chrome(&console, "Schedules"),
        schedules: schedules.iter().map(row).collect(),
        may_operate: viewer.may_operate(),
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}

#[derive(Deserialize)]
pub(crate) struct PauseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// `false` resumes.
    #[serde(default)]
    paused: bool,
}

/// Pauses or resumes a schedule through the API as the viewer.
pub(crate) async fn pause(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<PauseForm>,
) -> Response {
    let viewer = match acting(&console, &headers, "/schedules", &form.csrf) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let answer = console
        .services
        .jobs()
        .pause_schedule(request(
            viewer.token.as_deref(),
            pb::PauseScheduleRequest {
                name: form.name,
                paused: form.paused,
            },
        ))
        .await;
    match answer {
        Ok(_) => Redirect::to("/schedules").into_response(),
        Err(s) => status_page(&s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_says_what_each_tick_runs() {
        let job = pb::Schedule {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            spec: Some(pb::JobSpec {
                name: "backup".into(),
                command: "tar".into(),
                args: vec!["czf".into(), "/b.tgz".into()],
                ..Default::default()
            }),
            next_tick_ms: 1_000,
            ..Default::default()
        };
        let r = row(&job);
        assert_eq!(
            (r.kind.as_str(), r.runs.as_str()),
            ("job", "backup: tar czf /b.tgz")
        );
        assert_eq!(r.last_tick, "");
        let wf = pb::Schedule {
            workflow: "etl".into(),
            paused: true,
            ..job
        };
        let r = row(&wf);
        assert_eq!(
            (r.kind.as_str(), r.runs.as_str(), r.paused),
            ("workflow", "etl", true)
        );
    }
}
