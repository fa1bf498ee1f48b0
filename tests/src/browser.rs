//! A real browser for the console tests: Debian's `chromium`, headless, driven
//! through `chromedriver` (WebDriver) with fantoccini, behind a blocking API
//! like the rest of the harness.
//!
//! [`tools`] finds chromium and chromedriver, installing them with
//! `scripts/chromium.sh` if they are missing; only where that fails do the
//! tests skip (printing why). [`Browser::start`] runs `chromedriver --port=N`
//! on a free port (its log in the cluster dir) and opens one session; dropping
//! the browser ends the session and kills the driver's process group.
//!
//! Page state is read with small scripts run in the page (a snapshot as
//! JSON), so the live-refreshed parts of a page never hand back stale
//! element references; typing and clicking go through WebDriver, as a person
//! would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::process::{
    find_on_path, free_ports, kill_group, run_bounded, spawn_logged, workspace_root,
};
use crate::wait::poll_until;

/// How long chromedriver may take to answer, and the browser to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one WebDriver command may take (page loads included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `scripts/chromium.sh` may take to install the browser.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The window; screenshots are this wide and at least this tall.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
/// Screenshots of long pages stop here.
const MAX_HEIGHT: u32 = 2400;

/// The browser and its driver.
#[derive(Clone, Debug)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn look() -> Result<Tools, String> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|n| find_on_path(n));
    let chromedriver = find_on_path("chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Ok(Tools {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => Err(format!(
            "chromium {}, chromedriver {}",
            if chromium.is_some() {
                "found"
            } else {
                "missing"
            },
            if chromedriver.is_some() {
                "found"
            } else {
                "missing"
            }
        )),
    }
}

/// Chromium and chromedriver, installed by `scripts/chromium.sh` if missing
/// (once per process). `None`, after printing `skipped: ...` with the reason,
/// only where they cannot be installed.
pub fn tools() -> Option<Tools> {
    static FOUND: OnceLock<Result<Tools, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        look().or_else(|missing| {
            eprintln!("augur-e2e: {missing}; installing with scripts/chromium.sh");
            let script = workspace_root().join("scripts/chromium.sh");
            let outcome = run_bounded(&mut Command::new(&script), INSTALL_TIMEOUT);
            look().map_err(|still| {
                let said = match outcome {
                    Ok(out) => String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join("; "),
                    Err(e) => e,
                };
                format!("{still} and could not be installed ({said})")
            })
        })
    });
    match found {
        Ok(tools) => Some(tools.clone()),
        Err(why) => {
            eprintln!(
                "skipped: the console browser tests need Debian's chromium and chromium-driver: {why}"
            );
            None
        }
    }
}

/// Where screenshots go: `target/console-screenshots/` (git-ignored).
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot dir");
    dir
}

/// One headless chromium session.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    base: String,
}

impl Browser {
    /// Starts chromedriver (logging to `log_dir/chromedriver.log`) and a
    /// headless chromium session; relative URLs are resolved against `base`
    /// (e.g. `http://127.0.0.1:4000`).
    pub fn start(tools: &Tools, log_dir: &Path, base: &str) -> Browser {
        let port = free_ports(1)[0];
        let driver = spawn_logged(
            Command::new(&tools.chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1"),
            &log_dir.join("chromedriver.log"),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the WebDriver client");
        let mut browser = Browser {
            runtime,
            client: None,
            driver,
            base: base.trim_end_matches('/').to_string(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": tools.chromium,
                "args": [
                    "--no-sandbox",
                    "--headless=new",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={WIDTH},{HEIGHT}"),
                    "--hide-scrollbars",
                    "--no-first-run",
                    "--password-store=basic",
                ],
            }),
        );
        let client = poll_until(START_TIMEOUT, "chromedriver and chromium to start", || {
            let mut builder = ClientBuilder::new(HttpConnector::new());
            builder.capabilities(capabilities.clone());
            browser
                .runtime
                .block_on(async {
                    tokio::time::timeout(COMMAND_TIMEOUT, builder.connect(&url)).await
                })
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|e| e.to_string())
        });
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a browser session")
    }

    /// Runs one WebDriver command, panicking with `what` if it fails.
    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        command: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        // The timer is made inside the runtime (it needs its reactor).
        match self
            .runtime
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, command).await })
        {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("browser: {what}: {e}"),
            Err(_) => panic!("browser: {what}: no answer in {COMMAND_TIMEOUT:?}"),
        }
    }

    /// The absolute URL of `path` (a path on the console, or a whole URL).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Opens `path` and waits for it to load.
    pub fn goto(&self, path: &str) {
        let url = self.url(path);
        self.run(&format!("open {url}"), self.client().goto(&url));
    }

    /// The path (and query) of the page shown.
    pub fn path(&self) -> String {
        let url = self.run("read the URL", self.client().current_url());
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The page's HTML as the browser has it now.
    pub fn source(&self) -> String {
        self.run("read the page source", self.client().source())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and
    /// returns what it returns.
    pub fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.run("run a script", self.client().execute(script, args))
    }

    /// Runs `script` in the page with a callback as its last argument and
    /// returns what the callback was given (e.g. the result of a `fetch`).
    pub fn script_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.run(
            "run an async script",
            self.client().execute_async(script, args),
        )
    }

    /// How many elements match the CSS selector.
    pub fn count(&self, css: &str) -> usize {
        self.script(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// The text of the first element matching the selector, if any.
    pub fn text(&self, css: &str) -> Option<String> {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        )
        .as_str()
        .map(str::to_string)
    }

    /// Types `text` into the element matching the selector (WebDriver keys).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.run(
            &format!("find {css}"),
            self.client().find(Locator::Css(css)),
        );
        self.run(&format!("type into {css}"), element.send_keys(text));
    }

    /// Clicks the element matching the selector (WebDriver click) and waits
    /// for the page it leads to (every click here follows a link or submits
    /// a form) to load.
    pub fn click(&self, css: &str) {
        // Set on the document shown now; gone once the next one loads.
        self.script("window.augurBeforeClick = true;", vec![]);
        let element = self.run(
            &format!("find {css}"),
            self.client().find(Locator::Css(css)),
        );
        self.run(&format!("click {css}"), element.click());
        poll_until(
            COMMAND_TIMEOUT,
            format!("the page after clicking {css}"),
            || match self.script(
                "return window.augurBeforeClick ? 'same page' : document.readyState;",
                vec![],
            ) {
                Value::String(s) if s == "complete" => Ok(()),
                other => Err(other.to_string()),
            },
        );
    }

    /// Saves a PNG of the whole page (up to a height limit) as
    /// `target/console-screenshots/NAME.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        // The window's height is the page's plus what the window keeps for
        // itself (headless=new keeps room for a toolbar).
        let height = self
            .script(
                "return Math.ceil(document.documentElement.scrollHeight)
                        + Math.max(0, window.outerHeight - window.innerHeight);",
                vec![],
            )
            .as_u64()
            .unwrap_or(HEIGHT as u64)
            .clamp(HEIGHT as u64, MAX_HEIGHT as u64) as u32;
        self.run(
            "resize the window",
            self.client().set_window_size(WIDTH, height),
        );
        let png = self.run("take a screenshot", self.client().screenshot());
        self.run(
            "resize the window back",
            self.client().set_window_size(WIDTH, HEIGHT),
        );
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("augur-e2e: screenshot {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        kill_group(self.driver.id());
        let _ = self.driver.wait();
    }
}
