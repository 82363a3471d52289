#!/usr/bin/env bash
# The main job on the embedded defaults: install, then run the quickstart sweep (18 trials of the
# tiny VAE on generated XYSquares, SSE vs box blur) on a local Ray instance; CPU is enough.
# Results go to runs/quickstart/ (runs/quickstart-<time>/ when that already holds a sweep).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
name="${RAYSWEEP_NAME:-quickstart}"
if [ -e "runs/$name/sweep.yaml" ]; then
  name="$name-$(date +%Y%m%d-%H%M%S)"
fi
# The sweep rewrites its frontier report, runs/$name/report/, as trials finish; the last rewrite is the final one.
.venv/bin/raysweep sweep search_spaces/quickstart.yaml --name "$name"
# The paper's claims as statistics over the sweep's runs: slopes, 95% intervals, verdicts.
.venv/bin/raysweep claims --experiment "$name" --storage runs
echo "quickstart done: results in runs/$name; report: file://$PWD/runs/$name/report/index.html"
echo "browse the runs in MLflow: .venv/bin/raysweep ui --storage runs   (then open http://127.0.0.1:5000)"
