#!/usr/bin/env bash
# The main job on the embedded defaults: install, then train the quickstart trial on generated
# XYSquares (CPU is enough). Outputs go to runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
out="${RAYSWEEP_OUT:-runs/quickstart}"
if [ -e "$out/final.json" ] || [ -d "$out/checkpoints" ]; then
  out="$out-$(date +%Y%m%d-%H%M%S)"
fi
.venv/bin/raysweep train search_spaces/quickstart.yaml --out "$out"
echo "quickstart done: metrics in $out/metrics.jsonl, summary in $out/final.json"
