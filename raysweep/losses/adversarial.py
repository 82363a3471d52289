"""PatchGAN adversarial distortion: hinge generator loss plus discriminator feature matching.

Usage in a training loop (single process or DDP)::

    term = PatchGANLoss(in_channels=3, start_step=5000)
    disc_opt = torch.optim.Adam(term.discriminator.parameters(), lr=lr / 2, betas=(0.5, 0.9))
    disc = DDP(term.discriminator) if distributed else term.discriminator   # D step only

    # generator step (only once step >= term.start_step; before that leave the term out)
    distortion = term(x, x_hat)                  # (B,), grads reach x_hat, never D's parameters
    # discriminator step, after the generator step
    loss_d = term.discriminator_step_loss(x, x_hat.detach(), disc)
    disc_opt.zero_grad(); loss_d.backward(); disc_opt.step()

The generator side calls the discriminator through :func:`torch.func.functional_call` with
*detached* parameters: its backward cannot leave stale gradients in D, and it never goes through
the DDP wrapper (which would otherwise expect a gradient for every D parameter in that backward).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from raysweep.errors import RaysweepError
from raysweep.losses.base import ReconstructionTerm, check_pair
from raysweep.registry import NEURAL_TERMS

if TYPE_CHECKING:
    from raysweep.config import LossConfig

__all__ = ["NLayerDiscriminator", "PatchGANLoss"]


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming-transformers layout), without BatchNorm.

    ``n_layers`` stride-2 4x4 convolutions (channels ``base, 2 base, 4 base, ... <= 8 base``), one
    stride-1 4x4 convolution, then a stride-1 4x4 convolution to one logit per patch; LeakyReLU
    0.2 after every hidden convolution. With ``n_layers=3`` each logit sees a 70x70 receptive
    field; the input must be at least ``3 * 2**n_layers`` pixels on each side (24 for 3 layers).

    Normalisation is GroupNorm instead of pix2pix's BatchNorm: batch statistics need
    SyncBatchNorm under DDP, are noisy with the tiny per-GPU batches of packed trials, differ
    between real and fake batches, and running statistics would be updated by the generator's
    pass through D. GroupNorm normalises each image on its own, with no buffers.

    ``forward`` returns ``(logits, features)``: patch logits ``(B, 1, h, w)`` and the activations
    after each hidden LeakyReLU (used for feature matching).
    """

    def __init__(self, in_channels: int, base_channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise RaysweepError(f"loss.patchgan.layers must be >= 1, got {n_layers}; the paper uses 3")
        self.n_layers = n_layers
        channels = [in_channels] + [base_channels * min(2**i, 8) for i in range(n_layers + 1)]
        blocks: list[nn.Module] = []
        for i in range(n_layers + 1):
            stride = 2 if i < n_layers else 1
            out_channels = channels[i + 1]
            # The first layer has no norm (as in pix2pix), so only it needs a bias.
            conv = nn.Conv2d(channels[i], out_channels, kernel_size=4, stride=stride, padding=1, bias=i == 0)
            groups = math.gcd(32, out_channels)  # 32 groups as usual, fewer for tiny presets
            norm: nn.Module = nn.Identity() if i == 0 else nn.GroupNorm(groups, out_channels)
            blocks.append(nn.Sequential(conv, norm, nn.LeakyReLU(0.2)))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels[-1], 1, kernel_size=4, stride=1, padding=1)

    def min_input_size(self) -> int:
        """Smallest image side for which every convolution still has an output."""
        return 3 * 2**self.n_layers

    def forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Patch logits ``(B, 1, h, w)`` and the list of hidden activations."""
        if min(images.shape[-2:]) < self.min_input_size():
            raise RaysweepError(
                f"loss.patchgan.layers={self.n_layers} needs images of at least {self.min_input_size()} "
                f"pixels per side, got {tuple(images.shape[-2:])}; lower loss.patchgan.layers"
            )
        features = []
        hidden = images
        for block in self.blocks:
            hidden = block(hidden)
            features.append(hidden)
        return self.head(hidden), features


@NEURAL_TERMS.builds("patchgan")
class PatchGANLoss(ReconstructionTerm):
    """Hinge generator loss of a PatchGAN plus discriminator feature matching, per image.

    Per image: ``-mean_patches D(x_hat) + feature_matching_weight * sum_layers mean |F_l(x_hat) -
    F_l(x)|`` where ``F_l`` are D's hidden activations (mean over channels and positions of each
    layer, summed over layers; ``x``'s features detached). Units: dimensionless logits. The
    adversarial part can be negative and is not zero for ``x_hat == x``; the feature matching
    part is zero then. The discriminator is trained separately with :meth:`discriminator_loss`
    (hinge) and its own optimiser; :meth:`trainable_parameters` does not return it.

    Args:
        in_channels: image channels (3, or 1 for grey data).
        base_channels: channels of D's first convolution.
        n_layers: number of stride-2 convolutions in D.
        start_step: the loop leaves this term (and the D step) out before this optimiser step,
            so the autoencoder first learns to reconstruct; this module does not check it.
        feature_matching_weight: weight of the L1 feature matching part.
    """

    name: ClassVar[str] = "patchgan"
    adversarial: ClassVar[bool] = True

    @classmethod
    def from_config(
        cls, loss: LossConfig, *, channels: int = 3, device: torch.device | str | None = None
    ) -> PatchGANLoss:
        """A discriminator for `channels`-channel images, shaped by ``loss.patchgan``."""
        block = loss.patchgan
        return cls(
            in_channels=channels,
            base_channels=block.channels,
            n_layers=block.layers,
            start_step=block.start_step,
            feature_matching_weight=block.feature_matching_weight,
        )

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 64,
        n_layers: int = 3,
        start_step: int = 0,
        feature_matching_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.discriminator = NLayerDiscriminator(in_channels, base_channels, n_layers)
        self.start_step = int(start_step)
        self.feature_matching_weight = float(feature_matching_weight)

    def _frozen_discriminator(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Run D with detached parameters: gradients reach ``images`` but never D's ``.grad``."""
        state = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        state.update(dict(self.discriminator.named_buffers()))
        return functional_call(self.discriminator, state, (images,))

    def generator_terms(self, x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        """The two parts per image: adversarial ``-mean D(x_hat)`` and feature matching, ``(B,)`` each."""
        check_pair(x, x_hat)
        logits_fake, features_fake = self._frozen_discriminator(x_hat)
        with torch.no_grad():
            _, features_real = self._frozen_discriminator(x)
        adversarial = -logits_fake.float().flatten(1).mean(dim=1)
        matching = torch.zeros_like(adversarial)
        for fake, real in zip(features_fake, features_real, strict=True):
            matching = matching + (fake.float() - real.float()).abs().flatten(1).mean(dim=1)
        return adversarial, matching

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """Generator loss per image, shape ``(B,)``; ``x_logvar`` is ignored."""
        adversarial, matching = self.generator_terms(x, x_hat)
        return adversarial + self.feature_matching_weight * matching

    @staticmethod
    def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        """Hinge loss of D (scalar): ``mean(relu(1 - real)) + mean(relu(1 + fake))``."""
        return F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean()

    def discriminator_step_loss(
        self, x: Tensor, x_hat: Tensor, discriminator: nn.Module | None = None
    ) -> Tensor:
        """D's hinge loss on a real and a fake batch in one forward pass (scalar).

        Args:
            x: real images.
            x_hat: reconstructions; detached here so the generator gets no gradient.
            discriminator: the module to call, e.g. a DDP wrapper of ``self.discriminator``;
                defaults to ``self.discriminator``. One call on the concatenated batch keeps DDP
                to one forward per backward; GroupNorm makes the images independent.
        """
        check_pair(x, x_hat)
        module = self.discriminator if discriminator is None else discriminator
        logits, _ = module(torch.cat([x, x_hat.detach()], dim=0))
        logits_real, logits_fake = logits.split(x.shape[0], dim=0)
        return self.discriminator_loss(logits_real, logits_fake)
