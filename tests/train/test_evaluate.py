"""evaluate() is a pure function of a model, its terms and data: no Trainer needed, the same
numbers for any batch size, and the same as a hand computation of rate and SSE."""

from __future__ import annotations

import pytest
import torch

from raysweep.data import build_datasets
from raysweep.losses.box_blur import BoxBlurDistance
from raysweep.losses.pixel import SSE
from raysweep.metrics import kl_per_sample
from raysweep.models import build_model
from raysweep.train.evaluate import evaluate, validation_noise


def test_evaluate_without_a_trainer(make_trial) -> None:
    cfg = make_trial()
    _, val = build_datasets(cfg.data)
    torch.manual_seed(0)
    model = build_model(arch="vector_vae", preset="tiny", image_size=16, in_channels=3, latent_dim=6)
    noise = validation_noise(len(val), model.latent_shape, seed=0)
    terms = {"sse": SSE(), "box_blur": BoxBlurDistance(radius=1)}
    small = evaluate(model, terms, val, noise, device=torch.device("cpu"), batch_size=7)
    large = evaluate(model, terms, val, noise, device=torch.device("cpu"), batch_size=64)
    for key, value in large.metrics.items():
        assert small.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key  # float32 sums
    images = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        out = model(images, noise=noise)
    assert large.metrics["rate"] == pytest.approx(kl_per_sample(out.mu, out.logvar).mean().item(), rel=1e-5)
    sse = ((out.x_hat - images) ** 2).flatten(1).sum(1).mean().item()
    assert large.metrics["distortion_sse"] == pytest.approx(sse, rel=1e-5)
    assert large.metrics["mse"] == pytest.approx(sse / (3 * 16 * 16), rel=1e-5)
    assert large.metrics["distortion_box_blur"] <= large.metrics["distortion_sse"]
    assert large.profile is not None and large.profile.shape == (6,)
    assert large.withheld == {}
