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

# promptfoo (npm) runs the promptfoo export in tests/evals (FORMATS.md §11): installed once into
# .consumers/ where Node.js 20.20 or newer is on the PATH (CI has it; elsewhere those tests are
# deselected without it).
PROMPTFOO_VERSION=0.121.20
if [ ! -x .consumers/node_modules/.bin/promptfoo ] && command -v npm >/dev/null 2>&1 &&
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 20) ? 0 : 1)'; then
  echo "Installing promptfoo ${PROMPTFOO_VERSION} (npm) for the export tests…"
  npm install --prefix .consumers --no-audit --no-fund --loglevel=error "promptfoo@${PROMPTFOO_VERSION}" >/dev/null
fi

# OpenAI Evals runs the openai-evals export in tests/evals, from a venv of its own: its module
# name (`evals`) is this project's app's too, and its declared dependencies are huge.
OAIEVALS=.consumers/oaievals
if [ ! -x "$OAIEVALS/bin/oaieval" ]; then
  echo "Installing OpenAI Evals into $OAIEVALS for the export tests…"
  rm -rf "$OAIEVALS"
  .venv/bin/python -m venv "$OAIEVALS"
  "$OAIEVALS/bin/python" -m pip install --quiet -r tests/evals/oaievals/requirements.txt
  "$OAIEVALS/bin/python" -m pip install --quiet --no-deps evals==3.0.1.post1
fi

echo "== test suite on SQLite =="
env -u DATABASE_URL "${PYTEST[@]}"

case "${DATABASE_URL:-}" in
  postgres://*|postgresql://*)
    echo "== test suite on PostgreSQL (${DATABASE_URL%%\?*}) =="
    "${PYTEST[@]}"
    ;;
esac
