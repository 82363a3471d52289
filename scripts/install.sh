#!/usr/bin/env bash
# Create (or reuse) the virtual environment at .venv/ and install raysweep into it.
# Usage: scripts/install.sh [EXTRAS]   e.g. scripts/install.sh test
# Idempotent: a stamp keyed on pyproject.toml skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
stamp=".venv/.raysweep-installed-$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # torch and torchvision are pinned as a matching pair in pyproject.toml (see the comment there).
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$spec"
  .venv/bin/python -c "import torch, torchvision, lpips, timm, diffusers, ray, mlflow, optuna" \
    || { echo "install check failed: a core dependency does not import" >&2; exit 1; }
  touch "$stamp"
fi
