#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis the tests talk to answer on loopback; start them if not.
# Commands from shared/spec/services.md. Installs the packages only where the binaries are missing.
set -euo pipefail

wait_for() {  # wait_for "description" command...
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $what does not answer" >&2; return 1
}

if ! command -v pg_isready >/dev/null || ! command -v redis-server >/dev/null; then
  echo "services: installing postgresql and redis-server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  echo "services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for "PostgreSQL on 127.0.0.1:5432" pg_isready -h 127.0.0.1 -p 5432
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for "Redis on 127.0.0.1:6379" redis-cli -h 127.0.0.1 -p 6379 ping
fi
echo "services: PostgreSQL and Redis answer on 127.0.0.1" >&2
