#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks format and
# lints, builds once, then runs unit, property and end-to-end tests (the latter
# start real etcd and real augur processes), and a short benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The console's browser tests drive Debian's chromium through chromedriver:
# installed here only if missing; never fails (those tests skip, saying why,
# only where no browser can be installed).
scripts/chromium.sh

started=$(date +%s)
phase() { echo; echo "== $1 ($(( $(date +%s) - started ))s)"; }

phase "format"
cargo fmt --all --check

phase "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz crate is a workspace of its own (sanitizer builds): lint it too,
# into a cache outside the work tree (about a minute cold).
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked \
  --target-dir "$HOME/.cache/augur/fuzz-clippy" -- -D warnings

phase "build (once, reused by every tier)"
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --locked --no-run

phase "tests: unit, property and end-to-end"
# End-to-end tests share a nextest group with one thread (.config/nextest.toml):
# they start clusters and must not race each other for the two cores.
AUGUR_BIN="$PWD/target/debug/augur" cargo nextest run --workspace --locked --profile ci

# --- compose smoke test (issue 6): the deploy/ stack started for real; skips
# itself with a message when no Docker engine is reachable.
phase "compose stack smoke test (deploy/docker-compose.yml)"
AUGUR_BIN="$PWD/target/debug/augur" tests/compose/smoke.sh
# --- end compose smoke test

phase "benchmark smoke (debug build; figures are printed, not asserted)"
target/debug/augur bench --jobs 300 --etcd-txns 2000

# --- fuzz (short, bounded; issue 7): every fuzz target for a few seconds from
# the committed seeds, so a decoder that panics on hostile input fails CI.
# Costs ~1 min of fuzzing plus the fuzz build (fuzz/target: seconds when
# nothing changed, ~2.5 min after a change to the library crates, ~15 min cold).
# A longer campaign: scripts/fuzz.sh 600 (docs/security.md, Fuzzing).
phase "fuzz (short, bounded)"
scripts/fuzz.sh "${AUGUR_FUZZ_SECONDS:-8}"
# --- end fuzz

phase "done"
