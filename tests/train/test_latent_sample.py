"""The final validation's latent sample: aggregated-posterior statistics and MIG from more posterior
means than the validation set holds, withheld numbers as null, and MIG that repeats across samples."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from raysweep.data import build_latent_sample
from raysweep.metrics import mutual_info_gap
from raysweep.train.evaluate import latent_statistics
from raysweep.train.loop import Trainer, train


def test_final_validation_uses_the_latent_sample(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(["data.image_size=32", "data.xysquares.square_size=4", "data.latent_sample_size=3000"])
    final = train(cfg, tmp_path, progress=False)
    assert final["aggregated_samples"] == final["mig_samples"] == 3000
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["mig_samples"] == lines[0]["aggregated_samples"] == cfg.data.val_size  # earlier: val set
    assert lines[-1]["mig_samples"] == 3000
    assert "withheld" not in final and final["aggregated_anisotropy"] >= 0


def test_unsound_aggregated_anisotropy_is_null_with_its_reason(tmp_path: Path, make_trial) -> None:
    """A spatial latent of 4 x 4 x 4 = 64 coordinates from 100 means: withheld, never a number;
    the channel anisotropy (4 x 4 covariance over 1600 positions) is reported."""
    cfg = make_trial(["model.arch=autoencoder_kl", "model.latent_dim=4", "data.val_size=64",
                      "data.latent_sample_size=100", "train.max_steps=10", "train.val_every=10"])
    final = train(cfg, tmp_path, progress=False)
    written = json.loads((tmp_path / "final.json").read_text())
    assert written["aggregated_anisotropy"] is None
    assert "aggregated_condition" not in written
    reason = written["withheld"]["aggregated_anisotropy"]
    assert "100 posterior means for 64 latent coordinates" in reason and "data.latent_sample_size" in reason
    assert final["channel_anisotropy"] >= 0 and final["aggregated_samples"] == 100


def test_mig_from_the_default_sample_repeats_across_samples(tmp_path: Path, make_trial) -> None:
    """Two latent samples of the default size (10,000 images, different draws) give MIG within 0.02
    of each other for the same model; the sample size is recorded beside the value."""
    cfg = make_trial(["data.image_size=64", "data.xysquares.square_size=8", "data.xysquares.num_squares=3",
                      "train.max_steps=30", "train.val_every=30", "model.latent_dim=10"])
    assert cfg.data.latent_sample_size == 10_000
    trainer = Trainer(cfg, tmp_path, None, progress=False)
    trainer.fit()
    values = []
    for split_seed in (0, 1):
        sample = build_latent_sample(cfg.data.model_copy(update={"split_seed": split_seed}))
        metrics = latent_statistics(trainer.model, sample, device=trainer.device).metrics
        assert metrics["mig_samples"] == 10_000
        values.append(metrics["mig"])
    assert abs(values[0] - values[1]) < 0.02, values


def _codes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes that carry six 8-valued factors (XYSquares' factor sizes) with noise."""
    g = torch.Generator().manual_seed(seed)
    factors = torch.randint(0, 8, (n, 6), generator=g)
    mixing = torch.eye(6, 10) + 0.3 * torch.randn(6, 10, generator=torch.Generator().manual_seed(99))
    return factors.float() @ mixing + 0.8 * torch.randn(n, 10, generator=g), factors


def test_mig_estimator_spread_at_the_default_sample_size() -> None:
    """The 20-bin MIG estimate of one latent code scatters by over 0.02 between draws of 512 (the
    validation set) and by well under 0.02 between draws of 10,000 (the latent sample)."""
    def spread(n: int) -> float:
        values = [mutual_info_gap(*_codes(n, seed), [8] * 6) for seed in range(6)]
        return max(values) - min(values)

    assert spread(10_000) < 0.01
    assert spread(512) > spread(10_000) * 3
