//! Who is looking: sessions held by this coordinator, in memory.
//!
//! Every visitor gets a session cookie (`augur_session`: HttpOnly,
//! SameSite=Strict, Secure under TLS) naming a server-side session that holds
//! a CSRF token and, once signed in, the API token — the token itself never
//! reaches a page. Signing in checks the token as any API call does; every
//! page checks it again (a revoked token signs the session out). Every
//! state-changing form carries the session's CSRF token. Sessions end after
//! 12 hours without a request; at most 10,000 are kept (the oldest go).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use augur_coordinator::Identity;
use augur_core::auth::Role;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use rand::RngCore;
use serde::Deserialize;

use crate::pages::{error_page, html, Chrome};
use crate::Console;

const COOKIE: &str = "augur_session";
const IDLE: Duration = Duration::from_secs(12 * 3600);
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug)]
struct Session {
    token: Option<String>,
    csrf: String,
    last_seen: Instant,
}

#[derive(Default)]
pub(crate) struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality that takes as long whatever the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let session = map.get_mut(id)?;
        if session.last_seen.elapsed() > IDLE {
            map.remove(id);
            return None;
        }
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    fn create(&self, token: Option<String>) -> (String, Session) {
        let id = random_hex();
        let session = Session {
            token,
            csrf: random_hex(),
            last_seen: Instant::now(),
        };
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.last_seen.elapsed() <= IDLE);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    fn remove(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn clear_token(&self, id: &str) {
        if let Some(s) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            s.token = None;
        }
    }
}

/// The person behind a request.
#[derive(Clone, Debug)]
pub(crate) struct Viewer {
    pub token: Option<String>,
    pub identity: Identity,
    pub csrf: String,
    /// A new session's cookie, to set on the response.
    pub set_cookie: Option<HeaderValue>,
}

impl Viewer {
    /// Whether to show buttons that change things (the server checks again).
    pub fn may_operate(&self) -> bool {
        self.identity.role != Role::Viewer
    }

    /// Checks a form's CSRF token against the session's.
    pub fn check_csrf(&self, presented: &str) -> Result<(), Box<Response>> {
        if same(presented, &self.csrf) {
            Ok(())
        } else {
            Err(Box::new(error_page(
                StatusCode::FORBIDDEN,
                "This form is stale or was not sent by the console (CSRF token mismatch). Reload the page and try again.",
            )))
        }
    }

    pub fn chrome(&self, console: &Console, title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            user: self.identity.name.clone(),
            role: self.identity.role.as_str().to_string(),
            csrf: self.csrf.clone(),
            insecure: console.services.insecure(),
            signed_in: self.token.is_some(),
            node: console.services.node_id().to_string(),
        }
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(console: &Console, id: &str) -> Option<HeaderValue> {
    let secure = if console.services.tls() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// The session of a request, made if there is none.
fn session_of(console: &Console, headers: &HeaderMap) -> (String, Session, Option<HeaderValue>) {
    if let Some(id) = cookie_value(headers) {
        if let Some(session) = console.sessions.get(&id) {
            return (id, session, None);
        }
    }
    let (id, session) = console.sessions.create(None);
    let cookie = set_cookie(console, &id);
    (id, session, cookie)
}

/// Adds a new session's cookie to a response.
pub(crate) fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// Who is looking at `path`; without a valid sign-in where one is needed,
/// the response that sends them to sign in.
pub(crate) fn current(
    console: &Console,
    headers: &HeaderMap,
    path: &str,
) -> Result<Viewer, Box<Response>> {
    let (id, session, cookie) = session_of(console, headers);
    let login = |cookie: Option<HeaderValue>| {
        let next = if path.starts_with('/') && !path.starts_with("//") {
            path
        } else {
            "/"
        };
        let target = format!("/login?next={}", encode(next));
        Box::new(with_cookie(Redirect::to(&target).into_response(), cookie))
    };
    if !console.services.auth_required() {
        return Ok(Viewer {
            token: None,
            identity: Identity {
                name: "anonymous".into(),
                role: Role::Admin,
            },
            csrf: session.csrf,
            set_cookie: cookie,
        });
    }
    let Some(token) = session.token.clone() else {
        return Err(login(cookie));
    };
    match console.services.identify(Some(&token)) {
        Ok(identity) => Ok(Viewer {
            token: Some(token),
            identity,
            csrf: session.csrf,
            set_cookie: cookie,
        }),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            console.sessions.clear_token(&id);
            Err(login(cookie))
        }
        Err(status) => Err(Box::new(crate::pages::status_page(&status))),
    }
}

/// Who is acting on `path` through a form: as [`current`], and the form
/// must carry the session's CSRF token.
pub(crate) fn acting(
    console: &Console,
    headers: &HeaderMap,
    path: &str,
    csrf: &str,
) -> Result<Viewer, Box<Response>> {
    let viewer = current(console, headers, path)?;
    viewer.check_csrf(csrf)?;
    Ok(viewer)
}

/// Percent-encodes a path for a query parameter (its slashes kept).
fn encode(text: &str) -> String {
    crate::pages::percent_encode(text, b"/")
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: String,
    insecure: bool,
}

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: String,
}

fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_string()
    } else {
        "/".to_string()
    }
}

pub(crate) async fn login_form(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let (_, session, cookie) = session_of(&console, &headers);
    let page = LoginPage {
        csrf: session.csrf,
        next: safe_next(&q.next),
        error: String::new(),
        insecure: console.services.insecure(),
    };
    with_cookie(html(StatusCode::OK, page.render()), cookie)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

pub(crate) async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let (old, session, cookie) = session_of(&console, &headers);
    let next = safe_next(&form.next);
    let again = |status: StatusCode, error: String, csrf: String| {
        let page = LoginPage {
            csrf,
            next: next.clone(),
            error,
            insecure: console.services.insecure(),
        };
        html(status, page.render())
    };
    if !same(&form.csrf, &session.csrf) {
        return with_cookie(
            again(
                StatusCode::FORBIDDEN,
                "The sign-in form had expired; please try again.".into(),
                session.csrf,
            ),
            cookie,
        );
    }
    let token = form.token.trim().to_string();
    match console.services.identify(Some(&token)) {
        Ok(_) => {
            // A new session id on sign-in (no fixation).
            console.sessions.remove(&old);
            let (id, _) = console.sessions.create(Some(token));
            with_cookie(
                Redirect::to(&next).into_response(),
                set_cookie(&console, &id),
            )
        }
        Err(status) => with_cookie(
            again(
                StatusCode::UNAUTHORIZED,
                format!("Sign-in refused: {}", status.message()),
                session.csrf,
            ),
            cookie,
        ),
    }
}

#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let (id, session, _) = session_of(&console, &headers);
    if !same(&form.csrf, &session.csrf) {
        return error_page(StatusCode::FORBIDDEN, "CSRF token mismatch.");
    }
    console.sessions.remove(&id);
    Redirect::to("/login").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_stay_on_this_site() {
        assert_eq!(safe_next("/jobs/1"), "/jobs/1");
        for bad in ["//evil.example/", "https://evil.example/", "", "/\\evil"] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
        assert_eq!(encode("/jobs?state=failed"), "/jobs%3Fstate%3Dfailed");
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let s = Sessions::default();
        let (id, session) = s.create(Some("t".into()));
        assert_eq!(s.get(&id).map(|x| x.csrf), Some(session.csrf));
        s.clear_token(&id);
        assert_eq!(s.get(&id).and_then(|x| x.token), None);
        s.remove(&id);
        assert!(s.get(&id).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
