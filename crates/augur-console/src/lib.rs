//! Augur's web console: server-rendered pages (askama templates, checked at
//! compile time) over the coordinator's own services, called in-process with
//! the signed-in person's token, so every page and action goes through the
//! same authentication, authorisation, validation and forwarding to the
//! leader as a gRPC call. Served on the API port beside gRPC (see
//! `augur_coordinator::HttpExtension`). No CDN, no inline script: one
//! stylesheet and one small script, both in the binary.

mod assets;
mod pages;
mod session;

use std::sync::Arc;

use augur_coordinator::{HttpExtension, Services};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

/// How the console is set up.
#[derive(Clone, Debug, Default)]
pub struct ConsoleOptions {
    /// Link to a job's trace, `{trace_id}` replaced (e.g.
    /// `http://jaeger:16686/trace/{trace_id}`); `None`: no link.
    pub trace_url_template: Option<String>,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Console {
    pub services: Services,
    pub sessions: Arc<session::Sessions>,
    pub options: Arc<ConsoleOptions>,
}

/// The console as an extension of a coordinator's API port.
pub fn extension(options: ConsoleOptions) -> HttpExtension {
    let options = Arc::new(options);
    HttpExtension(Arc::new(move |services| router(services, options.clone())))
}

/// The console's routes over `services`.
pub fn router(services: Services, options: Arc<ConsoleOptions>) -> Router {
    let console = Console {
        services,
        sessions: Arc::new(session::Sessions::default()),
        options,
    };
    Router::new()
        .route("/", get(pages::overview::page))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/jobs", get(pages::jobs::page))
        .route("/jobs/rows", get(pages::jobs::rows))
        .route("/jobs/{id}", get(pages::job::page))
        .route("/jobs/{id}/cancel", post(pages::job::cancel))
        .route("/jobs/{id}/retry", post(pages::job::retry))
        .route("/workflows", get(pages::workflows::page))
        .route("/workflows/{id}", get(pages::workflow::page))
        .route(
            "/workflows/{id}/graph",
            get(pages::workflow::graph_fragment),
        )
        .route("/workflows/{id}/cancel", post(pages::workflow::cancel))
        .route("/workflows/{id}/retry", post(pages::workflow::retry))
        .route("/workers", get(pages::workers::page))
        .route("/workers/{id}", get(pages::workers::worker))
        .route("/workers/{id}/drain", post(pages::workers::drain))
        .route("/schedules", get(pages::schedules::page))
        .route("/schedules/pause", post(pages::schedules::pause))
        .route("/model", get(pages::model::page))
        .route("/static/{file}", get(assets::serve))
        .fallback(fallback)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// gRPC requests for a method no service has get gRPC's answer; anything
/// else a page saying so.
async fn fallback(request: Request<axum::body::Body>) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let mut response = StatusCode::OK.into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("12"));
        return response;
    }
    pages::error_page(StatusCode::NOT_FOUND, "No such page.")
}

/// Every console response: no framing, no inline script, no sniffing, not
/// cached.
async fn security_headers(mut response: Response) -> Response {
    let h: &mut HeaderMap = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; \
             object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
