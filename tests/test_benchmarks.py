"""Every benchmark's ``--quick`` form runs to the end and prints its JSON line: none of them rots.

The benchmarks are found with a glob, so a new ``benchmarks/*.py`` is smoke-tested as soon as it
exists; :data:`EXPECTED_KEYS` must name the keys of its JSON line (a test fails until it does).
Each runs as its own subprocess (as a user runs it), in its own process group, killed with the
whole group (its Ray instance included) if it outlives :data:`TIMEOUT_S`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))
TIMEOUT_S = 420  # a quick form takes seconds to a minute; several times that on a loaded 2-core box

#: Keys every benchmark's JSON line must carry.
EXPECTED_KEYS: dict[str, set[str]] = {
    "claims_coverage.py": {"draws", "rows", "overlap", "sequential", "seconds"},
    "data_loader.py": {"benchmark", "rows", "builds", "min_ratio_per_core_64px", "goal_10x_at_64px_met"},
    "gpu.py": {"device", "train_step", "fractional", "ddp", "goals", "seconds"},
    "matched_rate.py": {"args", "results"},
    "train_step.py": {"raysweep_images_per_s", "bare_images_per_s", "ratio"},
    "trial_overhead.py": {"bare", "raysweep_1_worker", "bare_ddp", "raysweep_2_workers", "bare_k", "raysweep_k",
                          "ratio_2_workers_vs_bare_ddp", "ratio_per_trial", "bare_per_trial_s",
                          "raysweep_per_trial_s", "bare_once_s", "raysweep_once_s", "ray_start_s"},
}
#: Arguments of each quick form (the GPU benchmark's is its CPU smoke test).
QUICK_ARGS: dict[str, list[str]] = {"gpu.py": ["--device", "cpu", "--quick"]}


def run_quick(name: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``python benchmarks/NAME --quick``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / name), *QUICK_ARGS.get(name, ["--quick"])],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{name} --quick ran past {TIMEOUT_S} s; its output ended:\n{out[-2000:]}\n{err[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def last_json_line(stdout: str) -> dict[str, Any] | None:
    """The last line of `stdout` that parses as a JSON object."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def numbers(value: Any) -> list[float]:
    """Every float in a nested JSON value."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    return [value] if isinstance(value, float) else []


def test_every_benchmark_names_its_keys() -> None:
    assert BENCHMARKS, "no benchmarks/*.py found"
    assert set(BENCHMARKS) == set(EXPECTED_KEYS), (
        f"benchmarks without expected JSON keys here: {sorted(set(BENCHMARKS) - set(EXPECTED_KEYS))}; "
        f"keys of benchmarks that no longer exist: {sorted(set(EXPECTED_KEYS) - set(BENCHMARKS))}"
    )


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_form_runs_and_prints_its_json_line(name: str) -> None:
    code, out, err = run_quick(name)
    assert code == 0, f"{name} --quick exited {code}:\n{out[-3000:]}\n{err[-3000:]}"
    summary = last_json_line(out)
    assert summary is not None, f"{name} --quick printed no JSON line:\n{out[-3000:]}"
    missing = EXPECTED_KEYS.get(name, set()) - set(summary)
    assert not missing, f"{name} --quick JSON line lacks {sorted(missing)}: {sorted(summary)}"
    # A measurement that came out NaN or infinite is a broken benchmark, not a slow machine.
    bad = [x for x in numbers(summary) if not math.isfinite(x)]
    assert not bad, f"{name} --quick printed non-finite numbers: {bad}"
