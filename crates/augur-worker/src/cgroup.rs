//! Resource limits per attempt: each attempt runs in a cgroup of its own.
//!
//! At start the worker finds which cgroup version the host runs (from
//! `/proc/self/mountinfo`: v2 when the unified hierarchy offers the `memory`
//! controller, else v1 when a v1 `memory` hierarchy is mounted) and the parent
//! under which attempt cgroups are made: `--cgroup-parent`, or by default the
//! `augur/` child of the worker's own cgroup (on v1, in each controller's
//! hierarchy: `memory`, `cpu`, and `pids`/`cpuacct` when mounted). On v2 the
//! default parent needs the worker's own cgroup to delegate `memory cpu pids`
//! to its children; a cgroup holding processes cannot, so the worker first
//! moves itself into the `worker/` leaf of its cgroup (the usual delegation
//! layout).
//!
//! Per attempt ([`Cgroups::create`]) it makes `PARENT/<job id>-<attempt>` and
//! writes the job's limits: memory (`memory.max` and `memory.swap.max = 0`,
//! or v1 `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`), CPU
//! (`cpu.max`, or v1 `cpu.cfs_quota_us` per a 100 ms `cpu.cfs_period_us`) and
//! `pids.max`. The child process joins it between `fork` and `exec` (before
//! dropping privileges), so nothing it starts can escape. When the attempt
//! ends the whole cgroup is killed and waited empty, its accounting read
//! (peak memory, CPU time, OOM kills) and the directory removed.
//!
//! The pure file formats live in [`parse`]; this module does the I/O.

mod parse;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

pub use parse::{cfs_millis, cpu_max_millis, meminfo_total, memory_limit, Membership, Mount};

/// Default `--max-job-pids`: processes and threads one attempt may have.
pub const DEFAULT_MAX_JOB_PIDS: u64 = 4096;

/// How long the end of an attempt waits for its cgroup to empty.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cgroup hierarchy the host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Why resource limits cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupError {
    /// `--cgroup-parent` names something unusable (always fatal: bad input).
    #[error("--cgroup-parent {path}: {reason}")]
    Parent { path: PathBuf, reason: String },
    /// No writable hierarchy (fatal with `--enforce-resources`).
    #[error("cannot enforce job resource limits: {0}")]
    Unavailable(String),
}

/// The worker's cgroup settings (`--cgroup-parent`, `--max-job-pids`,
/// `--enforce-resources`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupOptions {
    pub parent: Option<PathBuf>,
    pub max_job_pids: u64,
    /// Refuse to start rather than run jobs without limits.
    pub enforce: bool,
}

impl Default for CgroupOptions {
    fn default() -> Self {
        CgroupOptions {
            parent: None,
            max_job_pids: DEFAULT_MAX_JOB_PIDS,
            enforce: false,
        }
    }
}

/// What the host says about cgroups: the text of `/proc/self/mountinfo` and
/// `/proc/self/cgroup` (tests pass a fake tree's).
#[derive(Clone, Debug, Default)]
pub struct Host {
    pub mountinfo: String,
    pub self_cgroup: String,
}

impl Host {
    /// This process's view.
    pub fn current() -> io::Result<Host> {
        Ok(Host {
            mountinfo: fs::read_to_string("/proc/self/mountinfo")?,
            self_cgroup: fs::read_to_string("/proc/self/cgroup")?,
        })
    }

    /// The directory of this process's cgroup in the hierarchy that has
    /// `controller` (v1), or in the unified hierarchy (`None`).
    pub fn own_dir(&self, controller: Option<&str>) -> Option<PathBuf> {
        let mounts = parse::cgroup_mounts(&self.mountinfo);
        let members = parse::self_cgroup(&self.self_cgroup);
        let (mount, member) = match controller {
            Some(c) => (
                mounts
                    .iter()
                    .find(|m| m.fs_type == "cgroup" && m.controllers.iter().any(|x| x == c))?,
                members
                    .iter()
                    .find(|m| m.controllers.iter().any(|x| x == c))?,
            ),
            None => (
                mounts.iter().find(|m| m.fs_type == "cgroup2")?,
                members
                    .iter()
                    .find(|m| m.hierarchy == 0 && m.controllers.is_empty())?,
            ),
        };
        parse::cgroup_dir(mount, &member.path)
    }
}

/// One parent directory of attempt cgroups (v2: the only one; v1: one per
/// mounted hierarchy, `cpu` and `cpuacct` sharing one when co-mounted).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dir {
    path: PathBuf,
    memory: bool,
    cpu: bool,
    cpuacct: bool,
    pids: bool,
}

