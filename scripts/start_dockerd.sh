#!/usr/bin/env bash
# Start a Docker daemon for `make test-docker` on a machine that allows loopback traffic only: no bridge
# network, no iptables rules, everything under one directory of our own. Containers then use
# `--network host` (or none). Prints the DOCKER_HOST to export; .ci/run starts it when no daemon answers.
# Usage: scripts/start_dockerd.sh [DIR]   (default /tmp/dockerd; the socket is DIR/docker.sock)
set -euo pipefail
dir="${1:-/tmp/dockerd}"
mkdir -p "$dir"
export DOCKER_HOST="unix://$dir/docker.sock"
if docker info >/dev/null 2>&1; then
  echo "DOCKER_HOST=$DOCKER_HOST"
  exit 0
fi
nohup dockerd --bridge=none --iptables=false --ip-masq=false \
  --data-root "$dir/root" --exec-root "$dir/exec" --pidfile "$dir/pid" \
  -H "$DOCKER_HOST" >"$dir/dockerd.log" 2>&1 &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    echo "DOCKER_HOST=$DOCKER_HOST"
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer within 60 s; its log:" >&2
tail -n 30 "$dir/dockerd.log" >&2
exit 1
