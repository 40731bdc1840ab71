#!/usr/bin/env bash
# The whole test suite. Always on SQLite; and again on PostgreSQL when DATABASE_URL points at one
# (that run includes the PostgreSQL-only concurrency tests). Browser tests need Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest -p no:cacheprovider "$@")

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium for the browser tests…"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "The browser tests need chromium: run 'sudo apt-get install -y chromium' first." >&2
    exit 1
  fi
fi

echo "== test suite on SQLite =="
env -u DATABASE_URL "${PYTEST[@]}"

case "${DATABASE_URL:-}" in
  postgres://*|postgresql://*)
    echo "== test suite on PostgreSQL (${DATABASE_URL%%\?*}) =="
    "${PYTEST[@]}"
    ;;
esac