/// Where and how attempt cgroups are made; resolved once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroups {
    version: Version,
    parents: Vec<Dir>,
    max_pids: u64,
}

/// The limits of one attempt (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_millis: u64,
}

impl Cgroups {
    /// Resolves the settings on this host. With `--cgroup-parent` a bad parent
    /// is an error; otherwise an unusable host is an error only with
    /// `--enforce-resources`, and a single warning (returning `None`) without.
    pub fn setup(options: &CgroupOptions) -> Result<Option<Cgroups>, CgroupError> {
        let prepared = Host::current()
            .map_err(|e| CgroupError::Unavailable(format!("cannot read /proc/self: {e}")))
            .and_then(|host| Cgroups::prepare(&host, options));
        match prepared {
            Ok(cgroups) => {
                info!(
                    version = %cgroups.version,
                    parents = ?cgroups.parent_dirs(),
                    max_job_pids = cgroups.max_pids,
                    "job resource limits enforced: each attempt runs in its own cgroup"
                );
                Ok(Some(cgroups))
            }
            Err(e) if options.parent.is_some() || options.enforce => Err(e),
            Err(e) => {
                warn!(
                    error = %e,
                    "job resource limits are NOT enforced (--cpu/--memory are only used for \
                     placement); pass --enforce-resources to refuse to start instead"
                );
                Ok(None)
            }
        }
    }

