#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET seconds each
# (default 20) and fails on the first crash, printing where its input is.
#
#   scripts/fuzz.sh            # 20 s per target
#   scripts/fuzz.sh 600        # a longer campaign: 10 min per target
#   FUZZ_TARGETS="job_spec store_records" scripts/fuzz.sh 60
#
# Only stable Rust is installed; cargo-fuzz needs nightly-only flags
# (-Zsanitizer=address, sancov passes), which RUSTC_BOOTSTRAP=1 lets stable
# rustc accept. The corpus grows in fuzz/corpus/<target> (git-ignored) and
# starts from the committed seeds in fuzz/seeds/<target>; crash inputs land in
# fuzz/artifacts/<target>/. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (a whole number >= 1, got ${1:-})" >&2
  exit 2
fi

export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# The instrumented build of every dependency is slow (~15 min cold on two
# cores), so it lives outside the work tree and survives fresh clones (CI
# clones anew each run): a cache, safe to delete.
target_dir="${AUGUR_FUZZ_TARGET_DIR:-$HOME/.cache/augur/fuzz-target}"
mkdir -p "$target_dir"

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
# -a: debug assertions (and overflow checks) on, so arithmetic overflow on
# hostile input is a crash, not a silent wrap.
build_started=$(date +%s)
cargo fuzz build -a --target-dir "$target_dir"
echo "fuzz: build took $(( $(date +%s) - build_started ))s"

for target in $targets; do
  corpus="fuzz/corpus/$target"
  artifacts="fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  log="fuzz/artifacts/$target/last-run.log"
  echo "fuzz: $target for ${seconds}s"
  touch "$artifacts/.started"
  # -rss_limit_mb / -malloc_limit_mb: a decoder that allocates without bound
  # on a small input is a finding, not an out-of-memory kill of the machine.
  if ! cargo fuzz run -a --target-dir "$target_dir" "$target" "$corpus" "${seeds[@]}" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=512 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
    echo "fuzz: $target FAILED; log: $log" >&2
    { grep -E -A1 "panicked at|SUMMARY|Test unit written" "$log" || tail -n 40 "$log"; } | cut -c1-300 | head -n 12 >&2
    echo "fuzz: crash input(s):" >&2
    find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) -newer "$artifacts/.started" >&2 || true
    echo "fuzz: reproduce with RUSTC_BOOTSTRAP=1 cargo fuzz run -a $target <input>" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -oE "cov: [0-9]+" "$log" | tail -n 1 || true)
  echo "fuzz: $target ok: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) inputs"
done
echo "fuzz: no crashes"
