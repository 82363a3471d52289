#!/usr/bin/env bash
# Install raysweep with its test extras into .venv/ and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
# Headless Chromium for the frontier report's browser test (Debian's package). Only as root with
# apt-get; elsewhere that test skips and says why. Idempotent: nothing runs once chromium is there.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "scripts/test.sh: could not install chromium; the report's browser test will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
