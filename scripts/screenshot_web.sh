#!/usr/bin/env bash
# Screenshot of the query API's web page, for the README (docs/web-page.png).
# Run it while `segments demo` (or `segments api` with data flowing) serves the page:
#   scripts/screenshot_web.sh [URL] [OUT]   default http://127.0.0.1:$API_PORT/ docs/web-page.png
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
URL=${1:-http://127.0.0.1:${API_PORT:-8081}/}
OUT=${2:-docs/web-page.png}
if ! curl -fsS "${URL%/}/healthz" >/dev/null; then
  echo "screenshot_web: no query API answering at $URL (start segments demo or segments api)" >&2
  exit 1
fi
# Headless Chromium over DevTools (window 1200x800), once the page shows counts and changes.
"$PYTHON" -m tests.e2e.screenshot "$URL" "$OUT"
echo "screenshot_web: wrote $OUT"
