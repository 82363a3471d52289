"""raysweep: distributed hyperparameter sweeps of VAE training on Ray Tune, tracked in MLflow.

``raysweep.load_run(run)`` gives a run's trained model, its trial config and final metrics
(:mod:`raysweep.tracking.trained`); it is imported on first use, so ``import raysweep`` stays light
(no torch, MLflow or Ray).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raysweep.tracking.trained import LoadedRun, load_run

__version__ = "0.1.0"
__all__ = ["LoadedRun", "__version__", "load_run"]

_LAZY = ("LoadedRun", "load_run")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from raysweep.tracking import trained

        return getattr(trained, name)
    raise AttributeError(f"module 'raysweep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
