#!/usr/bin/env bash
# Screenshot of the query API's web page, for the README (docs/web-page.png).
# Run it while `segments demo` (or `segments api` with data flowing) serves the page:
#   scripts/screenshot_web.sh [URL] [OUT]   default http://127.0.0.1:$API_PORT/ docs/web-page.png
# The page needs a bearer token in its address (#token=...). Unless URL carries one, the
# token is $SEGMENTS_TOKEN, else one minted here by `segments token` for the account
# $ACCOUNT (default "demo", the demo's account; 15 minutes) with the same local secret
# the demo's API verifies with. It reaches the browser through the environment, never
# the command line or the output.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
URL=${1:-http://127.0.0.1:${API_PORT:-8081}/}
OUT=${2:-docs/web-page.png}
BASE=${URL%%#*}
if ! curl -fsS "${BASE%/}/healthz" >/dev/null; then
  echo "screenshot_web: no query API answering at $BASE (start segments demo or segments api)" >&2
  exit 1
fi
if [[ "$URL" != *"#token="* ]]; then
  if [[ -z "${SEGMENTS_TOKEN:-}" ]]; then
    SEGMENTS_TOKEN=$("$PYTHON" -m segments.cli token --account "${ACCOUNT:-demo}" --ttl 15m)
  fi
  export SEGMENTS_SCREENSHOT_TOKEN="$SEGMENTS_TOKEN"
fi
# Headless Chromium over DevTools (window 1200x800), once the page shows counts and changes.
"$PYTHON" -m tests.e2e.screenshot "$URL" "$OUT"
echo "screenshot_web: wrote $OUT"