    /// [`Cgroups::setup`] on a given host view, without logging or fallback.
    pub fn prepare(host: &Host, options: &CgroupOptions) -> Result<Cgroups, CgroupError> {
        let mounts = parse::cgroup_mounts(&host.mountinfo);
        let version = detect_version(&mounts).ok_or_else(|| {
            let reason = "no cgroup hierarchy with the memory controller is mounted".to_string();
            match &options.parent {
                Some(path) => CgroupError::Parent {
                    path: path.clone(),
                    reason,
                },
                None => CgroupError::Unavailable(reason),
            }
        })?;
        if options.max_job_pids == 0 {
            return Err(CgroupError::Unavailable(
                "--max-job-pids must be at least 1".into(),
            ));
        }
        let parents = match version {
            Version::V1 => prepare_v1(host, &mounts, options)?,
            Version::V2 => prepare_v2(host, &mounts, options)?,
        };
        Ok(Cgroups {
            version,
            parents,
            max_pids: options.max_job_pids,
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The parent directories of attempt cgroups.
    pub fn parent_dirs(&self) -> Vec<&Path> {
        self.parents.iter().map(|d| d.path.as_path()).collect()
    }

    /// Makes the cgroup of one attempt (`name` is `<job id>-<attempt>`) and
    /// writes its limits. On failure nothing is left behind.
    pub fn create(&self, name: &str, limits: Limits) -> Result<JobCgroup, String> {
        if !parse::safe_name(name) {
            return Err(format!("{name:?} is not a usable cgroup name"));
        }
        let mut job = JobCgroup {
            version: self.version,
            dirs: Vec::new(),
            memory_limit: limits.memory_bytes,
            finished: AtomicBool::new(false),
        };
        for parent in &self.parents {
            let dir = Dir {
                path: parent.path.join(name),
                ..parent.clone()
            };
            match fs::create_dir(&dir.path) {
                Ok(()) => {}
                // Left by a worker that crashed mid-attempt: reuse it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create cgroup {}: {e}", dir.path.display())),
            }
            job.dirs.push(dir.clone());
            self.write_limits(&dir, limits)?;
        }
        Ok(job)
    }

    fn write_limits(&self, dir: &Dir, limits: Limits) -> Result<(), String> {
        let set = |file: &str, value: &str| write_file(&dir.path.join(file), value);
        let exists = |file: &str| dir.path.join(file).exists();
        match self.version {
            Version::V2 => {
                if limits.memory_bytes > 0 {
                    set("memory.max", &limits.memory_bytes.to_string())?;
                    if exists("memory.swap.max") {
                        set("memory.swap.max", "0")?;
                    }
                }
                if limits.cpu_millis > 0 {
                    set("cpu.max", &parse::cpu_max_line(limits.cpu_millis))?;
                }
                if exists("pids.max") {
                    set("pids.max", &self.max_pids.to_string())?;
                }
            }
            Version::V1 => {
                if dir.memory && limits.memory_bytes > 0 {
                    let bytes = limits.memory_bytes.to_string();
                    set("memory.limit_in_bytes", &bytes)?;
                    // memory+swap: without it the limit only pushes pages to swap.
                    if exists("memory.memsw.limit_in_bytes") {
                        set("memory.memsw.limit_in_bytes", &bytes)?;
                    }
                }
                if dir.cpu && limits.cpu_millis > 0 {
                    set("cpu.cfs_period_us", &parse::CPU_PERIOD_US.to_string())?;
                    set(
                        "cpu.cfs_quota_us",
                        &parse::cpu_quota_us(limits.cpu_millis).to_string(),
                    )?;
                }
                if dir.pids {
                    set("pids.max", &self.max_pids.to_string())?;
                }
            }
        }
        Ok(())
    }
}

/// v2 when the unified hierarchy offers `memory` and no v1 memory hierarchy
/// is mounted beside it (a hybrid host keeps its controllers on v1).
fn detect_version(mounts: &[Mount]) -> Option<Version> {
    let v1_memory = mounts
        .iter()
        .any(|m| m.fs_type == "cgroup" && m.controllers.iter().any(|c| c == "memory"));
    if v1_memory {
        return Some(Version::V1);
    }
    let v2 = mounts.iter().find(|m| m.fs_type == "cgroup2")?;
    let controllers = fs::read_to_string(v2.mount_point.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "memory")
        .then_some(Version::V2)
}

fn prepare_v1(
    host: &Host,
    mounts: &[Mount],
    options: &CgroupOptions,
) -> Result<Vec<Dir>, CgroupError> {
    let mut dirs: Vec<Dir> = Vec::new();
    for controller in ["memory", "cpu", "cpuacct", "pids"] {
        let Some(mount) = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.controllers.iter().any(|c| c == controller))
        else {
            if controller == "memory" || controller == "cpu" {
                return Err(CgroupError::Unavailable(format!(
                    "cgroup v1 without a mounted {controller} hierarchy"
                )));
            }
            warn!(
                controller,
                "cgroup v1 hierarchy not mounted: that part of the accounting or limits is skipped"
            );
            continue;
        };
        let path = match &options.parent {
            Some(given) => {
                let path = parse::parent_within(given, &mount.mount_point);
                check_parent(given, &path)?;
                path
            }
            None => {
                let own = host.own_dir(Some(controller)).ok_or_else(|| {
                    CgroupError::Unavailable(format!(
                        "this process's {controller} cgroup is not visible under {}",
                        mount.mount_point.display()
                    ))
                })?;
                default_parent(&own.join("augur"))?
            }
        };
        let dir = match dirs.iter_mut().find(|d| d.path == path) {
            Some(dir) => dir,
            None => {
                dirs.push(Dir {
                    path,
                    memory: false,
                    cpu: false,
                    cpuacct: false,
                    pids: false,
                });
                dirs.last_mut()
                    .ok_or_else(|| CgroupError::Unavailable("unreachable".into()))?
            }
        };
        // Co-mounted controllers (`cpu,cpuacct`) share one directory.
        for c in &mount.controllers {
            match c.as_str() {
                "memory" => dir.memory = true,
                "cpu" => dir.cpu = true,
                "cpuacct" => dir.cpuacct = true,
                "pids" => dir.pids = true,
                _ => {}
            }
        }
    }
    for dir in &dirs {
        probe_writable(&dir.path).map_err(|reason| match &options.parent {
            Some(given) => CgroupError::Parent {
                path: given.clone(),
                reason,
            },
            None => CgroupError::Unavailable(reason),
        })?;
    }
    Ok(dirs)
}

/// Controllers attempt cgroups need (`pids` is used when offered).
const V2_REQUIRED: [&str; 2] = ["memory", "cpu"];

fn prepare_v2(
    host: &Host,
    mounts: &[Mount],
    options: &CgroupOptions,
) -> Result<Vec<Dir>, CgroupError> {
    let mount = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2")
        .ok_or_else(|| CgroupError::Unavailable("no cgroup2 mount".into()))?;
    let path = match &options.parent {
        Some(given) => {
            let path = parse::parent_within(given, &mount.mount_point);
            check_parent(given, &path)?;
            enable_v2(&path).map_err(|reason| CgroupError::Parent {
                path: given.clone(),
                reason,
            })?;
            path
        }
        None => {
            let own = host.own_dir(None).ok_or_else(|| {
                CgroupError::Unavailable("this process's cgroup v2 path is not visible".into())
            })?;
            if enable_v2(&own).is_err() && own != mount.mount_point {
                // A cgroup with processes cannot delegate controllers to its
                // children: move this worker into a leaf of its own first.
                let leaf = own.join("worker");
                create_dir(&leaf).map_err(CgroupError::Unavailable)?;
                write_file(&leaf.join("cgroup.procs"), "0").map_err(CgroupError::Unavailable)?;
                info!(leaf = %leaf.display(), "moved the worker into a leaf cgroup to delegate controllers");
            }
            enable_v2(&own).map_err(CgroupError::Unavailable)?;
            let path = default_parent(&own.join("augur"))?;
            enable_v2(&path).map_err(CgroupError::Unavailable)?;
            path
        }
    };
    probe_writable(&path).map_err(|reason| match &options.parent {
        Some(given) => CgroupError::Parent {
            path: given.clone(),
            reason,
        },
        None => CgroupError::Unavailable(reason),
    })?;
    // What the parent may enable for its children: enable_v2 enabled all of it.
    let offered = fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| offered.split_whitespace().any(|x| x == c);
    Ok(vec![Dir {
        path,
        memory: has("memory"),
        cpu: has("cpu"),
        cpuacct: has("cpu"),
        pids: has("pids"),
    }])
}

/// Makes the controllers attempts need available to `dir`'s children.
fn enable_v2(dir: &Path) -> Result<(), String> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", dir.join("cgroup.controllers").display()))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    for needed in V2_REQUIRED {
        if !available.contains(&needed) {
            return Err(format!(
                "controller {needed} is not delegated to {} (its cgroup.controllers: {:?})",
                dir.display(),
                available.join(" ")
            ));
        }
    }
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).unwrap_or_default();
    for controller in ["memory", "cpu", "pids"] {
        if available.contains(&controller) && !enabled.split_whitespace().any(|c| c == controller) {
            write_file(&control, &format!("+{controller}"))?;
        }
    }
    Ok(())
}

