"""Interrupting a run and resuming it reproduces the uninterrupted run: in process (an exception
after a checkpoint) and for real (SIGKILL of a `raysweep train` process, then `--resume`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raysweep.train.checkpoint import latest_checkpoint
from raysweep.train.loop import train

REPO = Path(__file__).resolve().parents[2]
# GECO with warm-up, a second (balanced) term and flips: every piece of state a resume must restore.
RICH = ["train.max_steps=40", "train.val_every=10", "objective.geco.target_rate=5",
        "objective.kl_warmup_steps=15", "loss.neural=box_blur", "loss.lambda_neural=0.5"]
COMPARED = ("rate", "distortion_sse", "distortion_box_blur", "anisotropy", "beta", "train_loss", "rate_ema")


class Interrupt(Exception):
    pass


def assert_same_metrics(a: dict, b: dict) -> None:
    for key in COMPARED:
        if key in a or key in b:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key


def test_resume_in_process_matches_uninterrupted(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(RICH)
    whole = train(cfg, tmp_path / "whole", progress=False)

    def stop_at_20(metrics: dict, checkpoint: Path | None) -> None:
        if metrics["step"] == 20:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", report=stop_at_20, progress=False)
    checkpoint = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "step_000000020"
    resumed = train(cfg, tmp_path / "cut", resume_from=checkpoint, progress=False)
    assert resumed["step"] == 40
    assert (whole["resumed_from_step"], resumed["resumed_from_step"]) == (0, 20)
    assert_same_metrics(whole, resumed)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40]


def test_sigkill_then_cli_resume_matches_uninterrupted(tmp_path: Path, make_trial) -> None:
    overrides = ["train.max_steps=1500", "train.val_every=100", "objective.geco.target_rate=5",
                 "loss.neural=box_blur", "loss.lambda_neural=0.5"]
    cfg = make_trial(overrides)
    config_file = tmp_path / "trial.yaml"
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "raysweep.cli", "train", str(config_file), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step_000000300").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "train exited early"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final.json").exists(), "the run finished before it could be interrupted"

    refused = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "final.json").read_text())
    whole = train(cfg, tmp_path / "whole", progress=False)
    assert resumed["step"] == whole["step"] == 1500
    assert_same_metrics(whole, resumed)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(100, 1501, 100))


def test_resume_from_the_last_checkpoint_does_not_validate_twice(tmp_path: Path, make_trial) -> None:
    # A sweep driver killed after a trial's final checkpoint but before Tune recorded the trial as
    # finished restarts it from that checkpoint: nothing is left to train or to log.
    cfg = make_trial(["train.max_steps=20", "train.val_every=10"])
    first = train(cfg, tmp_path, progress=False)
    last = latest_checkpoint(tmp_path / "checkpoints")
    assert last is not None and last.name == "step_000000020"
    again = train(cfg, tmp_path, resume_from=last, progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]
    assert again["status"] == "finished" and again["rate"] == pytest.approx(first["rate"])
