//! The web console in a real browser (Debian's headless chromium through
//! chromedriver) against a real cluster with real etcd and sign-in required:
//! a viewer watches a job appear and finish without reloading and cannot
//! cancel (no button; a forged POST is refused); an admin cancels a running
//! job from its page and its process is gone; a failed job's page shows its
//! stderr tail and attempts; a workflow run's graph has one node per task in
//! the task's state; the model page plots one point per recent run. Plus the
//! security headers, cookie flags and CSRF checks over plain HTTP.
//!
//! Every page visited is saved as `target/console-screenshots/NAME.png`, and
//! no page's HTML may contain the API token it was signed in with. These
//! tests skip (saying so) only where chromium cannot be installed; the
//! header test needs no browser.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use augur_e2e::browser::{self, Browser, Tools};
use augur_e2e::http;
use augur_e2e::{json_str, pid_alive, poll_until, Cluster, ClusterConfig};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);
const ADMIN: &str = "admin-console-0123456789abcdef";

/// A cluster that requires sign-in: the admin token from a file, and the
/// harness's CLI calls made as that admin.
struct Secured {
    cluster: Cluster,
    _dir: tempfile::TempDir,
}

fn secured(workers: usize, extra: &[&str]) -> Secured {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_file = dir.path().join("admin.token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).expect("write the admin token");
    let mut args = vec![
        "--admin-token-file".to_string(),
        admin_file.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start(ClusterConfig {
        workers,
        extra_coordinator_args: args,
        cli_env: vec![("AUGUR_TOKEN".into(), ADMIN.into())],
        ..Default::default()
    });
    Secured { cluster, _dir: dir }
}

/// A new API token (its secret).
fn create_token(cluster: &Cluster, name: &str, role: &str) -> String {
    let secret = cluster
        .cli_ok(&["token", "create", "--name", name, "--role", role])
        .trim()
        .to_string();
    assert!(secret.starts_with("augur_"), "secret {secret:?}");
    secret
}

/// A browser on the cluster's console.
fn open_browser(tools: &Tools, cluster: &Cluster) -> Browser {
    Browser::start(tools, cluster.dir(), &cluster.api_url(0))
}

/// Opens `path`, saves a screenshot as `shot`, and checks the token is in
/// no page.
fn visit(browser: &Browser, path: &str, shot: &str, token: &str) {
    browser.goto(path);
    browser.screenshot(shot);
    assert_no_token(browser, token);
}

fn assert_no_token(browser: &Browser, token: &str) {
    let source = browser.source();
    assert!(
        !source.contains(token),
        "{}: the page's HTML contains the API token",
        browser.path()
    );
}

/// Signs in through the login form, as a person would, from a visit to `/`.
fn sign_in(browser: &Browser, token: &str, role: &str, shot: &str) {
    browser.goto("/");
    let path = browser.path();
    assert!(
        path.starts_with("/login"),
        "/ without a session showed {path}, not the sign-in page"
    );
    assert_eq!(browser.count("form[action='/login'] input[name=csrf]"), 1);
    browser.screenshot(shot);
    browser.type_into("#token", token);
    browser.click("form[action='/login'] button[type=submit]");
    assert_eq!(browser.path(), "/", "sign-in went back to where it started");
    let who = browser.text(".who").unwrap_or_default();
    assert!(
        who.contains(&format!("({role})")),
        "the header does not say {role}: {who:?}"
    );
    assert_no_token(browser, token);
}

/// Job id -> state of the rows in `tbody#job-rows`, as the page shows them.
fn job_rows(browser: &Browser) -> BTreeMap<String, String> {
    let rows = browser.script(
        "return Array.from(document.querySelectorAll('tbody#job-rows tr[data-job]')).map(function (tr) {
           var s = tr.querySelector('span.state');
           return [tr.getAttribute('data-job'), s ? s.textContent.trim() : ''];
         });",
        vec![],
    );
    rows.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_str()?.to_string())))
        .collect()
}

/// The text of the `dd` after the `dt` saying `label` on the page.
fn fact(browser: &Browser, label: &str) -> Option<String> {
    browser
        .script(
            "var label = arguments[0];
             var dt = Array.from(document.querySelectorAll('dl.facts dt'))
                       .find(function (d) { return d.textContent.trim() === label; });
             return dt && dt.nextElementSibling ? dt.nextElementSibling.textContent.trim() : null;",
            vec![json!(label)],
        )
        .as_str()
        .map(str::to_string)
}

