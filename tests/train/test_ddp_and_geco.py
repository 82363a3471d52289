"""Two DDP workers over gloo follow the one-worker trajectory; GECO steers the rate to its target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysweep.train.launch import launch_local_ddp
from raysweep.train.loop import train


@pytest.mark.parametrize("balancer", [True, False])
def test_two_gloo_workers_match_one(tmp_path: Path, make_trial, balancer: bool) -> None:
    cfg = make_trial(["train.max_steps=20", "train.val_every=10", "loss.neural=box_blur",
                      "loss.lambda_neural=0.5", f"loss.balancer={str(balancer).lower()}",
                      "objective.geco.target_rate=5"])
    one = train(cfg, tmp_path / "one", progress=False)
    launch_local_ddp(cfg, tmp_path / "two", workers=2, progress=False)
    two = json.loads((tmp_path / "two" / "final.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key in ("rate", "distortion_sse", "distortion_box_blur", "anisotropy", "train_loss", "beta"):
        assert two[key] == pytest.approx(one[key], rel=2e-4), key
    one_log = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    two_log = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(one_log) == len(two_log) == 2


def test_geco_brings_rate_within_15_percent_of_target(tmp_path: Path, make_trial) -> None:
    target = 5.0
    # GECO starts at a per-image beta of 1/16 (its old per-batch value of 1 at batch 16).
    cfg = make_trial(["train.max_steps=400", "train.val_every=100", f"objective.geco.target_rate={target}",
                      "objective.geco.step_size=0.02", "objective.geco.ema_decay=0.9", "objective.beta=0.0625"])
    final = train(cfg, tmp_path, progress=False)
    assert abs(final["rate"] - target) / target < 0.15, final["rate"]
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["beta"] != pytest.approx(0.0625)  # beta actually moved from its initial value
