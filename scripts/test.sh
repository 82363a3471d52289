#!/usr/bin/env bash
# Install raysweep with its test extras into .venv/ and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
exec .venv/bin/python -m pytest "$@"
