"""The interface every reconstruction term implements, and the cache of frozen feature networks.

A reconstruction term is one ``D_i(x, x_hat)`` of the objective (SPEC section 2)::

    L = Bal[ (1 - lambda) * D_sse(x, x_hat)  +  lambda * D_neural(x, x_hat) ]  +  beta_t * KL

Every term returns one distortion value *per image* (shape ``(B,)``); the training loop takes the
batch mean before handing it to :class:`raysweep.losses.balancer.Balancer`.

Terms with inputs or parameters outside ``x_hat``
--------------------------------------------------
The balancer rescales gradients with respect to ``x_hat`` only. Two terms also train something
else from the same likelihood: :class:`~raysweep.losses.gaussian_nll.ScalarSigmaNLL` (its
``log_sigma``, returned by :meth:`ReconstructionTerm.trainable_parameters`) and
:class:`~raysweep.losses.gaussian_nll.PixelSigmaNLL` (the decoder's ``x_logvar``). The loop adds
``w_i * term(x, x_hat.detach(), x_logvar).mean()`` to the *non-balanced* part of the loss (beside
``beta_t * KL``) so that sigma sees the true likelihood gradient while ``x_hat`` only receives the
balanced one. Every term therefore accepts a detached ``x_hat``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from raysweep.config import LossConfig

__all__ = [
    "ReconstructionTerm",
    "check_pair",
    "FrozenNetwork",
    "frozen_network",
    "clear_frozen_cache",
    "to_rgb",
]


class ReconstructionTerm(nn.Module):
    """Base class of a per-image reconstruction distortion ``D(x, x_hat)``.

    Subclasses set ``name`` (the metric name: ``"sse"``, ``"box_blur"``, ``"lpips"``,
    ``"dinov2"``, ``"patchgan"``, ``"gaussian_nll"``) and implement :meth:`forward`.

    Class attributes the training loop may read:

    - ``name``: metric name of the term.
    - ``frozen``: True when the term evaluates a frozen pretrained feature network (VGG, DINOv2).
      That network is kept *outside* this module's parameters and state dict (see
      :func:`frozen_network`), so it is never trained, never checkpointed and never moved by
      ``.to()``; it is fetched for the device of the input on every call.
    - ``needs_logvar``: True when :meth:`forward` requires the decoder's per-pixel ``x_logvar``.
    - ``adversarial``: True for the PatchGAN term, which also has a ``discriminator``, a
      ``start_step`` and a ``discriminator_loss`` method.
    """

    name: ClassVar[str] = ""
    frozen: ClassVar[bool] = False
    needs_logvar: ClassVar[bool] = False
    adversarial: ClassVar[bool] = False

    @classmethod
    def from_config(
        cls, loss: LossConfig, *, channels: int = 3, device: torch.device | str | None = None
    ) -> ReconstructionTerm:
        """The term as the ``loss`` block configures it: what ``raysweep.train.objective`` calls on the
        class registered under ``loss.neural`` / ``loss.pixel`` (:mod:`raysweep.registry`).

        Args:
            loss: the validated ``loss`` block (the term reads its own sub-block, e.g. ``loss.box_blur``).
            channels: image channels (for terms with a network of their own, the PatchGAN).
            device: where a frozen feature network is built eagerly (None: on first use).
        """
        return cls()

    @classmethod
    def weight_files(cls, weights_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """The pretrained files this term loads, one row each for ``raysweep weights`` (none by default)."""
        return []

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """Distortion per image.

        Args:
            x: target images, ``(B, C, H, W)`` in ``[-1, 1]``.
            x_hat: reconstructions, same shape; gradients flow to it (it may also be detached).
            x_logvar: per-pixel log variance from the decoder (only for ``needs_logvar`` terms).

        Returns:
            Tensor of shape ``(B,)``, float32; units are given by each subclass.
        """
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the *generator* optimiser must train (e.g. a learned scalar sigma).

        Frozen feature networks and the PatchGAN discriminator (which has its own optimiser)
        are never returned.
        """
        return []


def check_pair(x: Tensor, x_hat: Tensor) -> None:
    """Raise ValueError unless ``x`` and ``x_hat`` are equally shaped ``(B, C, H, W)`` tensors."""
    if x.dim() != 4 or x.shape != x_hat.shape:
        raise ValueError(
            f"expected x and x_hat of equal shape (B, C, H, W), got {tuple(x.shape)} and {tuple(x_hat.shape)}"
        )


def to_rgb(x: Tensor) -> Tensor:
    """Repeat a grey ``(B, 1, H, W)`` batch to three channels; RGB input is returned unchanged."""
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"neural losses take 1 or 3 channels, got {x.shape[1]}")
    return x


class FrozenNetwork(nn.Module):
    """Wrap a pretrained feature network so that it can never train.

    All parameters have ``requires_grad=False``, the module is in eval mode, and :meth:`train`
    is overridden so that a ``model.train()`` somewhere up the tree cannot switch on dropout or
    batch-norm updates. Gradients still flow through it to its *inputs*.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenNetwork:
        """Ignore ``mode``: a frozen network stays in eval mode."""
        return super().train(False)

    def forward(self, *args: object, **kwargs: object) -> object:
        """Call the wrapped network."""
        return self.network(*args, **kwargs)


_FROZEN_CACHE: dict[tuple[str, str | None, str], FrozenNetwork] = {}


def frozen_network(
    kind: str, weights_path: str | None, device: torch.device | str, build: Callable[[], nn.Module]
) -> FrozenNetwork:
    """Return the process-wide frozen network for ``(kind, weights_path, device)``, building it once.

    Why global state: VGG16 (138M parameters with its classifier at construction time) and the
    DINOv2 ViTs are expensive to build and load, identical for every term and every run that use
    the same weights file, and never change. A training process evaluates them for the loss,
    again for validation metrics, and possibly for several trials packed into one process; one
    instance per device saves seconds of start-up and hundreds of MB per copy. Because nothing
    trains them, sharing cannot leak state between runs. This is the only global state in
    ``raysweep.losses``.

    Args:
        kind: network identity, e.g. ``"lpips-vgg"`` or ``"dinov2:vit_small_patch14_dinov2"``.
        weights_path: resolved weights file, or None for random weights (tests).
        device: device the network must live on.
        build: constructs the network on CPU (called at most once per key).
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (kind, weights_path, str(device))
    cached = _FROZEN_CACHE.get(key)
    if cached is None:
        cached = FrozenNetwork(build()).to(device)
        _FROZEN_CACHE[key] = cached
    return cached


def clear_frozen_cache() -> None:
    """Drop every cached frozen network (frees memory, e.g. between tests)."""
    _FROZEN_CACHE.clear()
