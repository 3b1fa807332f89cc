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
# its tests read the binary and its fixtures3.json from the Go module cache. Pinned to
# the version the Go module proxy served when this was written. On a laptop its tests
# skip without it; under CI=true they fail, so its install failing fails here, loudly.
STRIPE_MOCK_VERSION=v0.203.0
stripe_mock_missing() {
  command -v go >/dev/null 2>&1 || return 0
  [ -x "$(go env GOPATH)/bin/stripe-mock" ] || return 0
  [ -f "$(go env GOMODCACHE)/github.com/stripe/stripe-mock@${STRIPE_MOCK_VERSION}/embedded/openapi/fixtures3.json" ] || return 0
  return 1
}
if stripe_mock_missing; then
  in_ci=false
  case "${CI:-}" in 1|true|TRUE|True|yes) in_ci=true ;; esac
  if ! command -v go >/dev/null 2>&1; then
    if $in_ci; then echo "bootstrap: CI needs stripe-mock, and there is no Go to install it" >&2; exit 1; fi
    echo "bootstrap: no Go: stripe-mock not installed (its tests will skip)"
  else
    echo "bootstrap: go install github.com/stripe/stripe-mock@${STRIPE_MOCK_VERSION}"
    if ! go install "github.com/stripe/stripe-mock@${STRIPE_MOCK_VERSION}"; then
      if $in_ci; then echo "bootstrap: CI needs stripe-mock and go install failed" >&2; exit 1; fi
      echo "bootstrap: stripe-mock not installed (its tests will skip)"
    fi
  fi
fi

# Install only when pyproject.toml or requirements.lock changed since the last install
# (keeps `make test` quick). Every dependency comes from the hashed lock (`make lock`
# refreshes it); then the project itself, editable, with nothing more resolved.
stamp=".stack/.installed-$(cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ] || ! "$PYTHON" -c "import segments, aiokafka" >/dev/null 2>&1; then
  echo "bootstrap: pip install --require-hashes -r requirements.lock"
  pip_install=("$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore)
  "${pip_install[@]}" --require-hashes -r requirements.lock
  # --no-build-isolation: the build backend (setuptools) is in the lock, hash-checked.
  "${pip_install[@]}" --no-deps --no-build-isolation -e .
  mkdir -p .stack && touch "$stamp"
fi
