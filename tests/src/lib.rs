//! The end-to-end harness: starts a real etcd (Debian's `etcd-server`) and real
//! `augur coordinator` / `augur worker` processes on free loopback ports in a temp
//! dir, drives them through the `augur` CLI exactly as an operator would, and kills
//! everything when the [`Cluster`] is dropped.
//!
//! Clusters are serialised: [`Cluster::start`] takes a process-wide mutex and an
//! `flock` on a lock file in the system temp dir, so cluster tests never race each
//! other for the machine's two cores, whether run by `cargo test` (threads in one
//! process) or `cargo nextest` (one process per test).
//!
//! When a test fails, the cluster's temp dir is kept (its path is printed) and the
//! last lines of every process log are printed to stderr.

pub mod audit;
pub mod browser;
pub mod chaos;
pub mod cluster;
pub mod etcd;
pub mod exposition;
pub mod grafana;
pub mod http;
pub mod jobs;
pub mod ledger;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod wait;
pub mod workload;

pub use audit::{Audit, Figure};
pub use chaos::{coordinator_index, coordinator_name, unix_now};
pub use cluster::{Cluster, ClusterConfig, ClusterLock};
pub use jobs::{is_terminal, json_str, json_u64};
pub use ledger::{Ledger, LedgerEntry};
pub use process::{
    augur_bin, etcd_tool, free_ports, kill_group, pid_alive, run_with_timeout, shell_quote,
    spawn_logged,
};
pub use wait::{poll_every, poll_until};
pub use workload::{ledger_script, SubmitCall, Submitter};
