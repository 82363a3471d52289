"""What a person sees running the quickstart: its console (the sweep's lines, progress and end, then the claims)
is at most 60 lines for its 18 trials, and the report the sweep rewrote is there at the end, final (no
in-progress banner), with its reconstruction panel. The quickstart's own search (3 cells x 2 betas x 3 seeds)
on tiny images and 20 steps, through the CLI in a fresh process, as `scripts/quickstart.sh` runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "train.max_steps=20", "--set", "train.val_every=10", "--set", "data.image_size=16",
        "--set", "data.val_size=64", "--set", "data.xysquares.square_size=4",
        "--set", "data.xysquares.grid_spacing=4", "--set", "objective.kl_warmup_steps=0"]
MAX_LINES = 60


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raysweep.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_quickstart_console_is_at_most_60_lines(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HOME": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    storage = tmp_path / "runs"
    sweep = _cli("sweep", "search_spaces/quickstart.yaml", "--storage", str(storage), *TINY, env=env)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    claims = _cli("claims", "--experiment", "quickstart", "--storage", str(storage), env=env)
    assert claims.returncode == 0, claims.stderr[-3000:]
    console = [line for out in (sweep, claims) for line in (out.stdout + out.stderr).splitlines()]
    print(f"\nquickstart console: {len(console)} lines")
    assert len(console) <= MAX_LINES, "\n".join(console)
    assert sum("raysweep: trial" in line for line in console) == 36, "\n".join(console)  # a start and an end each
    assert "raysweep: 18/18 finished, 0 running, 0 pending, 0 failed" in sweep.stdout
    assert "== Status ==" not in sweep.stdout and "18 trials: 18 finished" in sweep.stdout

    page = storage / "quickstart" / "report" / "index.html"
    assert f"raysweep: report: {page.resolve().as_uri()}" in sweep.stdout
    text = page.read_text()
    assert "in progress" not in text and '<table class="recon">' in text and "raysweep.load_run(" in text
