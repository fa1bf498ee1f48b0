//! `/model`: the runtime model (version, when trained, on how many runs),
//! the placement policy in force, and how the predictions fared.
//!
//! Run records (`ExportRuns`) hold what was known at submission and what was
//! measured, not what was predicted; the prediction made when an attempt was
//! placed is kept with the job (`Job.placement`). So the accuracy here is
//! over the newest finished jobs that carry one: the prediction placement
//! really used, against the runtime of the attempt it was made for.

use std::collections::BTreeMap;

use askama::Template;
use augur_coordinator::services::request;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use augur_proto::v1::placement_service_server::PlacementService;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{html, status_page, time, Chrome};
use crate::session::{current, with_cookie};
use crate::Console;

/// Predictions scored at most (the newest).
const RECENT: usize = 500;
/// Finished jobs read at most looking for them (pages of [`PAGE`]).
const MAX_SCAN: usize = 5000;
const PAGE: u32 = 1000;
/// Shortest runtime plotted (log axes): 1 ms.
const FLOOR_S: f64 = 0.001;
/// Most classes in the per-class table.
const MAX_CLASSES: usize = 40;
// The scatter plot's geometry.
const PLOT: f64 = 420.0;
const LEFT: f64 = 64.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 44.0;

/// One finished job with the prediction its last attempt was placed by.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point {
    pub job_id: String,
    pub name: String,
    pub predicted_s: f64,
    pub actual_s: f64,
    /// Where the prediction came from: `model`, or a fallback's reason.
    pub source: String,
    pub model_version: u64,
}

impl Point {
    /// The job's recorded prediction against its last attempt's runtime;
    /// `None` without a prediction or a measured attempt.
    pub fn of(job: &pb::Job) -> Option<Point> {
        let p = job.placement.as_ref()?;
        let predicted = p.predicted_seconds.filter(|s| s.is_finite() && *s > 0.0)?;
        if job.started_at_ms <= 0 || job.finished_at_ms < job.started_at_ms {
            return None;
        }
        Some(Point {
            job_id: job.id.clone(),
            name: job
                .spec
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            predicted_s: predicted.max(FLOOR_S),
            actual_s: ((job.finished_at_ms - job.started_at_ms) as f64 / 1000.0).max(FLOOR_S),
            source: p.source.clone(),
            model_version: p.model_version,
        })
    }

    fn by_model(&self) -> bool {
        self.source == "model"
    }

    fn abs_log2(&self) -> f64 {
        (self.predicted_s / self.actual_s).log2().abs()
    }
}

/// Accuracy over some points.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Accuracy {
    pub label: String,
    pub runs: usize,
    /// Percent within 2x, one decimal.
    pub within_2x: String,
    pub median_abs_log2: String,
    pub median_actual: String,
    pub median_predicted: String,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn seconds(s: Option<f64>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s < 10.0 => format!("{s:.3} s"),
        Some(s) => format!("{s:.1} s"),
    }
}

pub(crate) fn accuracy<'a>(label: &str, points: impl IntoIterator<Item = &'a Point>) -> Accuracy {
    let points: Vec<&Point> = points.into_iter().collect();
    let errors: Vec<f64> = points.iter().map(|p| p.abs_log2()).collect();
    let within = errors.iter().filter(|e| **e <= 1.0).count();
    Accuracy {
        label: label.to_string(),
        runs: points.len(),
        within_2x: if points.is_empty() {
            "—".into()
        } else {
            format!("{:.1}%", 100.0 * within as f64 / points.len() as f64)
        },
        median_abs_log2: median(errors).map_or("—".into(), |m| format!("{m:.2}")),
        median_actual: seconds(median(points.iter().map(|p| p.actual_s).collect())),
        median_predicted: seconds(median(points.iter().map(|p| p.predicted_s).collect())),
    }
}

/// Accuracy per job class (spec name), most runs first.
pub(crate) fn by_class(points: &[Point]) -> Vec<Accuracy> {
    let mut classes: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in points {
        classes.entry(p.name.as_str()).or_default().push(p);
    }
    let mut out: Vec<Accuracy> = classes
        .into_iter()
        .map(|(name, ps)| accuracy(if name.is_empty() { "(unnamed)" } else { name }, ps))
        .collect();
    out.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.label.cmp(&b.label)));
    out.truncate(MAX_CLASSES);
    out
}

