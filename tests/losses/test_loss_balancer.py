"""The EnCodec balancer: SPEC section 2's check, shares, state, and DDP norm averaging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.losses.balancer import Balancer


def _spec_check_losses(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Term A = |x - 1| (gradient -1 at 0), term B = 100 |x + 1| (gradient +100 at 0)."""
    return {"a": (x - 1).abs().sum(), "b": 100 * (x + 1).abs().sum()}


def test_spec_check_without_rescaling_gives_99() -> None:
    x = torch.zeros(1, 1, requires_grad=True)
    balancer = Balancer({"a": 1.0, "b": 1.0}, rescale_grads=False, per_batch_item=True)
    grad, metrics = balancer.compute_output_grad(_spec_check_losses(x), x)
    assert grad.item() == pytest.approx(99.0)
    assert metrics["a/grad_norm"] == pytest.approx(1.0)
    assert metrics["b/grad_norm"] == pytest.approx(100.0)
    assert metrics["b/grad_share"] == pytest.approx(100.0 / 101.0)


def test_spec_check_with_rescaling_gives_0() -> None:
    x = torch.zeros(1, 1, requires_grad=True)
    balancer = Balancer({"a": 1.0, "b": 1.0}, per_batch_item=True)
    grad, metrics = balancer.compute_output_grad(_spec_check_losses(x), x)
    # The bias-corrected EMA after one step equals the norms exactly: 1 and 100.
    assert metrics["a/ema_grad_norm"] == pytest.approx(1.0)
    assert metrics["b/ema_grad_norm"] == pytest.approx(100.0)
    assert grad.item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["a/grad_share"] == pytest.approx(0.5)


def test_backward_writes_the_balanced_gradient() -> None:
    x = torch.zeros(1, 1, requires_grad=True)
    Balancer({"a": 1.0, "b": 1.0}, rescale_grads=False).backward(_spec_check_losses(x), x)
    assert x.grad is not None and x.grad.item() == pytest.approx(99.0)


def _share_run(rescale: bool, steps: int = 200) -> list[dict[str, float]]:
    """Two terms whose gradients differ by ~1e7 in scale, weights 0.7 / 0.3, random data."""
    balancer = Balancer({"big": 0.7, "small": 0.3}, rescale_grads=rescale)
    history = []
    for _ in range(steps):
        output = torch.randn(8, 3, 8, 8, requires_grad=True)
        target_big, target_small = torch.randn_like(output), torch.randn_like(output)
        losses = {
            "big": 1000.0 * (output - target_big).square().flatten(1).sum(1).mean(),
            "small": 1e-3 * (output - target_small).abs().mean(),
        }
        _, metrics = balancer.compute_output_grad(losses, output)
        history.append(metrics)
    return history


def test_grad_shares_settle_at_the_weights() -> None:
    history = _share_run(rescale=True)
    for metrics in history[-50:]:
        assert metrics["big/grad_share"] == pytest.approx(0.7, abs=0.05)
        assert metrics["small/grad_share"] == pytest.approx(0.3, abs=0.05)
    # Without rescaling the large term supplies essentially all of the gradient.
    assert _share_run(rescale=False, steps=5)[-1]["big/grad_share"] > 0.99


def test_zero_weight_term_is_skipped_but_logged() -> None:
    x = torch.zeros(2, 3, requires_grad=True)
    not_differentiable = torch.tensor(5.0)  # autograd.grad on it would raise
    balancer = Balancer({"a": 1.0, "off": 0.0})
    grad, metrics = balancer.compute_output_grad({"a": (x - 1).abs().sum(), "off": not_differentiable}, x)
    assert metrics["off/grad_share"] == 0.0 and metrics["off/grad_norm"] == 0.0
    assert metrics["a/grad_share"] == pytest.approx(1.0)
    assert grad.shape == x.shape


def test_unknown_term_is_refused() -> None:
    x = torch.zeros(1, requires_grad=True)
    with pytest.raises(KeyError):
        Balancer({"a": 1.0}).compute_output_grad({"b": x.sum()}, x)


def test_state_dict_round_trip() -> None:
    first = Balancer({"a": 0.5, "b": 0.5}, ema_decay=0.9)
    for step in range(3):
        x = torch.full((2, 4), float(step), requires_grad=True)
        first.compute_output_grad({"a": (x * (step + 1)).sum(), "b": x.square().sum()}, x)
    second = Balancer({"a": 0.5, "b": 0.5}, ema_decay=0.9)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))  # survives serialisation
    x = torch.randn(2, 4, requires_grad=True)
    grad_first, metrics_first = first.compute_output_grad({"a": (3 * x).sum(), "b": x.square().sum()}, x)
    grad_second, metrics_second = second.compute_output_grad({"a": (3 * x).sum(), "b": x.square().sum()}, x)
    torch.testing.assert_close(grad_first, grad_second)
    assert metrics_first == metrics_second


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """Each rank's gradient norm is (rank + 1) * sqrt(3) per batch item."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        output = torch.zeros(2, 3, requires_grad=True)
        balancer = Balancer({"a": 1.0})
        _, metrics = balancer.compute_output_grad({"a": (float(rank + 1) * output).sum()}, output)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_norms_are_averaged_across_ranks(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = (1.0 + 2.0) / 2.0 * 3.0**0.5
    for rank in range(2):
        metrics = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert metrics["a/grad_norm"] == pytest.approx(expected, rel=1e-5)
        assert metrics["a/ema_grad_norm"] == pytest.approx(expected, rel=1e-5)
