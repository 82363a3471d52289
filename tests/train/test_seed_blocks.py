"""Seeds are blocks (common random numbers, SPEC section 4): one seed gives bit-identical runs at
equal configs, and the same seed at two lambdas starts from identical weights and draws identical
batches, flips and reparameterisation noise, so runs that share a seed share their seed-to-seed
spread and the claims may estimate slopes within seeds."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from raysweep.train.loop import Trainer, train

CLOCK = ("time", "seconds", "per_second")  # wall-clock fields, the only ones allowed to differ


def _no_clock(record: dict) -> dict:
    return {k: v for k, v in record.items() if not any(c in k for c in CLOCK)}


def _weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    [latest] = sorted((ckpt_dir / "checkpoints").iterdir())[-1:]
    return torch.load(latest / "state.pt", map_location="cpu", weights_only=False)["model"]


def test_one_seed_gives_bit_identical_runs(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(["train.seed=3"])
    first = train(cfg, tmp_path / "a", progress=False)
    second = train(cfg, tmp_path / "b", progress=False)
    assert _no_clock(first) == _no_clock(second)
    logs = [[_no_clock(json.loads(line)) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("a", "b")]
    assert logs[0] == logs[1] and len(logs[0]) >= 2
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_at_two_lambdas_starts_from_the_same_weights_and_batches(tmp_path: Path, make_trial) -> None:
    plain = Trainer(make_trial(["train.seed=5"]), tmp_path / "sse", report=None, progress=False)
    blurred = Trainer(make_trial(["train.seed=5", "loss.neural=box_blur", "loss.lambda_neural=0.9"]),
                      tmp_path / "blur", report=None, progress=False)
    other_seed = Trainer(make_trial(["train.seed=6"]), tmp_path / "other", report=None, progress=False)
    start, same, other = (t.model.state_dict() for t in (plain, blurred, other_seed))
    assert all(torch.equal(start[k], same[k]) for k in start)
    assert not all(torch.equal(start[k], other[k]) for k in start)  # the seed does set the weights
    batches = [[b[0] if isinstance(b, list | tuple) else b for _, b in zip(range(15), t._loader(), strict=False)]
               for t in (plain, blurred, other_seed)]
    assert all(torch.equal(x, y) for x, y in zip(batches[0], batches[1], strict=True))  # past one epoch (12 steps)
    assert not all(torch.equal(x, y) for x, y in zip(batches[0], batches[2], strict=True))
    for step in (0, 7, 13):
        plain.step = blurred.step = step
        assert torch.equal(plain._noise(), blurred._noise())
    assert torch.equal(plain.val_noise, blurred.val_noise)
