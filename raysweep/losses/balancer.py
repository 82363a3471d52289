"""The EnCodec loss balancer (Defossez et al. 2022), written for raysweep (SPEC section 2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, autograd

__all__ = ["Balancer"]


class Balancer:
    """Make each reconstruction term's weight the fraction of the gradient it supplies to ``x_hat``.

    Algorithm. For every term ``i`` with weight ``w_i > 0``, each step:

    1. ``g_i = d loss_i / d output`` by ``torch.autograd.grad`` (``retain_graph=True``; no
       ``.backward`` on the model);
    2. ``n_i = mean_b || g_i[b] ||_2`` over batch items (``per_batch_item=True``) or
       ``|| g_i ||_2`` over the whole tensor;
    3. under ``torch.distributed`` with world size > 1, ``n_i`` is averaged across ranks (one
       ``all_reduce`` for all terms), so every rank uses the same scale;
    4. the bias-corrected EMA ``ema_i = S_i / Z_i`` with ``S_i <- decay S_i + n_i`` and
       ``Z_i <- decay Z_i + 1`` (after one step ``ema_i = n_i`` exactly);
    5. the gradient to backpropagate into the network from ``output`` is

       ``G = sum_i (w_i / sum_k w_k) * total_norm * g_i / (epsilon + ema_i)``

       (``sum_k`` runs over the terms passed to this call with non-zero weight), or the plain
       ``G = sum_i w_i g_i`` when ``rescale_grads=False``.

    So ``w_i / sum_k w_k`` is the share of term ``i`` in the gradient whatever its scale, and
    ``lambda`` sets the composition of the distortion, not its size. Terms that also depend on
    something else (learned sigma, the decoder's ``x_logvar``) get only their ``x_hat`` gradient
    here; see :mod:`raysweep.losses.base` for how the loop trains the rest.

    Metrics (floats, per term name): ``<name>/grad_norm``: this step's norm ``n_i`` (rank
    average under DDP); ``<name>/ema_grad_norm``: ``ema_i``; ``<name>/grad_share``: the norm of
    the term's contribution to ``G`` (``c_i * n_i`` with ``c_i`` its scale factor: the rescaling
    factor above, or ``w_i`` without rescaling) divided by the sum of these over all terms.
    With rescaling it tends to ``w_i / sum_k w_k``. Skipped terms (weight 0) report 0 share and
    0 norm. Log each term's raw value beside these.

    Args:
        weights: weight per term name (e.g. ``{"sse": 1 - lambda, "lpips": lambda}``).
        total_norm: norm of the combined gradient per batch item (with rescaling).
        ema_decay: decay of the norm EMA.
        per_batch_item: norms per batch item, averaged over the batch (else whole-tensor norm).
        epsilon: added to the EMA norm before dividing.
        rescale_grads: False gives ``sum_i w_i g_i`` (for comparison; the EMA is still tracked).

    Example::

        balancer = Balancer({"sse": 1 - lam, "lpips": lam})
        x_hat, mu, logvar = model(x)
        losses = {"sse": sse(x, x_hat).mean(), "lpips": lpips(x, x_hat).mean()}
        grad, metrics = balancer.compute_output_grad(losses, x_hat)
        # one backward for balanced reconstruction + KL (DDP needs exactly one):
        total = (x_hat * grad).sum() + beta * kl.mean()
        total.backward()
    """

    def __init__(
        self,
        weights: dict[str, float],
        total_norm: float = 1.0,
        ema_decay: float = 0.999,
        per_batch_item: bool = True,
        epsilon: float = 1e-12,
        rescale_grads: bool = True,
    ) -> None:
        if any(weight < 0 for weight in weights.values()):
            raise ValueError(f"balancer weights must be >= 0, got {weights}")
        self.weights = dict(weights)
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.per_batch_item = per_batch_item
        self.epsilon = epsilon
        self.rescale_grads = rescale_grads
        self._ema_total: dict[str, float] = {}
        self._ema_count: dict[str, float] = {}

    def _norm(self, grad: Tensor) -> Tensor:
        """Per-batch-item L2 norm averaged over the batch, or the whole-tensor L2 norm (float32)."""
        grad = grad.float()
        if self.per_batch_item and grad.dim() > 1:
            return grad.flatten(1).norm(p=2, dim=1).mean()
        return grad.norm(p=2)

    def _update_ema(self, name: str, value: float) -> float:
        """Advance the bias-corrected EMA of ``name`` by ``value`` and return its new average."""
        total = self._ema_total.get(name, 0.0) * self.ema_decay + value
        count = self._ema_count.get(name, 0.0) * self.ema_decay + 1.0
        self._ema_total[name], self._ema_count[name] = total, count
        return total / count

    def ema_norm(self, name: str) -> float:
        """Current EMA gradient norm of ``name`` (0 before its first step)."""
        count = self._ema_count.get(name, 0.0)
        return self._ema_total[name] / count if count else 0.0

    def compute_output_grad(
        self, losses: dict[str, Tensor], output: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """The balanced gradient of ``losses`` with respect to ``output``, and metrics.

        Args:
            losses: scalar loss per term name (each a key of ``weights``), built from ``output``.
            output: the tensor the gradient is taken with respect to (the decoder's ``x_hat``).

        Returns:
            ``(grad, metrics)``: ``grad`` has ``output``'s shape and dtype, to be backpropagated
            with ``output.backward(grad)`` or via ``(output * grad).sum()``; ``metrics`` as in
            the class docstring. The graph of ``output`` is retained for that backward.
        """
        unknown = set(losses) - set(self.weights)
        if unknown:
            known = sorted(self.weights)
            raise KeyError(f"no balancer weight for loss terms {sorted(unknown)}; known: {known}")
        active = [name for name in losses if self.weights[name] > 0]
        grads: dict[str, Tensor] = {}
        for name in active:
            (grad,) = autograd.grad(losses[name], [output], retain_graph=True, allow_unused=True)
            # A loss that does not depend on output (e.g. a constant) contributes nothing.
            grads[name] = torch.zeros_like(output) if grad is None else grad

        norms = torch.stack([self._norm(grads[name]) for name in active]) if active else None
        if norms is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Averaged before the EMA so every rank rescales by the same numbers.
            dist.all_reduce(norms, op=dist.ReduceOp.SUM)
            norms = norms / dist.get_world_size()
        norm_values = norms.tolist() if norms is not None else []  # one device sync for all terms

        weight_sum = sum(self.weights[name] for name in active)
        combined = torch.zeros_like(output, dtype=torch.float32)
        contribution: dict[str, float] = {}
        metrics: dict[str, float] = {}
        for name, norm in zip(active, norm_values, strict=True):
            ema = self._update_ema(name, norm)
            if self.rescale_grads:
                scale = self.weights[name] / weight_sum * self.total_norm / (self.epsilon + ema)
            else:
                scale = self.weights[name]
            combined = combined + scale * grads[name].float()
            contribution[name] = scale * norm
            metrics[f"{name}/grad_norm"] = norm
            metrics[f"{name}/ema_grad_norm"] = ema
        contribution_sum = sum(contribution.values())
        for name in losses:
            share = contribution.get(name, 0.0) / contribution_sum if contribution_sum > 0 else 0.0
            metrics[f"{name}/grad_share"] = share
            metrics.setdefault(f"{name}/grad_norm", 0.0)
            metrics.setdefault(f"{name}/ema_grad_norm", self.ema_norm(name))
        return combined.to(output.dtype), metrics

    def backward(self, losses: dict[str, Tensor], output: Tensor) -> dict[str, float]:
        """Backpropagate the balanced gradient through ``output`` now (``output.backward(grad)``).

        For loops that do not combine it with other terms; under DDP prefer one backward of
        ``(output * grad).sum() + other_losses``. Returns the metrics.
        """
        grad, metrics = self.compute_output_grad(losses, output)
        output.backward(grad)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The EMA state (for checkpoints): running sums and bias-correction counts per term."""
        return {"ema_total": dict(self._ema_total), "ema_count": dict(self._ema_count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the EMA state written by :meth:`state_dict`."""
        self._ema_total = {name: float(value) for name, value in state["ema_total"].items()}
        self._ema_count = {name: float(value) for name, value in state["ema_count"].items()}