/// A given `--cgroup-parent` must exist as a directory.
fn check_parent(given: &Path, path: &Path) -> Result<(), CgroupError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(CgroupError::Parent {
            path: given.to_path_buf(),
            reason: format!("{} is not a directory", path.display()),
        }),
        Err(e) => Err(CgroupError::Parent {
            path: given.to_path_buf(),
            reason: format!(
                "{}: {e} (create it first, e.g. mkdir {})",
                path.display(),
                path.display()
            ),
        }),
    }
}

/// The default parent, made if missing.
fn default_parent(path: &Path) -> Result<PathBuf, CgroupError> {
    create_dir(path).map_err(CgroupError::Unavailable)?;
    Ok(path.to_path_buf())
}

fn create_dir(path: &Path) -> Result<(), String> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// Whether children can be made under `dir`: makes and removes one.
fn probe_writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!("augur-probe-{}", std::process::id()));
    fs::create_dir(&probe).map_err(|e| {
        format!(
            "cannot create cgroups under {}: {e} (the worker needs write access, usually root)",
            dir.display()
        )
    })?;
    // A fake tree in tests is a plain directory that may hold files.
    if fs::remove_dir(&probe).is_err() {
        let _ = fs::remove_dir_all(&probe);
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

/// Accounting of a finished attempt's cgroup (0 / `None`: not available).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub peak_memory_bytes: u64,
    pub cpu_us: u64,
    /// Processes the OOM killer ended (`None` where the kernel does not say).
    pub oom_kills: Option<u64>,
    /// v1: times the memory limit was hit.
    pub memory_failcnt: u64,
}

/// The cgroup of one attempt. Dropping it kills what is left in it and
/// removes it; [`JobCgroup::finish`] does the same and reads its accounting.
#[derive(Debug)]
pub struct JobCgroup {
    version: Version,
    dirs: Vec<Dir>,
    memory_limit: u64,
    finished: AtomicBool,
}

