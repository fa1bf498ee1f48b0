//! Path and format logic of both cgroup versions, on a fake cgroupfs in a temp
//! dir (real cgroups are exercised by the e2e test `cgroups`).

use std::fs;
use std::path::Path;

use super::parse::*;
use super::*;

/// This machine's /proc/self/cgroup (v1, memory in a sub-tree, hybrid `0::/`).
const SELF_V1: &str =
    "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/4a23\n3:cpu,cpuacct:/\n0::/\n";

#[test]
fn self_cgroup_lines_parse_on_both_versions() {
    let members = self_cgroup(SELF_V1);
    assert_eq!(members.len(), 5);
    assert_eq!(
        members[2],
        Membership {
            hierarchy: 4,
            controllers: vec!["memory".into()],
            path: "/process_api/4a23".into()
        }
    );
    assert_eq!(members[3].controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(members[0].controllers, vec!["systemd"]);
    let v2 = self_cgroup("0::/system.slice/augur.service\n");
    assert_eq!(v2[0].hierarchy, 0);
    assert!(v2[0].controllers.is_empty());
    assert_eq!(v2[0].path, "/system.slice/augur.service");
    assert!(self_cgroup("garbage\n1:x\n").is_empty());
}

#[test]
fn mountinfo_gives_cgroup_mounts_with_their_controllers() {
    let text = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
33 25 0:29 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
";
    let mounts = cgroup_mounts(text);
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    assert_eq!(mounts[0].controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(
        mounts[0].mount_point,
        Path::new("/sys/fs/cgroup/cpu,cpuacct")
    );
    assert_eq!(mounts[1].root, "/docker/abc");
    assert_eq!(mounts[2].fs_type, "cgroup2");
    assert!(mounts[2].controllers.is_empty());
    assert_eq!(mounts[3].mount_point, Path::new("/mnt/with space"));
}

#[test]
fn cgroup_dirs_account_for_the_mount_root() {
    let mount = Mount {
        root: "/docker/abc".into(),
        mount_point: "/sys/fs/cgroup/memory".into(),
        fs_type: "cgroup".into(),
        controllers: vec!["memory".into()],
    };
    assert_eq!(
        cgroup_dir(&mount, "/docker/abc/job"),
        Some("/sys/fs/cgroup/memory/job".into())
    );
    assert_eq!(
        cgroup_dir(&mount, "/docker/abc"),
        Some("/sys/fs/cgroup/memory".into())
    );
    assert_eq!(cgroup_dir(&mount, "/docker/abcdef"), None);
    assert_eq!(cgroup_dir(&mount, "/other"), None);
    let root = Mount {
        root: "/".into(),
        ..mount
    };
    assert_eq!(cgroup_dir(&root, "/"), Some("/sys/fs/cgroup/memory".into()));
    assert_eq!(
        cgroup_dir(&root, "/a/b"),
        Some("/sys/fs/cgroup/memory/a/b".into())
    );
}

#[test]
fn cgroup_parent_is_a_cgroup_path_or_a_dir_under_the_mount() {
    let mount = Path::new("/sys/fs/cgroup/memory");
    assert_eq!(
        parent_within(Path::new("/augur"), mount),
        Path::new("/sys/fs/cgroup/memory/augur")
    );
    assert_eq!(
        parent_within(Path::new("/sys/fs/cgroup/memory/x/augur"), mount),
        Path::new("/sys/fs/cgroup/memory/x/augur")
    );
}

#[test]
fn limit_and_usage_formats_of_both_versions() {
    // CPU: 250m is a quarter of each 100 ms period; tiny requests get the kernel minimum.
    assert_eq!(cpu_max_line(250), "25000 100000");
    assert_eq!(cpu_max_line(2000), "200000 100000");
    assert_eq!(cpu_quota_us(1), MIN_CPU_QUOTA_US);
    assert_eq!(cpu_max_millis("25000 100000\n"), Some(250));
    assert_eq!(cpu_max_millis("max 100000\n"), None);
    assert_eq!(cfs_millis("-1\n", "100000\n"), None);
    assert_eq!(cfs_millis("150000\n", "100000\n"), Some(1500));
    // Memory: v2 `max`, v1's huge number, and a real limit.
    assert_eq!(memory_limit("max\n"), None);
    assert_eq!(memory_limit("9223372036854771712\n"), None);
    assert_eq!(memory_limit("67108864\n"), Some(64 << 20));
    assert_eq!(memory_limit("junk"), None);
    // Accounting files.
    let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
    assert_eq!(keyed_value(events, "oom_kill"), Some(1));
    assert_eq!(keyed_value(events, "oom"), Some(2));
    let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(keyed_value(oom_control, "oom_kill"), Some(3));
    assert_eq!(
        keyed_value("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
        None
    );
    let cpu_stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
    assert_eq!(keyed_value(cpu_stat, "usage_usec"), Some(123_456));
    assert_eq!(single_value("4096\n"), Some(4096));
    assert_eq!(
        meminfo_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
        Some(16384 * 1024)
    );
    assert_eq!(pids("12\n345\n\n"), vec![12, 345]);
}

#[test]
fn pid_digits_need_no_allocation_and_are_exact() {
    let mut buf = [0u8; 12];
    assert_eq!(pid_digits(0, &mut buf), b"0");
    assert_eq!(pid_digits(7, &mut buf), b"7");
    assert_eq!(pid_digits(4_194_304, &mut buf), b"4194304");
    assert_eq!(
        pid_digits(libc::pid_t::MAX, &mut buf),
        libc::pid_t::MAX.to_string().as_bytes()
    );
}

#[test]
fn attempt_names_are_single_safe_components() {
    assert!(safe_name("01J9ZQ3V5W7X8Y9Z0A1B2C3D4E-2"));
    for bad in ["", "..", "a/b", "a b", "x\n"] {
        assert!(!safe_name(bad), "{bad:?}");
    }
}

/// A fake v1 host: memory, `cpu,cpuacct` co-mounted, and pids, each a dir
/// under `root`, with this process in `/job/own` of the memory hierarchy.
fn fake_v1(root: &Path) -> Host {
    let mut mountinfo = String::new();
    for (i, (dir, controllers)) in [
        ("memory", "memory"),
        ("cpu,cpuacct", "cpu,cpuacct"),
        ("pids", "pids"),
    ]
    .iter()
    .enumerate()
    {
        let mount = root.join(dir);
        fs::create_dir_all(&mount).expect("mkdir");
        mountinfo.push_str(&format!(
            "{} 25 0:{i} / {} rw - cgroup cgroup rw,{controllers}\n",
            40 + i,
            mount.display()
        ));
    }
    fs::create_dir_all(root.join("memory/job/own")).expect("mkdir");
    Host {
        mountinfo,
        self_cgroup: "5:pids:/\n4:memory:/job/own\n3:cpu,cpuacct:/\n".into(),
    }
}

#[test]
fn v1_default_parents_are_the_own_cgroups_augur_children() {
    let root = tempfile::tempdir().expect("tempdir");
    let host = fake_v1(root.path());
    let cgroups = Cgroups::prepare(&host, &CgroupOptions::default()).expect("prepared");
    assert_eq!(cgroups.version(), Version::V1);
    let parents = cgroups.parent_dirs();
    assert_eq!(
        parents,
        vec![
            root.path().join("memory/job/own/augur"),
            root.path().join("cpu,cpuacct/augur"),
            root.path().join("pids/augur"),
        ]
    );
    for parent in parents {
        assert!(parent.is_dir(), "{parent:?} made");
    }
}

#[test]
fn v1_attempt_cgroups_get_memory_swap_cpu_and_pid_limits() {
    let root = tempfile::tempdir().expect("tempdir");
    let host = fake_v1(root.path());
    let options = CgroupOptions {
        max_job_pids: 64,
        ..Default::default()
    };
    let cgroups = Cgroups::prepare(&host, &options).expect("prepared");
    // The kernel makes the control files; the fake tree gets the swap one by hand.
    let memory = root.path().join("memory/job/own/augur/J-1");
    fs::create_dir_all(&memory).expect("mkdir");
    fs::write(memory.join("memory.memsw.limit_in_bytes"), "").expect("write");
    let job = cgroups
        .create(
            "J-1",
            Limits {
                memory_bytes: 64 << 20,
                cpu_millis: 250,
            },
        )
        .expect("created");
    let read = |p: &Path| fs::read_to_string(p).expect("read");
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(
        read(&memory.join("memory.memsw.limit_in_bytes")),
        "67108864"
    );
    let cpu = root.path().join("cpu,cpuacct/augur/J-1");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "25000");
    assert_eq!(read(&root.path().join("pids/augur/J-1/pids.max")), "64");

    // Accounting, as the kernel would show it after an OOM kill.
    fs::write(memory.join("memory.max_usage_in_bytes"), "67100000\n").expect("write");
    fs::write(
        memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    )
    .expect("write");
    fs::write(cpu.join("cpuacct.usage"), "2500000000\n").expect("write");
    assert_eq!(
        job.stats(),
        Stats {
            peak_memory_bytes: 67_100_000,
            cpu_us: 2_500_000,
            oom_kills: Some(1),
            memory_failcnt: 0,
        }
    );
    assert_eq!(
        job.procs_files().err().map(|e| e.contains("cgroup.procs")),
        Some(true)
    );
    // Dropping removes the (here: already emptied) directories.
    for dir in [
        "memory/job/own/augur/J-1",
        "cpu,cpuacct/augur/J-1",
        "pids/augur/J-1",
    ] {
        fs::remove_dir_all(root.path().join(dir)).expect("rm");
    }
    drop(job);
}

#[test]
fn a_missing_cgroup_parent_is_refused_naming_the_flag() {
    let root = tempfile::tempdir().expect("tempdir");
    let host = fake_v1(root.path());
    let options = CgroupOptions {
        parent: Some("/no/such/parent".into()),
        ..Default::default()
    };
    let err = Cgroups::prepare(&host, &options).expect_err("refused");
    assert!(matches!(err, CgroupError::Parent { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("--cgroup-parent /no/such/parent:"),
        "{text}"
    );
    assert!(!root.path().join("memory/no").exists(), "nothing created");
}

#[test]
fn no_memory_hierarchy_means_no_enforcement() {
    let host = Host {
        mountinfo: "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n".into(),
        self_cgroup: "0::/\n".into(),
    };
    let err = Cgroups::prepare(&host, &CgroupOptions::default()).expect_err("refused");
    assert!(matches!(err, CgroupError::Unavailable(_)), "{err:?}");
}

/// A fake v2 host whose unified hierarchy delegates memory, cpu and pids to
/// `/jobs`.
fn fake_v2(root: &Path) -> Host {
    let unified = root.join("unified");
    let jobs = unified.join("jobs");
    fs::create_dir_all(&jobs).expect("mkdir");
    for dir in [&unified, &jobs] {
        fs::write(
            dir.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write");
        fs::write(dir.join("cgroup.subtree_control"), "").expect("write");
    }
    Host {
        mountinfo: format!(
            "32 25 0:28 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
            unified.display()
        ),
        self_cgroup: "0::/worker\n".into(),
    }
}

#[test]
fn v2_parent_gets_controllers_and_attempts_get_v2_limit_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let host = fake_v2(root.path());
    let options = CgroupOptions {
        parent: Some("/jobs".into()),
        max_job_pids: 100,
        enforce: true,
    };
    let cgroups = Cgroups::prepare(&host, &options).expect("prepared");
    assert_eq!(cgroups.version(), Version::V2);
    let jobs = root.path().join("unified/jobs");
    assert_eq!(cgroups.parent_dirs(), vec![jobs.as_path()]);
    // The last controller enabled (the fake file keeps only the last write).
    assert_eq!(
        fs::read_to_string(jobs.join("cgroup.subtree_control")).expect("read"),
        "+pids"
    );
    let attempt = jobs.join("J-2");
    fs::create_dir_all(&attempt).expect("mkdir");
    for file in ["memory.swap.max", "pids.max"] {
        fs::write(attempt.join(file), "max").expect("write");
    }
    let job = cgroups
        .create(
            "J-2",
            Limits {
                memory_bytes: 128 << 20,
                cpu_millis: 500,
            },
        )
        .expect("created");
    let read = |f: &str| fs::read_to_string(attempt.join(f)).expect("read");
    assert_eq!(read("memory.max"), "134217728");
    assert_eq!(read("memory.swap.max"), "0");
    assert_eq!(read("cpu.max"), "50000 100000");
    assert_eq!(read("pids.max"), "100");
    fs::write(attempt.join("memory.peak"), "1000\n").expect("write");
    fs::write(attempt.join("cpu.stat"), "usage_usec 42\nuser_usec 40\n").expect("write");
    fs::write(attempt.join("memory.events"), "oom 1\noom_kill 1\n").expect("write");
    let stats = job.stats();
    assert_eq!(
        (stats.peak_memory_bytes, stats.cpu_us, stats.oom_kills),
        (1000, 42, Some(1))
    );
    fs::remove_dir_all(&attempt).expect("rm");
    drop(job);
}

#[test]
fn v2_refuses_a_parent_without_the_memory_controller() {
    let root = tempfile::tempdir().expect("tempdir");
    let host = fake_v2(root.path());
    fs::write(
        root.path().join("unified/jobs/cgroup.controllers"),
        "cpu pids\n",
    )
    .expect("write");
    let options = CgroupOptions {
        parent: Some("/jobs".into()),
        ..Default::default()
    };
    let err = Cgroups::prepare(&host, &options).expect_err("refused");
    assert!(
        err.to_string()
            .contains("controller memory is not delegated"),
        "{err}"
    );
}

#[test]
fn unlimited_requests_write_no_memory_or_cpu_limit() {
    let root = tempfile::tempdir().expect("tempdir");
    let host = fake_v2(root.path());
    let options = CgroupOptions {
        parent: Some("/jobs".into()),
        ..Default::default()
    };
    let cgroups = Cgroups::prepare(&host, &options).expect("prepared");
    let job = cgroups.create("J-3", Limits::default()).expect("created");
    let attempt = root.path().join("unified/jobs/J-3");
    assert!(!attempt.join("memory.max").exists());
    assert!(!attempt.join("cpu.max").exists());
    fs::remove_dir_all(&attempt).expect("rm");
    drop(job);
    assert!(
        cgroups.create("../escape", Limits::default()).is_err(),
        "a name with a slash is refused"
    );
}