pub(crate) struct Circle {
    pub cx: String,
    pub cy: String,
    pub class: String,
    pub title: String,
}

/// A decade on both axes: where it is on the x axis and on the y axis.
pub(crate) struct Tick {
    pub x: String,
    pub y: String,
    pub label: String,
}

#[derive(Default)]
pub(crate) struct Scatter {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
    pub circles: Vec<Circle>,
    pub ticks: Vec<Tick>,
    /// Lines y = x, y = 2x and y = x/2, each `x1 y1 x2 y2`.
    pub diagonal: [String; 4],
    pub upper: [String; 4],
    pub lower: [String; 4],
}

fn decade_label(k: i32) -> String {
    match k {
        ..=-1 => format!("{} s", 10f64.powi(k)),
        0..=4 => format!("{} s", 10i64.pow(k as u32)),
        _ => format!("1e{k} s"),
    }
}

/// The predicted-vs-actual plot on log-log axes spanning whole decades.
pub(crate) fn scatter(points: &[Point]) -> Scatter {
    let values = points.iter().flat_map(|p| [p.predicted_s, p.actual_s]);
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (mut d0, mut d1) = if lo > hi {
        (-1, 2)
    } else {
        (lo.log10().floor() as i32, hi.log10().ceil() as i32)
    };
    if d1 <= d0 {
        d1 = d0 + 1;
    }
    d0 = d0.max(-3);
    d1 = d1.max(d0 + 1);
    let span = f64::from(d1 - d0);
    let x = |v: f64| LEFT + ((v.max(1e-9).log10() - f64::from(d0)) / span).clamp(0.0, 1.0) * PLOT;
    let y =
        |v: f64| TOP + PLOT - ((v.max(1e-9).log10() - f64::from(d0)) / span).clamp(0.0, 1.0) * PLOT;
    let f = |v: f64| format!("{v:.1}");
    let (a, b) = (10f64.powi(d0), 10f64.powi(d1));
    let line = |k: f64| {
        // y = k·x, cut to the plot.
        let (x0, x1) = (a.max(a / k), b.min(b / k));
        [f(x(x0)), f(y(k * x0)), f(x(x1)), f(y(k * x1))]
    };
    let circles = points
        .iter()
        .map(|p| Circle {
            cx: f(x(p.predicted_s)),
            cy: f(y(p.actual_s)),
            class: if p.by_model() {
                "run model".into()
            } else {
                "run fallback".into()
            },
            title: format!(
                "{} {}: predicted {:.3} s ({}{}), ran {:.3} s",
                p.name,
                p.job_id,
                p.predicted_s,
                if p.source.is_empty() {
                    "unknown source"
                } else {
                    &p.source
                },
                if p.model_version > 0 {
                    format!(", model v{}", p.model_version)
                } else {
                    String::new()
                },
                p.actual_s
            ),
        })
        .collect();
    Scatter {
        width: LEFT + PLOT + 16.0,
        height: TOP + PLOT + BOTTOM,
        left: LEFT,
        top: TOP,
        right: LEFT + PLOT,
        bottom: TOP + PLOT,
        circles,
        ticks: (d0..=d1)
            .map(|k| Tick {
                x: f(x(10f64.powi(k))),
                y: f(y(10f64.powi(k))),
                label: decade_label(k),
            })
            .collect(),
        diagonal: line(1.0),
        upper: line(2.0),
        lower: line(0.5),
    }
}

#[derive(Template)]
#[template(path = "model.html")]
struct ModelPage {
    chrome: Chrome,
    has_model: bool,
    no_model: String,
    version: u64,
    trained: String,
    training_runs: u64,
    algorithm: String,
    in_sample: String,
    policy: String,
    config: String,
    config_default: bool,
    config_revision: i64,
    scanned: usize,
    without: usize,
    capped: bool,
    overall: Vec<Accuracy>,
    classes: Vec<Accuracy>,
    scatter: Scatter,
    scored: usize,
}

