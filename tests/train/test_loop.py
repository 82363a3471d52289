"""The training loop end to end on generated data: both model families, finite metrics, falling
loss, divergence handling and the files a run leaves behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from raysweep.train.checkpoint import list_checkpoints
from raysweep.train.loop import FINAL_KEYS, Trainer, train


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch", ["vector_vae", "autoencoder_kl"])
def test_trains_with_finite_metrics_and_falling_loss(tmp_path: Path, make_trial, arch: str) -> None:
    cfg = make_trial([f"model.arch={arch}", "train.max_steps=60", "train.val_every=20", "model.latent_dim=4"])
    final = train(cfg, tmp_path, progress=False)
    assert final["status"] == "finished" and final["step"] == 60
    withheld = final.get("withheld", {})
    for key in FINAL_KEYS:
        if key in withheld:
            assert final[key] is None, key  # unsound on this sample: null, never a number
        else:
            assert math.isfinite(final[key]), key
    if arch == "autoencoder_kl":
        # 4 x 4 x 4 = 64 latent coordinates from the dataset's 256 images is below 4 per coordinate;
        # the 4 x 4 channel covariance over every position is always estimated.
        assert set(withheld) == {"aggregated_anisotropy"} and math.isfinite(final["channel_anisotropy"])
    else:
        assert not withheld
    log = read_log(tmp_path)
    assert [row["step"] for row in log] == [20, 40, 60]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert log[-1]["distortion_sse"] < log[0]["distortion_sse"]
    on_disk = json.loads((tmp_path / "final.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["rate"] == final["rate"]
    for name in ("config.yaml", "variance_profile.csv", "variance_profile.png", "reconstructions.png"):
        assert (tmp_path / name).is_file(), name
    assert 0 <= final["active_units"] <= (4 if arch == "vector_vae" else 4 * 8 * 8)
    assert final["active_units"] == int(final["active_units"])
    assert "mig" in final  # XYSquares has ground-truth factors


def test_report_called_at_every_validation_with_checkpoint(tmp_path: Path, make_trial) -> None:
    seen: list[tuple[int, Path | None]] = []
    cfg = make_trial(["train.max_steps=30", "train.val_every=10", "train.keep_checkpoints=2"])
    train(cfg, tmp_path, report=lambda m, c: seen.append((m["step"], c)), progress=False)
    assert [s for s, _ in seen] == [10, 20, 30]
    assert all(c is not None and (c / "state.pt").is_file() for _, c in seen[-2:])
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_000000020", "step_000000030"]


def test_fixed_beta_follows_sine_warmup(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(["train.max_steps=20", "train.val_every=10", "objective.beta=2.0",
                      "objective.kl_warmup_steps=20"])
    train(cfg, tmp_path, progress=False)
    log = read_log(tmp_path)
    assert log[0]["beta"] == pytest.approx(2.0 * math.sin(math.pi / 4))
    assert log[1]["beta"] == pytest.approx(2.0)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(["train.max_steps=40", "train.val_every=10"])
    trainer = Trainer(cfg, tmp_path, report=None, progress=False)

    original = trainer.validate_and_report

    def poison_after_first_validation(final: bool = False) -> dict:
        metrics = original(final=final)
        if trainer.step == 10:
            # A numerical blow-up: every weight becomes NaN, so the next loss is NaN.
            for p in trainer.model.parameters():
                p.data.fill_(float("nan"))
        return metrics

    trainer.validate_and_report = poison_after_first_validation  # type: ignore[method-assign]
    final = trainer.fit()
    assert final["status"] == "diverged"
    assert final["step"] == 10 and final["diverged_at_step"] == 10
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_000000010"]
    assert json.loads((tmp_path / "final.json").read_text())["status"] == "diverged"
    assert math.isfinite(final["rate"])  # the last good validation's metrics are kept


def test_batch_larger_than_dataset_is_a_user_error(tmp_path: Path, make_trial) -> None:
    from raysweep.errors import RaysweepError

    cfg = make_trial(["train.batch_size=4096"])
    with pytest.raises(RaysweepError, match="train.batch_size"):
        train(cfg, tmp_path, progress=False)
