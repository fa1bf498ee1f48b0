#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver (with a font, for readable
# screenshots) for the console's browser tests, only if missing. Called by
# test.sh, and by the tests themselves when they find no browser. Never fails
# the caller: where nothing can be installed (no apt, no root or sudo, no
# network) it says so, and the browser tests skip with a message.
set -uo pipefail

have() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 &&
    [ -d /usr/share/fonts/truetype/liberation ]
}
have && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: no apt-get here; the console browser tests will skip" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "chromium: not root and no passwordless sudo; the console browser tests will skip" >&2
    exit 0
  fi
fi
echo "setup: installing chromium chromium-driver fonts-liberation" >&2
$sudo apt-get update -qq >/dev/null 2>&1 || true
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-liberation >/dev/null; then
  echo "chromium: apt-get install failed; the console browser tests will skip" >&2
fi
have || echo "chromium: still missing after installing; the console browser tests will skip" >&2
exit 0
