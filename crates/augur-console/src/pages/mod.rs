//! The pages. Each builds its data through the in-process API with the
//! viewer's token and renders an askama template; what an API call refuses
//! becomes a page saying why.

pub(crate) mod job;
pub(crate) mod jobs;
pub(crate) mod model;
pub(crate) mod overview;
pub(crate) mod schedules;
pub(crate) mod workers;
pub(crate) mod workflow;
pub(crate) mod workflows;

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

/// What the layout around every page shows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chrome {
    pub title: String,
    pub user: String,
    pub role: String,
    pub csrf: String,
    pub insecure: bool,
    pub signed_in: bool,
    pub node: String,
}

/// A rendered template as a response.
pub(crate) fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    match rendered {
        Ok(body) => {
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
}

/// A page that says what went wrong.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    html(
        status,
        ErrorPage {
            status: status.as_u16(),
            message: message.to_string(),
        }
        .render(),
    )
}

/// What an API refusal means for a page.
pub(crate) fn status_page(status: &tonic::Status) -> Response {
    let code = match status.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error_page(code, &format!("{:?}: {}", status.code(), status.message()))
}

/// Percent-encodes `text` for a URL, keeping unreserved characters and
/// those in `keep`.
pub(crate) fn percent_encode(text: &str, keep: &[u8]) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    percent_encode(text, b"")
}

/// Unix milliseconds as UTC text; empty for 0.
pub(crate) fn time(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_default()
}

/// A duration in milliseconds as `1.234 s`, `2 min 3 s`, ...
pub(crate) fn span(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.3} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// A job state's name as the API's enum says it (`succeeded`, ...).
pub(crate) fn job_state(state: i32) -> String {
    augur_proto::v1::JobState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_spans_read_well() {
        assert_eq!(time(0), "");
        assert_eq!(time(1_000), "1970-01-01 00:00:01.000 UTC");
        assert_eq!(span(1_234), "1.234 s");
        assert_eq!(span(123_000), "2 min 3 s");
        assert_eq!(
            job_state(augur_proto::v1::JobState::TimedOut as i32),
            "timed_out"
        );
    }
}
