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
# A real single-node SLURM for tests/cluster/test_slurm.py (Debian's packages; the test starts
# munged, slurmctld and slurmd itself with a generated slurm.conf). Only as root with apt-get;
# elsewhere those tests skip and say why. Idempotent like chromium's.
if ! { command -v slurmctld && command -v slurmd && command -v munged && command -v sbatch; } >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd munge slurm-client \
      >/dev/null) || echo "scripts/test.sh: could not install SLURM; the SLURM tests will skip" >&2
fi
exec .venv/bin/python -m pytest "$@"
