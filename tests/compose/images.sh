#!/usr/bin/env bash
# Builds the local stand-in images the compose smoke test runs, because this
# machine's Docker engine cannot pull from any registry:
#
#   base        Debian bookworm made with debootstrap + `docker import`, cached
#               under a tag that carries the recipe version (BASE_RECIPE); it is
#               reused when it exists. Packages are installed at debootstrap
#               time (containers may not reach an apt mirror).
#   etcd        the base + the host's Debian `etcd-server`/`etcd-client` binaries
#   prometheus  the base + the host's Debian `prometheus` binary
#   augur       deploy/Dockerfile, target `prebuilt`, from the host-built binary
#
# Host binaries are copied rather than installed in the container: the host is
# Debian 12 like the base, so glibc matches (checked below), and the versions are
# the ones the rest of the test suite runs. Derived images are keyed by the
# binary's version (etcd, prometheus) or checksum (augur) and rebuilt only when
# that changes.
#
# Sourced by smoke.sh; prints nothing on stdout but progress lines. Exports
# ETCD_IMAGE, PROMETHEUS_IMAGE, AUGUR_IMAGE and AUGUR_BASE_IMAGE.
set -euo pipefail

BASE_RECIPE=1
BASE_INCLUDE="ca-certificates"
STANDIN_RECIPE=1

repo_root=${repo_root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
augur_bin=${AUGUR_BIN:-$repo_root/target/debug/augur}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror the host's apt uses (deb822 or one-line format), unless
# DEBIAN_MIRROR says otherwise. Read at run time so no mirror is written down.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | grep '/debian' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
          | grep -v -- '-security' | head -n1 || true)
  fi
  if [ -z "$uri" ]; then
    echo "images: no Debian mirror found in /etc/apt; set DEBIAN_MIRROR" >&2
    return 1
  fi
  echo "$uri"
}

build_base() {
  AUGUR_BASE_IMAGE="augur-smoke/debian:bookworm-r$BASE_RECIPE"
  export AUGUR_BASE_IMAGE
  if image_exists "$AUGUR_BASE_IMAGE"; then
    echo "images: base $AUGUR_BASE_IMAGE cached"
    return
  fi
  command -v debootstrap >/dev/null || { echo "images: debootstrap missing (scripts/setup.sh installs it)" >&2; return 1; }
  local mirror root
  mirror=$(debian_mirror)
  root=$(mktemp -d /tmp/augur-debootstrap.XXXXXX)
  echo "images: debootstrap bookworm (minbase + $BASE_INCLUDE) into $root; a few minutes, once"
  if ! debootstrap --variant=minbase --include="$BASE_INCLUDE" bookworm "$root" "$mirror" \
        >"$root.log" 2>&1; then
    echo "images: debootstrap failed; last lines of $root.log:" >&2
    tail -n 20 "$root.log" >&2
    rm -rf "$root"
    return 1
  fi
  # Leave no apt lists or caches in the image.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -c . \
    | docker import --change 'CMD ["/bin/bash"]' - "$AUGUR_BASE_IMAGE" >/dev/null
  rm -rf "$root" "$root.log"
  echo "images: base $AUGUR_BASE_IMAGE built"
}

# glibc the host binary needs must not exceed the base's.
check_glibc() {
  local bin=$1 need have
  need=$(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -n1 | sed 's/GLIBC_//')
  have=$(docker run --rm "$AUGUR_BASE_IMAGE" sh -c 'ldd --version | head -n1' | awk '{print $NF}')
  if [ -n "$need" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -n1)" != "$have" ]; then
    echo "images: $bin needs glibc $need, the base has $have" >&2
    return 1
  fi
}

# quiet_build CONTEXT_DIR ARGS...: docker build, its output shown only on failure
# (the legacy builder, the only one here, prints a deprecation notice).
quiet_build() {
  local ctx=$1; shift
  if ! docker build "$@" >"$ctx.log" 2>&1; then
    echo "images: docker build $* failed:" >&2
    tail -n 30 "$ctx.log" >&2
    rm -rf "$ctx" "$ctx.log"
    return 1
  fi
  rm -f "$ctx.log"
}

# build_standin TAG DOCKERFILE_TEXT FILES...: a derived image from a context of the given files.
build_standin() {
  local tag=$1 dockerfile=$2; shift 2
  if image_exists "$tag"; then echo "images: $tag cached"; return; fi
  local ctx
  ctx=$(mktemp -d /tmp/augur-standin.XXXXXX)
  cp "$@" "$ctx/"
  printf '%s\n' "$dockerfile" >"$ctx/Dockerfile"
  quiet_build "$ctx" -t "$tag" "$ctx"
  rm -rf "$ctx"
  echo "images: $tag built"
}

build_etcd() {
  local version
  version=$(etcd --version | awk '/etcd Version/ {print $3}')
  ETCD_IMAGE="augur-smoke/etcd:$version-r$STANDIN_RECIPE"
  export ETCD_IMAGE
  check_glibc /usr/bin/etcd
  build_standin "$ETCD_IMAGE" "FROM $AUGUR_BASE_IMAGE
COPY etcd etcdctl /usr/local/bin/
EXPOSE 2379 2380
CMD [\"/usr/local/bin/etcd\"]" /usr/bin/etcd /usr/bin/etcdctl
}

build_prometheus() {
  local version
  version=$(prometheus --version 2>&1 | awk 'NR == 1 {print $3}' | tr '+' '-')
  PROMETHEUS_IMAGE="augur-smoke/prometheus:$version-r$STANDIN_RECIPE"
  export PROMETHEUS_IMAGE
  check_glibc /usr/bin/prometheus
  # As in the official image: runs as nobody, data in /prometheus.
  build_standin "$PROMETHEUS_IMAGE" "FROM $AUGUR_BASE_IMAGE
COPY prometheus promtool /bin/
RUN mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT [\"/bin/prometheus\"]
CMD [\"--config.file=/etc/prometheus/prometheus.yml\", \"--storage.tsdb.path=/prometheus\"]" \
    /usr/bin/prometheus /usr/bin/promtool
}

build_augur() {
  [ -x "$augur_bin" ] || { echo "images: $augur_bin missing; cargo build -p augur-cli first" >&2; return 1; }
  check_glibc "$augur_bin"
  local sum ctx
  sum=$(sha256sum "$augur_bin" | cut -c1-12)
  AUGUR_IMAGE="augur-smoke/augur:$sum"
  export AUGUR_IMAGE
  if image_exists "$AUGUR_IMAGE"; then echo "images: $AUGUR_IMAGE cached"; return; fi
  # Only the binary goes into the build context (not the repository and its
  # target/ directory); debug info is stripped to keep the image small.
  ctx=$(mktemp -d /tmp/augur-image.XXXXXX)
  objcopy --strip-debug "$augur_bin" "$ctx/augur"
  quiet_build "$ctx" -f "$repo_root/deploy/Dockerfile" --target prebuilt \
    --build-arg RUNTIME_IMAGE="$AUGUR_BASE_IMAGE" -t "$AUGUR_IMAGE" "$ctx"
  rm -rf "$ctx"
  # Older smoke images of other binaries are of no further use.
  docker images --format '{{.Repository}}:{{.Tag}}' augur-smoke/augur \
    | grep -vx "$AUGUR_IMAGE" | xargs -r docker rmi >/dev/null 2>&1 || true
  echo "images: $AUGUR_IMAGE built"
}

build_standin_images() {
  build_base
  build_etcd
  build_prometheus
  build_augur
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  build_standin_images
fi
