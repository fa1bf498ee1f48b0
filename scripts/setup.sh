#!/usr/bin/env bash
# Installs what building and testing Augur needs on Debian/Ubuntu, idempotently:
# etcd (server and etcdctl), protoc (etcd-client's build script needs it) and
# cargo-nextest. Sourced by dev.sh and test.sh; safe to run again.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The protobuf well-known types (google/protobuf/*.proto) some build scripts import.
[ -f /usr/include/google/protobuf/empty.proto ] || need+=(libprotobuf-dev)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# --- compose smoke test (tests/compose/): only where a Docker engine is present
if command -v docker >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v objcopy >/dev/null 2>&1 || need+=(binutils)
  command -v jq >/dev/null 2>&1 || need+=(jq)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
fi
# --- end compose smoke test
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged services; Augur's scripts and tests run their
  # own instances on their own ports, so the system ones we just installed
  # would only take CPU and the default ports.
  if command -v systemctl >/dev/null 2>&1; then
    for unit in etcd prometheus; do
      $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