/// POSTs a form body from the page (same origin, its session cookie) and
/// returns the status and body of the answer.
fn page_post(browser: &Browser, path: &str, body: &str) -> (u64, String) {
    let answer = browser.script_async(
        "var done = arguments[arguments.length - 1];
         fetch(arguments[0], {method: 'POST', body: arguments[1], credentials: 'same-origin',
                              headers: {'content-type': 'application/x-www-form-urlencoded'}})
           .then(function (r) { return r.text().then(function (t) { done([r.status, t]); }); })
           .catch(function (e) { done([0, String(e)]); });",
        vec![json!(path), json!(body)],
    );
    (
        answer[0].as_u64().unwrap_or(0),
        answer[1].as_str().unwrap_or_default().to_string(),
    )
}

/// Waits for the job to be running per the CLI.
fn wait_running(cluster: &Cluster, id: &str) {
    cluster.wait_job(id, DEADLINE, "running", |j| j["state"] == "running");
}

#[test]
fn console_viewer_sees_a_job_run_and_finish_live_and_cannot_cancel() {
    let Some(tools) = browser::tools() else {
        return;
    };
    let secured = secured(2, &[]);
    let cluster = &secured.cluster;
    let viewer = create_token(cluster, "watcher", "viewer");
    let browser = open_browser(&tools, cluster);

    sign_in(&browser, &viewer, "viewer", "login");
    browser.screenshot("overview");
    visit(&browser, "/jobs", "jobs-empty", &viewer);
    assert_eq!(browser.count("tbody#job-rows[data-live]"), 1, "live rows");
    // Set on this document: gone if the page reloads.
    browser.script("window.augurNoReload = 'same page';", vec![]);

    let id = cluster.submit(&["--name", "live-row", "--", "sh", "-c", "sleep 4; echo done"]);
    let mut seen: Vec<String> = Vec::new();
    let mut running_shot = false;
    poll_until(DEADLINE, format!("row {id} to show succeeded"), || {
        let state = job_rows(&browser).remove(&id);
        if let Some(s) = &state {
            if seen.last() != Some(s) {
                seen.push(s.clone());
            }
            if s == "running" && !running_shot {
                browser.screenshot("jobs-running");
                running_shot = true;
            }
        }
        match state.as_deref() {
            Some("succeeded") => Ok(()),
            other => Err(format!("{other:?}; states seen {seen:?}")),
        }
    });
    assert!(
        seen.iter().any(|s| s == "running"),
        "the row never showed running: {seen:?}"
    );
    assert_eq!(
        browser.script("return window.augurNoReload || null;", vec![]),
        json!("same page"),
        "the jobs page reloaded instead of updating its rows"
    );
    browser.screenshot("jobs");
    eprintln!("console: row {id} went through {seen:?} without a reload");

    // The finished job's page: its output, and no cancel button. (Opened by
    // its URL: a click could race the rows being replaced.)
    let href = browser
        .script(
            "var a = document.querySelector(\"tr[data-job='\" + arguments[0] + \"'] a\");
             return a ? a.getAttribute('href') : null;",
            vec![json!(id)],
        )
        .as_str()
        .map(str::to_string);
    assert_eq!(href, Some(format!("/jobs/{id}")), "the row's link");
    visit(&browser, &format!("/jobs/{id}"), "job-succeeded", &viewer);
    assert_eq!(browser.text("#job-state").as_deref(), Some("succeeded"));
    assert!(browser
        .text("pre#stdout")
        .is_some_and(|t| t.contains("done")));
    assert_eq!(browser.count("#cancel"), 0);

    // A running job: still no button, and a forged cancel is refused.
    let held = cluster.submit(&["--name", "held", "--", "sleep", "60"]);
    wait_running(cluster, &held);
    visit(
        &browser,
        &format!("/jobs/{held}"),
        "job-running-viewer",
        &viewer,
    );
    assert_eq!(browser.text("#job-state").as_deref(), Some("running"));
    assert_eq!(browser.count("#cancel"), 0, "a viewer is offered Cancel");
    assert_eq!(
        browser.count(&format!("form[action='/jobs/{held}/cancel']")),
        0
    );

    let (status, body) = page_post(&browser, &format!("/jobs/{held}/cancel"), "csrf=forged");
    assert_eq!(status, 403, "a cancel with a forged CSRF token: {body}");
    assert!(body.contains("CSRF"), "{body}");
    let csrf = browser
        .script(
            "return document.querySelector(\"form[action='/logout'] input[name=csrf]\").value;",
            vec![],
        )
        .as_str()
        .expect("the sign-out form's CSRF token")
        .to_string();
    let (status, body) = page_post(
        &browser,
        &format!("/jobs/{held}/cancel"),
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 403, "a viewer's cancel with the right CSRF: {body}");
    assert!(body.contains("PermissionDenied"), "{body}");

    let job = cluster.get_job(&held);
    assert_eq!(json_str(&job, "state"), "running", "{job}");
    assert_eq!(job["cancel_requested"], json!(false), "{job}");
    browser.goto(&format!("/jobs/{held}"));
    assert_eq!(browser.text("#job-state").as_deref(), Some("running"));
}

