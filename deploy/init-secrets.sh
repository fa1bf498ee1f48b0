#!/usr/bin/env bash
# Writes deploy/.env with a fresh bootstrap admin token and worker join token
# (random, 256 bits each), unless it already holds them. Compose reads
# deploy/.env by itself; keep the file private (mode 0600, git-ignored).
#
#   deploy/init-secrets.sh && docker compose -f deploy/docker-compose.yml up -d
#   export AUGUR_TOKEN=$(sed -n 's/^AUGUR_ADMIN_TOKEN=//p' deploy/.env)
set -euo pipefail
env_file="$(cd "$(dirname "$0")" && pwd)/.env"
touch "$env_file"
chmod 600 "$env_file"
new_secret() { printf 'augur_%s' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"; }
for name in AUGUR_ADMIN_TOKEN AUGUR_JOIN_TOKEN; do
  if ! grep -q "^$name=." "$env_file"; then
    echo "$name=$(new_secret)" >>"$env_file"
    echo "init-secrets: wrote $name to $env_file"
  fi
done
