#!/usr/bin/env bash
# Screenshots of the rule builder and a member's explanation, for the README
# (docs/web-builder.png, docs/web-explain.png). They are taken by the end-to-end test,
# which builds a rule in headless Chromium against the real API and two real workers;
# it needs the local stack (Kafka, Redis) that the integration tests use.
#   scripts/screenshot_builder.sh [OUT_DIR]   default docs/
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=$(realpath "${1:-docs}")
mkdir -p "$OUT"
SEGMENTS_WEB_SCREENSHOTS="$OUT" "$PYTHON" -m pytest -q -p no:cacheprovider \
  tests/e2e/test_web_page.py -k builder
echo "screenshot_builder: wrote $OUT/web-builder.png and $OUT/web-explain.png"