#[test]
fn console_admin_cancels_a_running_job_and_its_process_is_gone() {
    let Some(tools) = browser::tools() else {
        return;
    };
    let secured = secured(1, &[]);
    let cluster = &secured.cluster;
    let pid_file = cluster.path("held.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let id = cluster.submit(&["--name", "to-cancel", "--", "sh", "-c", &script]);
    wait_running(cluster, &id);
    let pid: u32 = poll_until(DEADLINE, "the job's pid file", || {
        std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{e}"))
    });
    assert!(pid_alive(pid), "the job's process {pid} is not running");

    let browser = open_browser(&tools, cluster);
    sign_in(&browser, ADMIN, "admin", "login-admin");
    visit(&browser, &format!("/jobs/{id}"), "job-running", ADMIN);
    assert_eq!(browser.text("#job-state").as_deref(), Some("running"));
    assert_eq!(
        browser.count("#cancel"),
        1,
        "an admin is not offered Cancel"
    );

    let clicked = Instant::now();
    browser.click("#cancel");
    assert_eq!(browser.path(), format!("/jobs/{id}"), "after Cancel");
    poll_until(
        DEADLINE,
        format!("the page of {id} to say cancelled"),
        || {
            browser.goto(&format!("/jobs/{id}"));
            match browser.text("#job-state") {
                Some(s) if s == "cancelled" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    browser.screenshot("job-cancelled");
    assert_no_token(&browser, ADMIN);
    assert_eq!(
        browser.count("#cancel"),
        0,
        "Cancel offered on a cancelled job"
    );
    poll_until(DEADLINE, format!("process {pid} to be gone"), || {
        if pid_alive(pid) {
            Err("still alive".into())
        } else {
            Ok(())
        }
    });
    eprintln!(
        "console: cancelled from the page; process {pid} gone {:?} after the click",
        clicked.elapsed()
    );
    let job = cluster.get_job(&id);
    assert_eq!(json_str(&job, "state"), "cancelled", "{job}");
}

#[test]
fn console_failed_job_shows_its_stderr_tail_and_attempts() {
    let Some(tools) = browser::tools() else {
        return;
    };
    let secured = secured(1, &[]);
    let cluster = &secured.cluster;
    let id = cluster.submit(&[
        "--name",
        "boomer",
        "--retries",
        "1",
        "--backoff",
        "100ms",
        "--",
        "sh",
        "-c",
        "echo boom >&2; exit 4",
    ]);
    let job = cluster.wait_terminal(&id, DEADLINE);
    assert_eq!(json_str(&job, "state"), "failed", "{job}");

    let browser = open_browser(&tools, cluster);
    sign_in(&browser, ADMIN, "admin", "login-failed");
    browser.screenshot("overview-failure");
    assert_eq!(
        browser.count(&format!("a[href='/jobs/{id}']")),
        1,
        "the overview does not list the failure"
    );
    browser.click(&format!("a[href='/jobs/{id}']"));
    assert_eq!(browser.path(), format!("/jobs/{id}"));
    browser.screenshot("job-failed");
    assert_no_token(&browser, ADMIN);
    assert_eq!(browser.text("#job-state").as_deref(), Some("failed"));
    let stderr = browser.text("pre#stderr").unwrap_or_default();
    assert!(stderr.contains("boom"), "stderr tail {stderr:?}");
    let summary = browser
        .script(
            "return document.getElementById('job-state').parentElement.textContent;",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.contains("attempt 2 of at most 2"),
        "the attempts line: {summary:?}"
    );
    assert_eq!(fact(&browser, "Exit code").as_deref(), Some("4"));
    assert_eq!(browser.count("#cancel"), 0);
    // An ended job can run again: a new job with the same spec.
    browser.click("#retry");
    let again = browser.path();
    let new_id = again.trim_start_matches("/jobs/").to_string();
    assert!(again.starts_with("/jobs/") && new_id != id, "{again}");
    let copy = cluster.wait_terminal(&new_id, DEADLINE);
    assert_eq!(json_str(&copy, "name"), "boomer", "{copy}");
    assert_eq!(json_str(&copy, "state"), "failed", "{copy}");
}

const WORKFLOW: &str = r#"
name: console-demo
tasks:
  - {name: extract, command: ["sh", "-c", "echo rows"]}
  - {name: check, depends_on: [extract], command: ["sh", "-c", "echo bad >&2; exit 3"]}
  - {name: publish, depends_on: [check], command: ["true"]}
  - {name: optional, depends_on: [extract], when: 'no == yes', command: ["true"]}
  - {name: report, depends_on: [extract], command: ["true"]}
finally:
  - {name: cleanup, command: ["true"]}
"#;

#[test]
fn console_workflow_run_draws_one_node_per_task_in_its_state() {
    let Some(tools) = browser::tools() else {
        return;
    };
    let secured = secured(2, &[]);
    let cluster = &secured.cluster;
    let file = cluster.path("console-demo.yaml");
    std::fs::write(&file, WORKFLOW).expect("write the workflow");
    let out = cluster.cli(&["workflow", "submit", &file.to_string_lossy(), "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "a run with a failing task ends failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(run.starts_with("wf-"), "run id {run:?}");
    let expected: BTreeMap<&str, &str> = [
        ("extract", "succeeded"),
        ("check", "failed"),
        ("publish", "upstream_failed"),
        ("optional", "skipped"),
        ("report", "succeeded"),
        ("cleanup", "succeeded"),
    ]
    .into_iter()
    .collect();

    let browser = open_browser(&tools, cluster);
    sign_in(&browser, ADMIN, "admin", "login-workflow");
    visit(
        &browser,
        &format!("/workflows/{run}"),
        "workflow-run",
        ADMIN,
    );
    assert_eq!(browser.text("#run-state").as_deref(), Some("failed"));
    let nodes = browser.script(
        "return Array.from(document.querySelectorAll('svg g.node')).map(function (g) {
           return [g.getAttribute('data-task'), g.getAttribute('class')];
         });",
        vec![],
    );
    let nodes: Vec<(String, BTreeSet<String>)> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n[0].as_str().unwrap_or_default().to_string(),
                n[1].as_str()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            )
        })
        .collect();
    assert_eq!(nodes.len(), expected.len(), "one node per task: {nodes:?}");
    for (task, state) in &expected {
        let classes = nodes
            .iter()
            .find(|(name, _)| name == task)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no node for task {task}: {nodes:?}"));
        assert!(
            classes.contains(*state),
            "node {task} has classes {classes:?}, not {state}"
        );
        for other in expected.values().filter(|s| *s != state) {
            assert!(
                !classes.contains(*other),
                "node {task} has classes {classes:?}: also {other}"
            );
        }
    }

    // The failed task's node leads to its job, whose page has its stderr.
    let job_link = browser
        .script(
            "var a = document.querySelector(\"g.node[data-task='check'] a\");
             return a ? a.getAttribute('href') : null;",
            vec![],
        )
        .as_str()
        .map(str::to_string);
    if let Some(href) = job_link {
        visit(&browser, &href, "workflow-task-job", ADMIN);
        assert_eq!(browser.text("#job-state").as_deref(), Some("failed"));
        assert!(browser
            .text("pre#stderr")
            .is_some_and(|t| t.contains("bad")));
    }
}

#[test]
fn console_model_page_plots_one_point_per_recent_run() {
    let Some(tools) = browser::tools() else {
        return;
    };
    let secured = secured(
        2,
        &["--retrain-interval", "1s", "--min-training-runs", "20"],
    );
    let cluster = &secured.cluster;
    let ids: Vec<String> = (0..25)
        .map(|i| {
            let (class, pause) = if i % 3 == 0 {
                ("slow", "0.3")
            } else {
                ("fast", "0.05")
            };
            cluster.submit(&["--name", class, "--", "sleep", pause])
        })
        .collect();
    for id in &ids {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    }
    poll_until(DEADLINE, "a trained model", || {
        let out = cluster.cli(&["--output", "json", "model"]);
        let model: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
        match model["version"].as_u64() {
            Some(v) if v >= 1 => Ok(()),
            _ => Err(model.to_string()),
        }
    });
    // Every finished attempt left a run record (the page's source).
    let runs = cluster
        .cli_ok(&["runs", "export"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(runs, ids.len(), "run records for {} jobs", ids.len());

    let browser = open_browser(&tools, cluster);
    sign_in(&browser, ADMIN, "admin", "login-model");
    visit(&browser, "/jobs", "jobs-many", ADMIN);
    assert_eq!(job_rows(&browser).len(), ids.len(), "one row per job");
    visit(&browser, "/model", "model", ADMIN);
    assert!(
        browser
            .text("#model-version")
            .is_some_and(|v| v.trim().parse::<u64>().is_ok_and(|v| v >= 1)),
        "the page shows no model version"
    );
    // One point per recent run: each of this cluster's jobs, as many as the
    // plot says it shows.
    let points = browser.count("svg.scatter circle.run");
    let label = browser
        .script(
            "var s = document.querySelector('svg.scatter');
             return s ? s.getAttribute('aria-label') : null;",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string();
    let said: Option<usize> = label
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|n| n.parse().ok());
    eprintln!("console: the scatter has {points} points; it says {label:?}");
    assert_eq!(
        said,
        Some(points),
        "the scatter has {points} points but says {label:?}"
    );
    assert_eq!(
        points,
        ids.len(),
        "the scatter has {points} points for {} recent runs",
        ids.len()
    );
}

/// `name=value` of the `augur_session` cookie a response sets, with its
/// attributes.
fn session_cookie(response: &http::Response) -> Option<String> {
    response
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("augur_session="))
        .map(str::to_string)
}

/// The value of the hidden input `name` in a form of `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn form_encode(value: &str) -> String {
    http::encode_query_value(value)
}

#[test]
fn console_headers_cookies_and_csrf_over_plain_http() {
    let secured = secured(1, &[]);
    let cluster = &secured.cluster;
    let addr = cluster.api_url(0).trim_start_matches("http://").to_string();
    let id = cluster.submit(&["--name", "headers", "--", "sh", "-c", "echo out"]);
    cluster.wait_terminal(&id, DEADLINE);

    // No session: sent to sign in, with a fresh session cookie.
    let first = http::get(&addr, "/", &[]).expect("GET /");
    assert!(
        first.status == 303 || first.status == 302 || first.status == 307,
        "GET / without a session: {first:?}"
    );
    let location = first.header("location").unwrap_or_default();
    assert!(location.starts_with("/login"), "redirected to {location:?}");
    let check_headers = |r: &http::Response, what: &str| {
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
        assert!(!csp.contains("unsafe-inline"), "{what}: CSP {csp}");
        assert!(!csp.contains("unsafe-eval"), "{what}: CSP {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: CSP {csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
    };
    check_headers(&first, "GET /");
    let cookie_flags = |c: &str, what: &str| {
        assert!(c.contains("HttpOnly"), "{what}: cookie {c}");
        assert!(c.contains("SameSite=Strict"), "{what}: cookie {c}");
    };
    let anon = session_cookie(&first).expect("a session cookie on the redirect");
    cookie_flags(&anon, "the first cookie");
    let anon_pair = anon.split(';').next().unwrap_or_default().to_string();

    // The sign-in form: CSRF in a hidden field.
    let login = http::get(&addr, location, &[("Cookie", &anon_pair)]).expect("GET /login");
    assert_eq!(login.status, 200, "{login:?}");
    check_headers(&login, "GET /login");
    let csrf = hidden(&login.body, "csrf");

    // Without the CSRF token, or with another, sign-in is refused.
    let body = format!("token={}&next=%2F", form_encode(ADMIN));
    let refused =
        http::post_form(&addr, "/login", &[("Cookie", &anon_pair)], &body).expect("POST /login");
    assert_eq!(refused.status, 403, "sign-in without CSRF: {refused:?}");
    assert!(session_cookie(&refused).is_none_or(|c| c.starts_with(&anon_pair)));
    let body = format!("token={}&next=%2F&csrf=forged", form_encode(ADMIN));
    let refused =
        http::post_form(&addr, "/login", &[("Cookie", &anon_pair)], &body).expect("POST /login");
    assert_eq!(
        refused.status, 403,
        "sign-in with a forged CSRF: {refused:?}"
    );

    // A wrong token: refused, and not echoed back.
    let wrong = "augur_wrongwrongwrongwrong";
    let body = format!("token={wrong}&next=%2F&csrf={csrf}");
    let refused =
        http::post_form(&addr, "/login", &[("Cookie", &anon_pair)], &body).expect("POST /login");
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(!refused.body.contains(wrong), "the refused token is echoed");

    // Signed in: a new session id (no fixation), same flags.
    let body = format!("token={}&next=%2Fjobs&csrf={csrf}", form_encode(ADMIN));
    let signed =
        http::post_form(&addr, "/login", &[("Cookie", &anon_pair)], &body).expect("POST /login");
    assert!((300..400).contains(&signed.status), "sign-in: {signed:?}");
    assert_eq!(signed.header("location"), Some("/jobs"));
    let session = session_cookie(&signed).expect("a session cookie on sign-in");
    cookie_flags(&session, "the signed-in cookie");
    assert!(!session.contains(ADMIN), "the cookie holds the token");
    let pair = session.split(';').next().unwrap_or_default().to_string();
    assert_ne!(pair, anon_pair, "the session id survived sign-in");

    // Every page: the security headers, and never the token.
    let mut session_csrf = String::new();
    for path in [
        "/",
        "/jobs",
        "/jobs/rows",
        &format!("/jobs/{id}"),
        "/workers",
        "/workflows",
        "/schedules",
        "/model",
        "/no-such-page",
    ] {
        let page = http::get(&addr, path, &[("Cookie", &pair)]).expect("GET a page");
        check_headers(&page, path);
        assert!(
            !page.body.contains(ADMIN),
            "{path}: the token is in the HTML"
        );
        assert!(
            !page.body.contains("<script>") && !page.body.contains(" onclick="),
            "{path}: inline script"
        );
        if path == "/" {
            assert_eq!(page.status, 200, "{path}: {page:?}");
            session_csrf = hidden(&page.body, "csrf");
        }
    }
    let assets = http::get(&addr, "/static/live.js", &[]).expect("GET live.js");
    assert_eq!(assets.status, 200);
    check_headers(&assets, "/static/live.js");

    // A state-changing POST without the session's CSRF token: 403, nothing done.
    let held = cluster.submit(&["--name", "held", "--", "sleep", "60"]);
    wait_running(cluster, &held);
    let cancel = format!("/jobs/{held}/cancel");
    for body in ["", "csrf=forged"] {
        let r = http::post_form(&addr, &cancel, &[("Cookie", &pair)], body).expect("POST cancel");
        assert_eq!(r.status, 403, "cancel with body {body:?}: {r:?}");
        check_headers(&r, "a refused POST");
    }
    // The session's CSRF token of another session does not count either.
    let r = http::post_form(
        &addr,
        &cancel,
        &[("Cookie", &anon_pair)],
        &format!("csrf={session_csrf}"),
    )
    .expect("POST cancel");
    assert_ne!(r.status / 100, 2, "{r:?}");
    let job = cluster.get_job(&held);
    assert_eq!(json_str(&job, "state"), "running", "{job}");
    assert_eq!(job["cancel_requested"], json!(false), "{job}");
    // Sign-out needs the CSRF token too.
    let r = http::post_form(&addr, "/logout", &[("Cookie", &pair)], "").expect("POST /logout");
    assert_eq!(r.status, 403, "{r:?}");
    let r = http::post_form(
        &addr,
        "/logout",
        &[("Cookie", &pair)],
        &format!("csrf={session_csrf}"),
    )
    .expect("POST /logout");
    assert!((300..400).contains(&r.status), "{r:?}");
    let after = http::get(&addr, "/", &[("Cookie", &pair)]).expect("GET / after sign-out");
    assert!(
        (300..400).contains(&after.status)
            && after
                .header("location")
                .is_some_and(|l| l.starts_with("/login")),
        "after sign-out: {after:?}"
    );
}