/// The newest finished jobs (succeeded or failed: attempts that ended on
/// their own) with a recorded prediction, at most [`RECENT`]; how many jobs
/// were read, and how many of them had none.
async fn recent_points(
    console: &Console,
    token: Option<&str>,
) -> Result<(Vec<Point>, usize, usize), tonic::Status> {
    let mut points = Vec::new();
    let (mut scanned, mut without) = (0, 0);
    let mut page_token = String::new();
    while points.len() < RECENT && scanned < MAX_SCAN {
        let answer = console
            .services
            .jobs()
            .list_jobs(request(
                token,
                pb::ListJobsRequest {
                    states: vec![pb::JobState::Succeeded as i32, pb::JobState::Failed as i32],
                    page_size: PAGE,
                    page_token: page_token.clone(),
                    newest_first: true,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        for job in &answer.jobs {
            if points.len() >= RECENT {
                break;
            }
            scanned += 1;
            match Point::of(job) {
                Some(p) => points.push(p),
                None => without += 1,
            }
        }
        if answer.next_page_token.is_empty() {
            break;
        }
        page_token = answer.next_page_token;
    }
    Ok((points, scanned, without))
}

/// What the stored model says of itself: its algorithm and in-sample fit.
fn model_summary(info: &pb::ModelInfo) -> (String, String) {
    let model: serde_json::Value = serde_json::from_str(&info.model_json).unwrap_or_default();
    let metrics: serde_json::Value = serde_json::from_str(&info.metrics_json).unwrap_or_default();
    let algorithm = metrics
        .get("algorithm")
        .or_else(|| model.get("algorithm"))
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_string();
    let fit = model.get("metrics");
    let number = |k: &str| fit.and_then(|m| m.get(k)).and_then(|v| v.as_f64());
    let in_sample = match (number("within_2x"), number("median_abs_log2"), number("records")) {
        (Some(w), Some(m), Some(n)) => format!(
            "{:.1}% within 2x, median |log2(predicted/actual)| {m:.2}, over its {n:.0} training runs",
            100.0 * w
        ),
        _ => String::new(),
    };
    (algorithm, in_sample)
}

pub(crate) async fn page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let viewer = match current(&console, &headers, "/model") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let token = viewer.token.as_deref();
    let placement = console.services.placement();
    let info = match placement
        .get_model(request(
            token,
            pb::GetModelRequest {
                include_model: true,
            },
        ))
        .await
    {
        Ok(i) => Ok(i.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => Err(s.message().to_string()),
        Err(s) => return status_page(&s),
    };
    let config = match placement
        .get_placement_config(request(token, pb::GetPlacementConfigRequest {}))
        .await
    {
        Ok(c) => c.into_inner(),
        Err(s) => return status_page(&s),
    };
    let (points, scanned, without) = match recent_points(&console, token).await {
        Ok(x) => x,
        Err(s) => return status_page(&s),
    };
    let config_value: serde_json::Value = serde_json::from_str(&config.json).unwrap_or_default();
    let (algorithm, in_sample) = info.as_ref().map(model_summary).unwrap_or_default();
    let overall = vec![
        accuracy("all scored jobs", &points),
        accuracy(
            "predicted by the model",
            points.iter().filter(|p| p.by_model()),
        ),
        accuracy(
            "fallback predictions (no model, or too little history)",
            points.iter().filter(|p| !p.by_model()),
        ),
    ];
    let (version, trained, training_runs, no_model) = match &info {
        Ok(i) => (
            i.version,
            time(i.trained_at_ms),
            i.training_runs,
            String::new(),
        ),
        Err(message) => (0, String::new(), 0, message.clone()),
    };
    let page = ModelPage {
        chrome: viewer.chrome(&console, "Model"),
        has_model: info.is_ok(),
        no_model,
        version,
        trained,
        training_runs,
        algorithm,
        in_sample,
        policy: config_value
            .get("policy")
            .and_then(|p| p.as_str())
            .unwrap_or("unknown")
            .to_string(),
        config: serde_json::to_string_pretty(&config_value).unwrap_or(config.json),
        config_default: config.is_default,
        config_revision: config.revision,
        scanned,
        without,
        capped: scanned >= MAX_SCAN,
        classes: by_class(&points),
        scatter: scatter(&points),
        scored: points.len(),
        overall,
    };
    with_cookie(html(StatusCode::OK, page.render()), viewer.set_cookie)
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
