//! What this worker offers to jobs: CPU (millicores) and memory (bytes).
//!
//! Cores are `available_parallelism` (which honours CPU affinity) or the CPU
//! quota of the worker's cgroup if that is lower; memory is `MemTotal` of
//! `/proc/meminfo` or the memory limit of the worker's cgroup if lower. The
//! limits of every ancestor cgroup count too (a parent's limit binds its
//! children). Placement never puts more requested CPU or memory on a worker
//! than its capacity.

use std::fs;
use std::path::{Path, PathBuf};

use augur_core::Capacity;

use crate::cgroup::{self, Host};

/// The limits found on the way from a cgroup directory up to its mount point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// This machine's capacity, as seen from this process.
pub fn detect() -> Capacity {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let limits = Host::current()
        .map(|host| own_limits(&host))
        .unwrap_or_default();
    from_parts(cores, &meminfo, limits)
}

/// Capacity from the machine's cores, `/proc/meminfo` and the cgroup limits.
pub fn from_parts(cores: u64, meminfo: &str, limits: CgroupLimits) -> Capacity {
    let machine_cpu = cores.max(1).saturating_mul(1000);
    let cpu_millis = match limits.cpu_millis {
        Some(quota) if quota > 0 => quota.min(machine_cpu),
        _ => machine_cpu,
    };
    let machine_memory = cgroup::meminfo_total(meminfo).unwrap_or(0);
    let memory_bytes = match (limits.memory_bytes, machine_memory) {
        (Some(limit), 0) => limit,
        (Some(limit), total) => limit.min(total),
        (None, total) => total,
    };
    Capacity {
        cpu_millis,
        memory_bytes,
    }
}

/// The lowest CPU and memory limits of this process's cgroup and its ancestors.
pub fn own_limits(host: &Host) -> CgroupLimits {
    let mut limits = CgroupLimits::default();
    // v2: both in one directory chain.
    if let Some(dir) = host.own_dir(None) {
        for d in ancestors(&dir) {
            lower(
                &mut limits.cpu_millis,
                read(&d, "cpu.max").and_then(|t| cgroup::cpu_max_millis(&t)),
            );
            lower(
                &mut limits.memory_bytes,
                read(&d, "memory.max").and_then(|t| cgroup::memory_limit(&t)),
            );
        }
    }
    // v1: per controller.
    if let Some(dir) = host.own_dir(Some("cpu")) {
        for d in ancestors(&dir) {
            if let (Some(q), Some(p)) =
                (read(&d, "cpu.cfs_quota_us"), read(&d, "cpu.cfs_period_us"))
            {
                lower(&mut limits.cpu_millis, cgroup::cfs_millis(&q, &p));
            }
        }
    }
    if let Some(dir) = host.own_dir(Some("memory")) {
        for d in ancestors(&dir) {
            lower(
                &mut limits.memory_bytes,
                read(&d, "memory.limit_in_bytes").and_then(|t| cgroup::memory_limit(&t)),
            );
        }
    }
    limits
}

fn lower(slot: &mut Option<u64>, found: Option<u64>) {
    if let Some(found) = found {
        *slot = Some(slot.map_or(found, |have| have.min(found)));
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

/// `dir` and its parents up to the cgroup mount (a directory without a
/// `cgroup.procs` ends the walk).
fn ancestors(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| d.join("cgroup.procs").exists())
        .map(Path::to_path_buf)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        8000000 kB\nMemFree:  100 kB\n";

    #[test]
    fn machine_figures_without_cgroup_limits() {
        let c = from_parts(4, MEMINFO, CgroupLimits::default());
        assert_eq!(c.cpu_millis, 4000);
        assert_eq!(c.memory_bytes, 8_000_000 * 1024);
    }

    #[test]
    fn a_lower_cgroup_limit_wins_and_a_higher_one_does_not() {
        let lower = CgroupLimits {
            cpu_millis: Some(1500),
            memory_bytes: Some(1 << 30),
        };
        assert_eq!(
            from_parts(4, MEMINFO, lower),
            Capacity {
                cpu_millis: 1500,
                memory_bytes: 1 << 30
            }
        );
        let higher = CgroupLimits {
            cpu_millis: Some(64_000),
            memory_bytes: Some(1 << 50),
        };
        assert_eq!(from_parts(2, MEMINFO, higher).cpu_millis, 2000);
        assert_eq!(
            from_parts(2, MEMINFO, higher).memory_bytes,
            8_000_000 * 1024
        );
    }

    #[test]
    fn cgroup_limits_are_the_lowest_along_the_ancestors() {
        let root = tempfile::tempdir().expect("tempdir");
        let v2 = root.path().join("unified");
        let own = v2.join("a").join("b");
        fs::create_dir_all(&own).expect("mkdir");
        for (dir, cpu, mem) in [
            (&v2, "max 100000", "max"),
            (&v2.join("a"), "50000 100000", "1073741824"),
            (&own, "max 100000", "2147483648"),
        ] {
            fs::write(dir.join("cgroup.procs"), "").expect("write");
            fs::write(dir.join("cpu.max"), cpu).expect("write");
            fs::write(dir.join("memory.max"), mem).expect("write");
        }
        let host = Host {
            mountinfo: format!(
                "30 20 0:26 / {} rw,nosuid - cgroup2 cgroup2 rw\n",
                v2.display()
            ),
            self_cgroup: "0::/a/b\n".into(),
        };
        assert_eq!(
            own_limits(&host),
            CgroupLimits {
                cpu_millis: Some(500),
                memory_bytes: Some(1 << 30)
            }
        );
    }
}
