"""Reconstruction terms of the VAE objective and the EnCodec loss balancer.

Every term is a :class:`ReconstructionTerm` returning one distortion per image, shape ``(B,)``,
registered by its module under its config name (``@NEURAL_TERMS.builds`` / ``@PIXEL_TERMS.builds``;
the names and their facts are declared in :mod:`raysweep.registry`); importing this package imports
every term's module, so every class is attached. Modules, top down:

- ``pixel``: ``sse``, the summed squared error per image.
- ``gaussian_nll``: ``learned_sigma_scalar`` and ``learned_sigma_pixel``, Gaussian likelihoods with a
  learned sigma (L-VAE).
- ``box_blur``: ``box_blur``, squared error between box-blurred images.
- ``perceptual``: ``lpips`` (VGG16) and ``dinov2``, frozen pretrained feature distances, where their
  weights are looked for, ``weights_report`` and ``download_weights``.
- ``adversarial``: ``patchgan``, the PatchGAN term and its discriminator.
- ``balancer``: the EnCodec balancer combining the terms' gradients at ``x_hat``.
- ``base``: the :class:`ReconstructionTerm` interface and the per-process cache of frozen networks.
"""

from raysweep.losses.adversarial import NLayerDiscriminator, PatchGANLoss
from raysweep.losses.balancer import Balancer
from raysweep.losses.base import FrozenNetwork, ReconstructionTerm, clear_frozen_cache, frozen_network
from raysweep.losses.box_blur import BoxBlurDistance
from raysweep.losses.gaussian_nll import PixelSigmaNLL, ScalarSigmaNLL
from raysweep.losses.perceptual import DINOv2Distance, LPIPSDistance, download_weights, weights_report
from raysweep.losses.pixel import SSE

__all__ = [
    "Balancer",
    "BoxBlurDistance",
    "DINOv2Distance",
    "FrozenNetwork",
    "LPIPSDistance",
    "NLayerDiscriminator",
    "PatchGANLoss",
    "PixelSigmaNLL",
    "ReconstructionTerm",
    "SSE",
    "ScalarSigmaNLL",
    "clear_frozen_cache",
    "download_weights",
    "frozen_network",
    "weights_report",
]
