#!/usr/bin/env bash
# Make PostgreSQL (127.0.0.1:5432, database "test") and Redis (127.0.0.1:6379) answer for
# the tests: install them from Debian's packages when absent, start them when not
# answering, and wait until they do.
#
# A PostgreSQL this script installs is set up for tests only: the "test" database, and
# trust authentication for 127.0.0.1 and ::1 (no password; loopback only). An existing
# installation's authentication is left as it is.
#
# TOKEN_GUARD_SERVICES_DRY_RUN=1 prints the commands that would change the machine
# (install, configure, start) instead of running them, and stops before waiting.
set -euo pipefail

dry_run="${TOKEN_GUARD_SERVICES_DRY_RUN:-}"
sudo_=""
[ "$(id -u)" = 0 ] || sudo_="sudo"

run() {
  if [ -n "$dry_run" ]; then
    echo "+ $*"
  else
    "$@"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Asked with their clients; without a client (in a dry run) a listening port counts.
pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null
  else port_open 5432; fi
}
redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG
  else port_open 6379; fi
}
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

# -- install what is absent ------------------------------------------------------------
packages=""
fresh_postgres=""
if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! port_open 5432; then
  packages="$packages postgresql"
  fresh_postgres=1
elif ! command -v psql >/dev/null 2>&1; then
  packages="$packages postgresql-client"  # a server answers; the script needs its client
fi
if ! command -v redis-server >/dev/null 2>&1 && ! port_open 6379; then
  packages="$packages redis-server"
elif ! command -v redis-cli >/dev/null 2>&1; then
  packages="$packages redis-tools"
fi
if [ -n "$packages" ]; then
  echo "== installing Debian's$packages"
  run $sudo_ apt-get update -qq
  # shellcheck disable=SC2086
  run $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages
fi
if [ -n "$fresh_postgres" ]; then
  version="$(pg_version)"
  version="${version:-VERSION}"  # only a dry run on a machine without it gets here empty
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  echo "== letting the tests connect to the new PostgreSQL from loopback without a password"
  # First matching line wins: these go above Debian's scram-sha-256 ones.
  run $sudo_ sed -i \
    -e '1i host all all 127.0.0.1/32 trust' -e '1i host all all ::1/128 trust' "$hba"
  run $sudo_ pg_ctlcluster --skip-systemctl-redirect "$version" main restart || true
fi

# -- start what is not answering ---------------------------------------------------------
if ! pg_up; then
  echo "== starting PostgreSQL"
  run $sudo_ pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start || true
fi
if ! redis_up; then
  echo "== starting Redis"
  run $sudo_ mkdir -p /var/lib/redis /var/log/redis
  run $sudo_ redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if [ -n "$dry_run" ]; then
  echo "+ psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' (if missing)"
  exit 0
fi
for _ in $(seq 1 30); do
  if pg_up && redis_up; then break; fi
  sleep 1
done
pg_up || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
redis_up || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" \
  | grep -q 1 || psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null
