//! End-to-end tests against a real cluster: etcd from Debian's `etcd-server`, and
//! `augur coordinator` / `augur worker` processes built from this workspace.
//!
//! Build the binary first (`cargo build -p augur-cli`), or point `AUGUR_BIN` at one.
//! Every test starts its own cluster; `Cluster::start` serialises them (see the
//! harness docs), so `cargo test -p augur-e2e` and `cargo nextest run -p augur-e2e`
//! are both safe on a two-core machine.

#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/cgroups.rs"]
mod cgroups;
#[path = "e2e/chaos.rs"]
mod chaos;
#[path = "e2e/chaos_etcd.rs"]
mod chaos_etcd;
#[path = "e2e/chaos_frozen_leader.rs"]
mod chaos_frozen_leader;
#[path = "e2e/chaos_split_brain.rs"]
mod chaos_split_brain;
#[path = "e2e/chaos_worker.rs"]
mod chaos_worker;
#[path = "e2e/cli_edges.rs"]
mod cli_edges;
#[path = "e2e/connections.rs"]
mod connections;
#[path = "e2e/console.rs"]
mod console;
#[path = "e2e/dashboards.rs"]
mod dashboards;
#[path = "e2e/dev_secure.rs"]
mod dev_secure;
#[path = "e2e/drain.rs"]
mod drain;
#[path = "e2e/etcd_tls.rs"]
mod etcd_tls;
#[path = "e2e/hardening.rs"]
mod hardening;
#[path = "e2e/leader_defects.rs"]
mod leader_defects;
#[path = "e2e/learning.rs"]
mod learning;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/listing.rs"]
mod listing;
#[path = "e2e/load.rs"]
mod load;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/placement_cli.rs"]
mod placement_cli;
#[path = "e2e/placement_store.rs"]
mod placement_store;
#[path = "e2e/raw_protobuf.rs"]
mod raw_protobuf;
#[path = "e2e/schedules.rs"]
mod schedules;
#[path = "e2e/security.rs"]
mod security;
#[path = "e2e/traces.rs"]
mod traces;
#[path = "e2e/url_flags.rs"]
mod url_flags;
#[path = "e2e/worker_failure.rs"]
mod worker_failure;
#[path = "e2e/worker_isolation.rs"]
mod worker_isolation;
#[path = "e2e/workflows.rs"]
mod workflows;
#[path = "e2e/workflows_chaos.rs"]
mod workflows_chaos;
