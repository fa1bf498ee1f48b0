#!/usr/bin/env bash
# Smoke test of the compose stack (deploy/docker-compose.yml), started for real.
#
# This machine's Docker engine cannot pull images, so images.sh builds local
# stand-ins and the compose file is pointed at them through its image variables
# (ETCD_IMAGE, PROMETHEUS_IMAGE, AUGUR_IMAGE). Grafana and the trace backend
# have no obtainable image: they sit behind the compose profile `ui`, which
# this test leaves off; their provisioning files are checked statically instead.
#
# Phases: provisioning check, images, `compose config`, up + health, jobs from
# the host through the published API port, Prometheus `up` for every target,
# leader container killed (another takes over, every job finishes), one etcd
# member stopped (the cluster keeps working), `down -v`. Each phase is timed and
# every wait is bounded. Skips (exit 0, with a message) when no Docker engine or
# no Compose is available.
#
# Environment: AUGUR_BIN (host binary, default target/debug/augur),
# AUGUR_SMOKE_KEEP=1 (leave the stack up for debugging; tear down yourself with
# the printed command).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo_root"

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "compose smoke: SKIPPED: no Docker engine reachable (docker info failed)"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  echo "compose smoke: SKIPPED: Docker engine present but neither \`docker compose\` nor docker-compose"
  exit 0
fi

augur_bin=${AUGUR_BIN:-$repo_root/target/debug/augur}
if [ ! -x "$augur_bin" ]; then
  echo "compose smoke: building $augur_bin"
  cargo build -p augur-cli
fi
export AUGUR_BIN=$augur_bin

test_started=$(date +%s)
phase_started=$test_started
phase_name=""
timings=()
phase() {
  local now
  now=$(date +%s)
  if [ -n "$phase_name" ]; then
    timings+=("$(printf '%-42s %4ss' "$phase_name" $((now - phase_started)))")
    echo "   ... $phase_name took $((now - phase_started))s"
  fi
  phase_name=$1
  phase_started=$now
  [ -n "$phase_name" ] && echo "== compose smoke: $phase_name"
  return 0
}
fail() {
  echo "compose smoke: FAILED: $*" >&2
  exit 1
}

# wait_until SECONDS DESCRIPTION COMMAND...: runs COMMAND every second until it
# succeeds; fails the test after SECONDS.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail "$what: not within ${limit}s"
    fi
    sleep 1
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

phase "provisioning files (Grafana and Prometheus, checked statically)"
python3 tests/compose/check_provisioning.py || fail "provisioning check"
promtool check config deploy/prometheus/prometheus.yml >/dev/null || fail "promtool check config"

phase "stand-in images (no registry reachable)"
# shellcheck source=tests/compose/images.sh
source tests/compose/images.sh
build_standin_images

# The compose project: a unique name, and published ports that are free now.
project="augur-smoke-$$"
export COMPOSE_PROJECT_NAME=$project
export AUGUR_API_PORT AUGUR_API_PORT_2 PROMETHEUS_PORT GRAFANA_PORT JAEGER_UI_PORT
AUGUR_API_PORT=$(free_port)
AUGUR_API_PORT_2=$(free_port)
PROMETHEUS_PORT=$(free_port)
GRAFANA_PORT=$(free_port)
JAEGER_UI_PORT=$(free_port)
export BIND_ADDRESS=127.0.0.1
# The stack runs authenticated: fresh tokens for this run (what
# deploy/init-secrets.sh writes to deploy/.env for operators).
secret() { printf 'augur_%s' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"; }
export AUGUR_ADMIN_TOKEN AUGUR_JOIN_TOKEN
AUGUR_ADMIN_TOKEN=$(secret)
AUGUR_JOIN_TOKEN=$(secret)
export AUGUR_INSECURE=false
compose() { "${compose_cmd[@]}" -f deploy/docker-compose.yml "$@"; }
api1="http://127.0.0.1:$AUGUR_API_PORT"
api2="http://127.0.0.1:$AUGUR_API_PORT_2"
prometheus_url="http://127.0.0.1:$PROMETHEUS_PORT"
augur() { AUGUR_TOKEN=$AUGUR_ADMIN_TOKEN timeout 90 "$augur_bin" --endpoint "$1" "${@:2}"; }

teardown() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    echo "compose smoke: state at failure:" >&2
    compose ps >&2 || true
    for service in $(compose ps --services 2>/dev/null); do
      echo "--- logs of $service (last 25 lines)" >&2
      compose logs --no-color --tail=25 "$service" >&2 2>&1 || true
    done
  fi
  if [ "${AUGUR_SMOKE_KEEP:-0}" = 1 ]; then
    echo "compose smoke: stack left up (AUGUR_SMOKE_KEEP=1); remove it with:"
    echo "  COMPOSE_PROJECT_NAME=$project ${compose_cmd[*]} -f deploy/docker-compose.yml down -v"
  else
    phase "teardown (down -v)"
    compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    phase ""
  fi
  echo
  echo "compose smoke: phase timings"
  printf '  %s\n' "${timings[@]}"
  echo "  total $(($(date +%s) - test_started))s"
  if [ "$rc" -eq 0 ]; then echo "compose smoke: PASSED"; fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

phase "compose config"
compose config -q || fail "docker compose config"
echo "   images: etcd $ETCD_IMAGE, prometheus $PROMETHEUS_IMAGE, augur $AUGUR_IMAGE"
echo "   left out: grafana and jaeger (profile \"ui\"; no image obtainable here)"

phase "up and healthy"
compose up -d --no-build >/dev/null 2>&1 || { compose up -d --no-build; fail "compose up"; }
services=(etcd-1 etcd-2 etcd-3 coordinator-1 coordinator-2 worker worker-large worker-small prometheus)
all_healthy() {
  local service id status
  for service in "${services[@]}"; do
    id=$(compose ps -q "$service")
    [ -n "$id" ] || return 1
    status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
    [ "$status" = healthy ] || return 1
  done
}
wait_until 240 "every service healthy" all_healthy
echo "   healthy: ${services[*]}"

phase "jobs from the host through the published API"
for target in "" "--constraint node=worker-large" "--constraint node=worker-small" "--constraint pool=general"; do
  # shellcheck disable=SC2086 # $target is two words or none
  out=$(augur "$api1" submit --wait $target -- sh -c 'echo hi from $(hostname)') \
    || fail "job ${target:-(any worker)} did not succeed: $out"
  echo "   ${target:-any worker}: succeeded ($(echo "$out" | tail -n1 | cut -c1-60))"
done
out=$(augur "$api2" submit --wait -- sh -c 'echo through the second coordinator') \
  || fail "job through coordinator-2 did not succeed: $out"
echo "   through coordinator-2: succeeded"
if out=$(timeout 30 "$augur_bin" --endpoint "$api1" list 2>&1); then
  fail "the API answered a call without a token: $out"
fi
case "$out" in *Unauthenticated*) echo "   a call without a token: refused (Unauthenticated)" ;;
  *) fail "a call without a token failed, but not as Unauthenticated: $out" ;; esac

