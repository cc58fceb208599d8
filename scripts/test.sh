#!/usr/bin/env bash
# Install what the tests need and run them: the README's test command.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

# Debian packages the tests use: chromium (browser tests), valgrind (instruction counts in
# the benchmark smoke tests), wrk (HTTP load).
missing=""
for tool in chromium valgrind wrk; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "== installing Debian's$missing"
  sudo_=""
  [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  # shellcheck disable=SC2086
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[dev]'

python -m pytest "$@"
