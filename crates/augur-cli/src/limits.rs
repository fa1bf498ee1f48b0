//! `augur worker` flags for job resource limits (cgroups): where attempt
//! cgroups go, the pids cap, and whether to refuse to start without them.

use std::path::PathBuf;

use augur_worker::cgroup::{CgroupOptions, Cgroups, DEFAULT_MAX_JOB_PIDS};
use augur_worker::executor::Executor;
use augur_worker::WorkerConfig;
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Cgroup under which each attempt gets its own cgroup: a cgroup path
    /// (`/augur`) or its directory under the cgroup mount; it must exist and
    /// be writable. Default: the `augur/` child of the worker's own cgroup
    /// (per controller on cgroup v1), made if missing.
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<PathBuf>,
    /// Most processes and threads one attempt may have (`pids.max`).
    #[arg(long, default_value_t = DEFAULT_MAX_JOB_PIDS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_job_pids: u64,
    /// Refuse to start unless jobs' --cpu/--memory limits can be enforced
    /// (a writable cgroup v1 or v2 hierarchy). Default: enforce when
    /// possible, warn once when not.
    #[arg(long)]
    pub enforce_resources: bool,
}

impl LimitArgs {
    /// Resolves the cgroup settings on this host into the worker's executor.
    pub fn apply(&self, config: &mut WorkerConfig) -> anyhow::Result<()> {
        match &mut config.executor {
            Executor::Process(process) => {
                process.cgroups = Cgroups::setup(&CgroupOptions {
                    parent: self.cgroup_parent.clone(),
                    max_job_pids: self.max_job_pids,
                    enforce: self.enforce_resources,
                })?;
            }
            Executor::Null => {
                if self.enforce_resources || self.cgroup_parent.is_some() {
                    anyhow::bail!(
                        "--enforce-resources and --cgroup-parent apply to --executor process only"
                    );
                }
            }
        }
        Ok(())
    }
}
