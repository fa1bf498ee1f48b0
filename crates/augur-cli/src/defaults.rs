//! The defaults of the `coordinator` and `worker` flags, read from the
//! libraries' own configurations (`CoordinatorConfig::new`, `WorkerConfig::new`,
//! `ProcessConfig::default`), so each default is written once: `--help` shows
//! and the flags use exactly what a program embedding the libraries gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use augur_coordinator::CoordinatorConfig;
use augur_worker::executor::ProcessConfig;
use augur_worker::WorkerConfig;

/// The coordinator library's defaults.
pub fn coordinator() -> &'static CoordinatorConfig {
    static CONFIG: OnceLock<CoordinatorConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        CoordinatorConfig::new("", Vec::new(), SocketAddr::from(([127, 0, 0, 1], 7070)))
    })
}

/// The worker library's defaults.
pub fn worker() -> &'static WorkerConfig {
    static CONFIG: OnceLock<WorkerConfig> = OnceLock::new();
    CONFIG.get_or_init(|| WorkerConfig::new("", Vec::new(), PathBuf::new()))
}

/// The process executor's defaults.
pub fn process() -> &'static ProcessConfig {
    static CONFIG: OnceLock<ProcessConfig> = OnceLock::new();
    CONFIG.get_or_init(ProcessConfig::default)
}

/// A default duration as a flag's default text ("5s", "1day"), made once:
/// clap's `default_value` wants a `&'static str`.
macro_rules! duration_default {
    ($value:expr) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TEXT.get_or_init(|| humantime::format_duration($value).to_string())
            .as_str()
    }};
}
pub(crate) use duration_default;