phase "workers reach the coordinators only, never etcd"
for service in worker worker-large worker-small; do
  id=$(compose ps -q "$service" | head -n1)
  if docker exec "$id" getent hosts etcd-1 >/dev/null 2>&1; then
    fail "$service can resolve etcd-1: workers must not share a network with etcd"
  fi
  docker exec "$id" getent hosts coordinator-1 >/dev/null 2>&1 \
    || fail "$service cannot resolve coordinator-1"
  env_of=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id")
  case "$env_of" in *AUGUR_ETCD*) fail "$service was given etcd settings" ;; esac
done
echo "   worker, worker-large, worker-small: no route to etcd, no etcd settings; they ran the jobs above"

phase "Prometheus scrapes every target (up == 1)"
expected_targets=9 # 2 coordinators, 3 workers, 3 etcd members, Prometheus itself
targets_up() {
  curl -fsS --max-time 5 "$prometheus_url/api/v1/query" --data-urlencode 'query=up' \
    | jq -e --argjson n "$expected_targets" \
      '(.data.result | length) == $n and all(.data.result[]; .value[1] == "1")'
}
wait_until 120 "all $expected_targets targets up in Prometheus" targets_up
curl -fsS "$prometheus_url/api/v1/query" --data-urlencode 'query=up' \
  | jq -r '.data.result[] | "   up{job=\(.metric.job), instance=\(.metric.instance)} = \(.value[1])"'

phase "leader killed: another coordinator takes over"
leader_of() { augur "$1" --output json cluster | jq -er '.leader | select(. != "")'; }
leader=$(leader_of "$api1") || fail "no leader reported"
case "$leader" in
  coordinator-1) survivor_api=$api2 ;;
  coordinator-2) survivor_api=$api1 ;;
  *) fail "unexpected leader $leader" ;;
esac
echo "   leader: $leader"
before=()
for i in 1 2 3 4; do
  before+=("$(augur "$survivor_api" submit -- sh -c "sleep 2; echo before $i")") || fail "submit before the kill"
done
leader_container=$(compose ps -q "$leader")
kill_at=$(date +%s.%N)
docker kill "$leader_container" >/dev/null
new_leader() {
  local now
  now=$(leader_of "$survivor_api") || return 1
  [ "$now" != "$leader" ]
}
wait_until 60 "a new leader after killing $leader" new_leader
awk -v l="$(leader_of "$survivor_api")" -v t0="$kill_at" -v t1="$(date +%s.%N)" \
  'BEGIN { printf "   new leader: %s, seen %.1fs after the kill\n", l, t1 - t0 }'
out=$(augur "$survivor_api" submit --wait -- sh -c 'echo after the kill') \
  || fail "job after the kill did not succeed: $out"
job_succeeded() {
  [ "$(augur "$survivor_api" --output json get "$1" | jq -r .state)" = succeeded ]
}
for id in "${before[@]}"; do
  wait_until 90 "job $id (submitted before the kill) succeeded" job_succeeded "$id"
done
echo "   ${#before[@]} jobs submitted before the kill and 1 after: all succeeded"

phase "one etcd member stopped: the cluster keeps working"
compose stop -t 5 etcd-3 >/dev/null 2>&1
# The first submission may meet etcd electing a new raft leader (if etcd-3
# led): retried, under one idempotency key, for a bounded time.
submit_once() {
  augur "$survivor_api" submit --wait --idempotency-key "smoke-etcd-$project" -- sh -c 'echo etcd-3 stopped'
}
wait_until 60 "a job succeeding with etcd-3 stopped" submit_once
for i in 1 2 3; do
  out=$(augur "$survivor_api" submit --wait -- sh -c "echo with two etcd members $i") \
    || fail "job $i with etcd-3 stopped did not succeed: $out"
done
augur "$survivor_api" cluster | sed 's/^/   /'
echo "   4 jobs succeeded on 2 of 3 etcd members"

phase ""
