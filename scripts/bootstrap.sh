#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to run stripe-segments: Java and Maven (for
# the Kafka jars), redis-server, and this project with its dev extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Headless Chromium drives the web page's end-to-end test.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# stripe-mock (Stripe's stateless API mock, a Go module) checks WebhookEndpoint calls;
# its tests skip when it is missing, so a failed install only costs coverage.
if command -v go >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/stripe-mock" ]; then
  echo "bootstrap: go install stripe-mock"
  go install github.com/stripe/stripe-mock@latest >/dev/null 2>&1 || echo "bootstrap: stripe-mock not installed (its tests will skip)"
fi

# Install only when pyproject changed since the last install (keeps `make test` quick).
stamp=".stack/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ] || ! "$PYTHON" -c "import segments, aiokafka" >/dev/null 2>&1; then
  echo "bootstrap: pip install -e '.[dev]'"
  "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[dev]'
  mkdir -p .stack && touch "$stamp"
fi
