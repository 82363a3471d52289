"""GECO (Rezende and Viola 2018) used as a rate controller: beta is steered so that the rate
(KL in nats) converges to a target R*.

The update, once per optimiser step (SPEC section 2)::

    R_ema <- a * R_ema + (1 - a) * KL_batch       # EMA of the per-step rate
    C     =  (R_ema - R*) / R*                    # relative constraint violation
    beta  <- clamp(beta * exp(eta * C), beta_min, beta_max)

beta rises while the rate is above the target (pushing the rate down) and falls below it. During
KL warm-up beta is held at its initial value and only the EMA is tracked, which decouples the
controller from the warm-up transient. The multiplicative form keeps beta positive without a
projection step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class GECOState:
    """Checkpointed controller state. `rate_ema` is None until the first observation."""

    beta: float
    rate_ema: float | None = None
    steps: int = 0


class GECO:
    """Multiplicative GECO controller for beta.

    Args:
        target_rate: the rate target R*, nats per image (> 0).
        beta_init: beta before the first update (also the value held during warm-up).
        step_size: eta, the gain of the multiplicative update.
        ema_decay: a, the decay of the rate EMA.
        beta_min, beta_max: the clamp applied after every update.

    Example::

        geco = GECO(target_rate=20.0, beta_init=1.0)
        beta = geco.update(kl_batch_mean, warming_up=False)
    """

    def __init__(
        self,
        target_rate: float,
        beta_init: float,
        step_size: float = 0.01,
        ema_decay: float = 0.99,
        beta_min: float = 1e-4,
        beta_max: float = 1e4,
    ) -> None:
        if target_rate <= 0:
            raise ValueError("target_rate must be positive")
        self.target_rate = float(target_rate)
        self.step_size = float(step_size)
        self.ema_decay = float(ema_decay)
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.state = GECOState(beta=min(max(float(beta_init), self.beta_min), self.beta_max))

    @property
    def beta(self) -> float:
        """The current multiplier that weights the KL term."""
        return self.state.beta

    @property
    def rate_ema(self) -> float:
        """EMA of the per-step batch rate, nats (NaN before the first update)."""
        return math.nan if self.state.rate_ema is None else self.state.rate_ema

    def violation(self) -> float:
        """Relative constraint violation C = (R_ema - R*) / R* (dimensionless)."""
        return (self.rate_ema - self.target_rate) / self.target_rate

    def update(self, rate_batch: float, warming_up: bool = False) -> float:
        """Observe this step's mean batch KL (nats) and return the beta to use from now on.

        The first observation initialises the EMA (rather than blending with an arbitrary zero).
        Under DDP, pass the batch rate averaged over ranks so every rank computes the same beta.
        """
        a = self.ema_decay
        if self.state.rate_ema is None:
            self.state.rate_ema = float(rate_batch)
        else:
            self.state.rate_ema = a * self.state.rate_ema + (1.0 - a) * float(rate_batch)
        self.state.steps += 1
        if not warming_up:
            # Same update in log space, clamped there: exp() of a huge violation cannot overflow.
            log_beta = math.log(self.state.beta) + self.step_size * self.violation()
            log_beta = min(max(log_beta, math.log(self.beta_min)), math.log(self.beta_max))
            self.state.beta = math.exp(log_beta)
        return self.state.beta

    def state_dict(self) -> dict[str, float | int | None]:
        """Plain dict for checkpoints."""
        return asdict(self.state)

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        """Restore from :meth:`state_dict`."""
        self.state = GECOState(
            beta=float(state["beta"]),  # type: ignore[arg-type]
            rate_ema=None if state.get("rate_ema") is None else float(state["rate_ema"]),  # type: ignore[arg-type]
            steps=int(state.get("steps", 0) or 0),
        )
