//! Pure parsing and formatting of cgroup files (no I/O), so every format is
//! unit-tested on both cgroup versions whatever the test machine runs.

use std::path::{Path, PathBuf};

/// CFS period written with every CPU limit, microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts, microseconds.
pub const MIN_CPU_QUOTA_US: u64 = 1_000;
/// v1 reports "no limit" as a huge number (`PAGE_COUNTER_MAX` pages, rounded);
/// anything from here up is read as unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// One line of `/proc/self/cgroup`: hierarchy id, controllers (empty for the
/// v2 line `0::/path`), and the cgroup's path within its hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/self/cgroup` (`id:controllers:path` per line). Lines that do
/// not parse are skipped: the file is the kernel's, not user input, and a
/// future format must not stop the worker.
pub fn self_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| c.strip_prefix("name=").unwrap_or(c).to_string())
                .collect();
            let path = parts.next()?.to_string();
            path.starts_with('/').then_some(Membership {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// One cgroup mount from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The cgroup the mount shows at its mount point (`/` unless a container
    /// bind-mounted a sub-tree).
    pub root: String,
    pub mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    pub fs_type: String,
    /// v1: the controllers of the hierarchy (from the super options).
    pub controllers: Vec<String>,
}

/// The cgroup mounts listed in `/proc/self/mountinfo`.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<Mount> {
    const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fs_type = right.next()?;
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("");
            let controllers = if fs_type == "cgroup" {
                super_options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            Some(Mount {
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                fs_type: fs_type.to_string(),
                controllers,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(value) => {
                out.push(value);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` in a hierarchy mounted at `mount` (which
/// shows the cgroup `mount.root` at its mount point). `None` if the cgroup is
/// not visible through this mount.
pub fn cgroup_dir(mount: &Mount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let rest = rest.trim_start_matches('/');
    Some(if rest.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rest)
    })
}

/// A `--cgroup-parent` value as a path within a hierarchy mounted at
/// `mount_point`: either a cgroup path (`/augur`) or a directory under the
/// mount point (`/sys/fs/cgroup/augur`, or on v1 `/sys/fs/cgroup/memory/augur`).
pub fn parent_within(given: &Path, mount_point: &Path) -> PathBuf {
    match given.strip_prefix(mount_point) {
        Ok(rest) => mount_point.join(rest),
        Err(_) => {
            let relative = given.strip_prefix("/").unwrap_or(given);
            mount_point.join(relative)
        }
    }
}

/// The value of `key` in a flat keyed file (`memory.events`, `cpu.stat`,
/// v1 `memory.oom_control`): lines of `key value`.
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next()? == key)
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// A single number file (`memory.peak`, `cpuacct.usage`, v1 limits).
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A memory limit file: `max` (v2) or v1's huge "unlimited" number are `None`.
pub fn memory_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>().ok().filter(|&v| v < V1_UNLIMITED)
}

/// The CPU limit in millicores of a v2 `cpu.max` (`QUOTA PERIOD`, or
/// `max PERIOD`): `None` when unlimited or unreadable.
pub fn cpu_max_millis(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(CPU_PERIOD_US);
    quota_millis(quota, period)
}

/// The CPU limit in millicores of v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`
/// (a quota of -1 is unlimited).
pub fn cfs_millis(quota: &str, period: &str) -> Option<u64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    quota_millis(u64::try_from(quota).ok()?, period)
}

fn quota_millis(quota: u64, period: u64) -> Option<u64> {
    (period > 0).then(|| quota.saturating_mul(1000) / period)
}

/// The CFS quota (microseconds per [`CPU_PERIOD_US`]) for `millis` millicores.
pub fn cpu_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_CPU_QUOTA_US)
}

/// The v2 `cpu.max` line for `millis` millicores.
pub fn cpu_max_line(millis: u64) -> String {
    format!("{} {CPU_PERIOD_US}", cpu_quota_us(millis))
}

/// `MemTotal` of `/proc/meminfo`, bytes.
pub fn meminfo_total(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(value.saturating_mul(1024)),
            Some(_) => None,
        }
    })
}

/// The pids listed in a `cgroup.procs` file.
pub fn pids(text: &str) -> Vec<libc::pid_t> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p > 0)
        .collect()
}

/// Writes `pid` in decimal into `buf` and returns the digits: for the child
/// between fork and exec, where allocating is not allowed.
pub fn pid_digits(pid: libc::pid_t, buf: &mut [u8; 12]) -> &[u8] {
    let mut n = pid.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Whether a cgroup name made from a job id and attempt is safe as one path
/// component (job ids are ULIDs; this keeps a hostile id out of the tree).
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
