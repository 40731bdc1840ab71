#!/usr/bin/env bash
# Run the product locally: migrated SQLite, demo data, the django-q2 worker and the web server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}

$PY manage.py migrate --noinput
$PY manage.py collectstatic --noinput -v 0
$PY manage.py ensure_schedules
$PY manage.py seed_demo

$PY manage.py qcluster &
WORKER=$!
trap 'kill $WORKER 2>/dev/null || true' EXIT INT TERM

cat <<MSG

  reviewqueue is running on http://$HOST:$PORT/
  Log in as  reviewer / reviewqueue-demo   (reviewer)
        or   admin    / reviewqueue-demo   (staff: /admin/, admin API)
  API docs:  http://$HOST:$PORT/api/docs/
  An agent key:  $PY manage.py create_api_key --agent my-agent

MSG
.venv/bin/gunicorn reviewqueue.wsgi:application --bind "$HOST:$PORT" --workers "${WEB_WORKERS:-2}" \
  --access-logfile - --log-level warning
