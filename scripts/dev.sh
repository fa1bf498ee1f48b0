#!/usr/bin/env bash
# One command to try Augur: installs what it needs, builds, and runs
# `augur dev --demo` (etcd child process, a coordinator and two workers, a demo
# workload). Extra arguments go to `augur dev`. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p augur-cli
exec target/release/augur --log-format text dev --demo "$@"