impl JobCgroup {
    /// The memory limit written, bytes (0: none).
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// Opens the `cgroup.procs` files the child writes its pid into (close-on-exec).
    pub fn procs_files(&self) -> Result<Vec<OwnedFd>, String> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.path.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
            })
            .collect()
    }

    /// The processes in the cgroup (in any of its hierarchies).
    pub fn pids(&self) -> Vec<libc::pid_t> {
        let mut pids: Vec<libc::pid_t> = self
            .dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.path.join("cgroup.procs")).ok())
            .flat_map(|text| parse::pids(&text))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to every process in the cgroup (SIGKILL through
    /// `cgroup.kill` where v2 has it, which also catches processes forking
    /// at that moment).
    pub fn signal(&self, signal: libc::c_int) {
        if signal == libc::SIGKILL && self.version == Version::V2 {
            if let Some(dir) = self.dirs.first() {
                if fs::write(dir.path.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        for pid in self.pids() {
            // SAFETY: plain integers. The pid was listed in the attempt's cgroup
            // an instant ago; it could only name another process if that one
            // exited and its pid was reused in between.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Kills the cgroup until it is empty (a fork bomb races single passes),
    /// for at most `timeout`. Whether it emptied.
    pub fn kill_until_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pids().is_empty() {
                return true;
            }
            self.signal(libc::SIGKILL);
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads the accounting (call once the processes are gone).
    pub fn stats(&self) -> Stats {
        let read = |dir: &Dir, file: &str| fs::read_to_string(dir.path.join(file)).ok();
        let mut stats = Stats::default();
        for dir in &self.dirs {
            match self.version {
                Version::V2 => {
                    stats.peak_memory_bytes = read(dir, "memory.peak")
                        .and_then(|t| parse::single_value(&t))
                        .unwrap_or(0);
                    stats.cpu_us = read(dir, "cpu.stat")
                        .and_then(|t| parse::keyed_value(&t, "usage_usec"))
                        .unwrap_or(0);
                    stats.oom_kills =
                        read(dir, "memory.events").and_then(|t| parse::keyed_value(&t, "oom_kill"));
                }
                Version::V1 => {
                    if dir.memory {
                        stats.peak_memory_bytes = read(dir, "memory.max_usage_in_bytes")
                            .and_then(|t| parse::single_value(&t))
                            .unwrap_or(0);
                        stats.oom_kills = read(dir, "memory.oom_control")
                            .and_then(|t| parse::keyed_value(&t, "oom_kill"));
                        stats.memory_failcnt = read(dir, "memory.failcnt")
                            .and_then(|t| parse::single_value(&t))
                            .unwrap_or(0);
                    }
                    if dir.cpuacct {
                        stats.cpu_us = read(dir, "cpuacct.usage")
                            .and_then(|t| parse::single_value(&t))
                            .map(|ns| ns / 1000)
                            .unwrap_or(0);
                    }
                }
            }
        }
        stats
    }

    /// Kills what is left, reads the accounting and removes the cgroup.
    /// Blocking (it waits for the cgroup to empty, at most a few seconds).
    pub fn finish(&self) -> Stats {
        if !self.kill_until_empty(DRAIN_TIMEOUT) {
            warn!(cgroup = ?self.dirs.first().map(|d| &d.path), "processes of a finished attempt survived SIGKILL; its cgroup stays");
        }
        let stats = self.stats();
        self.remove();
        stats
    }

    /// Removes the cgroup's directories (retrying briefly: the kernel frees
    /// a cgroup shortly after its last process is reaped).
    fn remove(&self) {
        self.finished.store(true, Ordering::SeqCst);
        for dir in &self.dirs {
            let mut tries = 0;
            loop {
                match fs::remove_dir(&dir.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if tries < 50 => {
                        debug!(cgroup = %dir.path.display(), error = %e, "cgroup not removable yet");
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        warn!(cgroup = %dir.path.display(), error = %e, "cannot remove an attempt's cgroup");
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            self.signal(libc::SIGKILL);
            self.kill_until_empty(Duration::from_millis(500));
            self.remove();
        }
    }
}

/// Makes a command join the cgroup between `fork` and `exec` by writing its
/// own pid into each already opened `cgroup.procs`. Register it before any
/// privilege drop (v2 checks the writer's rights at write time).
pub(crate) fn join_before_exec(command: &mut std::process::Command, files: &[OwnedFd]) {
    use std::os::unix::process::CommandExt;
    let fds: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
    let closure = move || -> io::Result<()> {
        // Only async-signal-safe calls: getpid, write, and arithmetic on a
        // stack buffer; nothing allocates.
        // SAFETY: getpid takes no arguments and cannot fail.
        let pid = unsafe { libc::getpid() };
        let mut buf = [0u8; 12];
        let digits = parse::pid_digits(pid, &mut buf);
        for fd in &fds {
            // SAFETY: `fd` is open in the child (inherited; the parent keeps the
            // OwnedFd alive until spawn returns) and `digits` is a live buffer.
            let written = unsafe { libc::write(*fd, digits.as_ptr().cast(), digits.len()) };
            if written < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure is async-signal-safe (see above).
    unsafe { command.pre_exec(closure) };
}
