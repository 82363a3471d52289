"""The training objective of SPEC section 2 (paper eq. 6):

    L = Bal[ (1 - lambda) * D_pixel(x, x_hat) + lambda * D_neural(x, x_hat) ] + beta_t * KL

Reconstruction terms are :class:`~raysweep.losses.base.ReconstructionTerm` modules returning
per-image values; this module weights them, routes their gradients at ``x_hat`` through the EnCodec
balancer (or a plain weighted sum when ``loss.balancer`` is false), adds ``beta_t * KL`` outside the
balancer, and performs ONE backward call per step (DDP's reducer allows exactly one).

beta_t is the fixed beta times the sine warm-up factor, or the GECO multiplier (held at its initial
value during warm-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from raysweep.config import TrialConfig
from raysweep.control.geco import GECO
from raysweep.control.schedules import in_warmup, kl_warmup_factor
from raysweep.losses.base import ReconstructionTerm  # imports raysweep.losses: every term registers its class
from raysweep.metrics import kl_per_sample
from raysweep.models.base import VAEOutput
from raysweep.registry import NEURAL_TERMS, PIXEL_TERMS
from raysweep.train.distributed import all_reduce_mean


def build_pixel_term(cfg: TrialConfig) -> ReconstructionTerm:
    """The pixel likelihood term registered under ``loss.pixel`` (:mod:`raysweep.registry`)."""
    return PIXEL_TERMS.code(cfg.loss.pixel).from_config(cfg.loss)


def build_neural_term(cfg: TrialConfig, channels: int, device: torch.device) -> ReconstructionTerm | None:
    """The neural distortion registered under ``loss.neural`` (None for the entry that builds no term).

    Frozen feature networks come from a per-process cache (:func:`raysweep.losses.base.frozen_network`),
    so building the same term twice in one process reuses the network.
    """
    spec = NEURAL_TERMS[cfg.loss.neural]
    if not spec.builds_term:
        return None
    return NEURAL_TERMS.code(spec.name).from_config(cfg.loss, channels=channels, device=device)


@dataclass
class StepResult:
    """What one generator step computed (plain floats, for logging and divergence checks)."""

    loss: float
    rate: float
    beta: float
    terms: dict[str, float]
    extra: dict[str, float] = field(default_factory=dict)  # balancer metrics and GECO's rate_ema
    logged: dict[str, float] = field(default_factory=dict)  # training metrics logged under their own names

    def finite(self) -> bool:
        values = [self.loss, self.rate, *self.terms.values()]
        return all(math.isfinite(v) for v in values)


class Objective(nn.Module):
    """Reconstruction terms, their weights, the balancer and the KL weight controller of one trial.

    Args:
        cfg: the trial configuration (blocks ``loss`` and ``objective`` are read).
        channels: image channels (for the PatchGAN discriminator).
        device: where frozen feature networks and trainable loss parameters live.
    """

    def __init__(self, cfg: TrialConfig, channels: int, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        lam = cfg.loss.lambda_neural
        self.pixel = build_pixel_term(cfg).to(device)
        # A term with weight 0 is not even built: no wasted forward passes, no discriminator, and
        # no demand for pretrained weights the run does not use.
        neural = build_neural_term(cfg, channels, device) if lam > 0 else None
        self.neural = neural.to(device) if neural is not None else None
        self.weights: dict[str, float] = {self.pixel.name: 1.0 - lam}
        if self.neural is not None:
            self.weights[self.neural.name] = lam
        self.balancer = None
        if cfg.loss.balancer:
            from raysweep.losses.balancer import Balancer

            self.balancer = Balancer(
                weights=self.weights,
                total_norm=cfg.loss.balancer_total_norm,
                ema_decay=cfg.loss.balancer_ema_decay,
                epsilon=cfg.loss.balancer_epsilon,
            )
        obj = cfg.objective
        self.geco: GECO | None = None
        if obj.geco_enabled:
            g = obj.geco
            self.geco = GECO(
                target_rate=float(g.target_rate),  # type: ignore[arg-type]
                beta_init=obj.beta,
                step_size=g.step_size,
                ema_decay=g.ema_decay,
                beta_min=g.beta_min,
                beta_max=g.beta_max,
            )

    # ------------------------------------------------------------------ parameters and state
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Loss parameters the generator optimiser trains (e.g. the learned scalar sigma)."""
        params = list(self.pixel.trainable_parameters())
        if self.neural is not None:
            params += list(self.neural.trainable_parameters())
        return params

    @property
    def discriminator(self) -> nn.Module | None:
        """The PatchGAN discriminator when the adversarial term is active, else None."""
        return getattr(self.neural, "discriminator", None)

    def adversarial_active(self, step: int) -> bool:
        """Whether the adversarial term (and the discriminator's updates) are on at `step`."""
        return self.discriminator is not None and step >= int(getattr(self.neural, "start_step", 0))

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Controller and balancer state plus trainable loss parameters (not frozen networks)."""
        state: dict[str, Any] = {"pixel": self.pixel.state_dict()}
        if self.geco is not None:
            state["geco"] = self.geco.state_dict()
        if self.balancer is not None:
            state["balancer"] = self.balancer.state_dict()
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
        return state

    def load_from_checkpoint(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_for_checkpoint`."""
        self.pixel.load_state_dict(state["pixel"])
        if self.geco is not None:
            self.geco.load_state_dict(state["geco"])
        if self.balancer is not None:
            self.balancer.load_state_dict(state["balancer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])

    def evaluation_terms(self) -> dict[str, ReconstructionTerm]:
        """Every reconstruction term of the trial by name (validation reports each one)."""
        terms = {self.pixel.name: self.pixel}
        if self.neural is not None:
            terms[self.neural.name] = self.neural
        return terms

    # ------------------------------------------------------------------------------- beta
    def beta(self, step: int) -> float:
        """beta_t used at `step`: GECO's multiplier, or beta times the sine warm-up factor."""
        if self.geco is not None:
            return self.geco.beta
        return self.cfg.objective.beta * kl_warmup_factor(step, self.cfg.objective.kl_warmup_steps)

    # ------------------------------------------------------------------------------- step
    def active_terms(self, step: int) -> dict[str, ReconstructionTerm]:
        """Terms evaluated at `step` (the adversarial one only from its start step on)."""
        terms: dict[str, ReconstructionTerm] = {}
        if self.weights[self.pixel.name] > 0:
            terms[self.pixel.name] = self.pixel
        if self.neural is not None and (self.discriminator is None or self.adversarial_active(step)):
            terms[self.neural.name] = self.neural
        if not terms:
            # lambda = 1 with the adversarial term not started yet: train on the pixel term alone
            # until it starts, rather than on nothing.
            terms[self.pixel.name] = self.pixel
        return terms

    def backward(self, x: torch.Tensor, out: VAEOutput, step: int) -> StepResult:
        """Compute the objective on one batch and backpropagate it with a single backward call.

        Args:
            x: the (augmented) input batch, (B, C, H, W) in [-1, 1].
            out: the model's output on `x`.
            step: the global optimiser step (for warm-up, GECO hold and the adversarial start).

        Returns the step's values: total (unbalanced) objective, batch rate in nats, beta used and
        each reconstruction term's batch mean.
        """
        terms = self.active_terms(step)
        if self.discriminator is not None and not self.adversarial_active(step):
            # Before the PatchGAN's start step the distortion is the pixel term at full weight
            # (SPEC section 2), with or without the balancer; lambda is the neural share from then on.
            weights = {self.pixel.name: 1.0}
        else:
            weights = {name: self.weights[name] for name in terms}
        if sum(weights.values()) == 0:
            weights = dict.fromkeys(terms, 1.0)
        x_hat = out.x_hat.float()
        x_logvar = None if out.x_logvar is None else out.x_logvar.float()
        means = {name: term(x, x_hat, x_logvar).mean() for name, term in terms.items()}
        kl = kl_per_sample(out.mu, out.logvar).mean()
        beta = self.beta(step)
        extra: dict[str, float] = {}

        if self.balancer is not None:
            grad_x_hat, bal_metrics = self.balancer.compute_output_grad(
                {name: means[name] for name in terms if weights[name] > 0}, x_hat
            )
            extra.update(bal_metrics)
            # beta is per image (SPEC section 2): the balanced gradient has norm total_norm per
            # image, and each image enters the batch objective with weight 1/B, exactly like its
            # KL term (a batch mean). Dividing by the local batch here and letting DDP average
            # over ranks gives the mean over the global batch, so the same beta means the same
            # trade-off at any batch size and any number of workers.
            grad_x_hat = grad_x_hat / x_hat.shape[0]
            # The KL term and everything that does not pass through x_hat (learned sigma's
            # log-sigma, the decoder's pixel log-variance) are backpropagated outside the balancer.
            outside = beta * kl
            for name, term in terms.items():
                if term.trainable_parameters() or term.needs_logvar:
                    detached = term(x, x_hat.detach(), x_logvar).mean()
                    if detached.requires_grad:
                        outside = outside + weights[name] * detached
            torch.autograd.backward([x_hat, outside], [grad_x_hat, torch.ones_like(outside)])
        else:
            total = beta * kl
            for name in terms:
                total = total + weights[name] * means[name]
            total.backward()

        # One all-reduce per step gives every rank the global batch values, so GECO's beta and
        # the divergence check (NaN anywhere makes the mean NaN) agree on all ranks.
        names = list(means)
        local = torch.stack(
            [kl.detach(), sum(weights[n] * means[n].detach() for n in names) + beta * kl.detach()]
            + [means[n].detach() for n in names]
        ).float()
        reduced = all_reduce_mean(local).tolist()
        rate_batch, loss_value = reduced[0], reduced[1]
        term_values = dict(zip(names, reduced[2:], strict=True))
        if self.geco is not None:
            warming = in_warmup(step, self.cfg.objective.kl_warmup_steps)
            self.geco.update(rate_batch, warming_up=warming)
            extra["rate_ema"] = self.geco.rate_ema
        logged: dict[str, float] = {}
        if self.discriminator is not None:
            # 0 before loss.patchgan.start_step (the adversarial term is off), 1 from then on.
            logged["patchgan/active"] = float(self.adversarial_active(step))
        return StepResult(
            loss=loss_value,
            rate=rate_batch,
            beta=beta,
            terms=term_values,
            extra=extra,
            logged=logged,
        )
