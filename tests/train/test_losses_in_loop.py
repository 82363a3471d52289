"""Every reconstruction loss trains inside the real loop (random weights for the pretrained
networks), the adversarial and learned-sigma parameters actually move, the balancer's gradient
shares follow lambda, and missing pretrained weights stop a run before it starts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysweep.train.loop import Trainer, train

REPO = Path(__file__).resolve().parents[2]
SHORT = ["train.max_steps=6", "train.val_every=6", "data.val_size=32", "train.batch_size=8",
         "loss.pretrained=false", "loss.dinov2.image_size=null", "loss.patchgan.layers=2",
         "loss.patchgan.channels=16"]


@pytest.mark.parametrize("neural", ["box_blur", "lpips", "dinov2", "patchgan"])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_each_loss_trains_at_each_lambda(tmp_path: Path, make_trial, neural: str, lam: float) -> None:
    cfg = make_trial([*SHORT, f"loss.neural={neural}", f"loss.lambda_neural={lam}"])
    final = train(cfg, tmp_path, progress=False)
    assert final["status"] == "finished"
    assert math.isfinite(final["rate"]) and math.isfinite(final["distortion_sse"])
    if lam > 0:
        assert math.isfinite(final[f"distortion_{neural}"])
        assert f"balancer/{neural}/grad_share" in final or neural == "patchgan"


def test_patchgan_discriminator_moves_only_after_start_step(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(["train.max_steps=10", "train.val_every=5", "loss.neural=patchgan",
                      "loss.lambda_neural=0.5", "loss.patchgan.start_step=5", "loss.patchgan.channels=8",
                      "loss.patchgan.layers=2"])
    trainer = Trainer(cfg, tmp_path, report=None, progress=False)
    disc = trainer.objective.discriminator
    assert disc is not None
    initial = [p.detach().clone() for p in disc.parameters()]
    snapshots: dict[int, list[torch.Tensor]] = {}
    trainer.report_fn = lambda m, c: snapshots.__setitem__(m["step"], [p.detach().clone() for p in disc.parameters()])
    final = trainer.fit()
    assert final["status"] == "finished"
    assert all(torch.equal(a, b) for a, b in zip(initial, snapshots[5], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(snapshots[5], snapshots[10], strict=True))
    assert "train_disc_loss" in final and "distortion_patchgan" in final


@pytest.mark.parametrize("pixel", ["learned_sigma_scalar", "learned_sigma_pixel"])
def test_learned_sigma_moves(tmp_path: Path, make_trial, pixel: str) -> None:
    # A scalar sigma only matters without the balancer (which would renormalise its scaling away).
    balancer = "false" if pixel == "learned_sigma_scalar" else "true"
    cfg = make_trial(["train.max_steps=30", "train.val_every=10", f"loss.pixel={pixel}", "loss.sigma_init=1.0",
                      f"loss.balancer={balancer}"])
    final = train(cfg, tmp_path, progress=False)
    assert final["status"] == "finished"
    assert math.isfinite(final["sigma"]) and abs(final["sigma"] - 1.0) > 1e-3


def test_grad_shares_follow_lambda(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(["train.max_steps=200", "train.val_every=100", "loss.neural=box_blur",
                      "loss.lambda_neural=0.3", "loss.box_blur.radius=2", "loss.balancer_ema_decay=0.9"])
    final = train(cfg, tmp_path, progress=False)
    assert final["balancer/sse/grad_share"] == pytest.approx(0.7, abs=0.05)
    assert final["balancer/box_blur/grad_share"] == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize(("neural", "file"), [("lpips", "vgg16-397923af.pth"), ("dinov2", "vit_small_patch14_dinov2")])
def test_missing_weights_fail_before_training(tmp_path: Path, neural: str, file: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCH_HOME": str(empty), "HF_HOME": str(empty),
           "RAYSWEEP_WEIGHTS_DIR": str(empty), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "raysweep.cli", "train", str(REPO / "search_spaces" / "quickstart.yaml"),
         "--out", str(out), "--set", f"loss.neural={neural}", "--set", "loss.lambda_neural=0.5"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and file in lines[0], result.stderr
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("balancer", [True, False])
def test_pixel_term_at_full_weight_before_the_patchgan_starts(tmp_path: Path, make_trial, balancer: bool) -> None:
    """Before loss.patchgan.start_step the distortion is the pixel term at full weight, balancer
    on or off (SPEC section 2), and patchgan/active says the adversarial term is off."""
    common = ["train.max_steps=4", "train.val_every=2", "loss.neural=patchgan", "loss.lambda_neural=0.5",
              "loss.patchgan.start_step=2", "loss.patchgan.channels=8", "loss.patchgan.layers=2",
              f"loss.balancer={str(balancer).lower()}"]
    trainer = Trainer(make_trial(common), tmp_path / "gan", report=None, progress=False)
    plain = Trainer(make_trial(["train.max_steps=4", "train.val_every=2", f"loss.balancer={str(balancer).lower()}"]),
                    tmp_path / "sse", report=None, progress=False)
    images = torch.stack([trainer.train_set[i][0] for i in range(trainer.cfg.train.batch_size)])
    out = trainer.model(images, noise=trainer._noise())
    before = trainer.objective.backward(images, out, step=0)
    reference = plain.objective.backward(images, plain.model(images, noise=plain._noise()), step=0)
    assert before.logged == {"patchgan/active": 0.0}
    assert before.loss == pytest.approx(reference.loss, rel=1e-6)  # 1.0 * SSE + beta KL, not 0.5 * SSE
    for mine, theirs in zip(trainer.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-7)
    trainer.optimizer.zero_grad()
    after = trainer.objective.backward(images, trainer.model(images, noise=trainer._noise()), step=2)
    assert after.logged == {"patchgan/active": 1.0} and "patchgan" in after.terms
    final = trainer.fit()
    assert final["patchgan/active"] == 1.0
