"""Reconstruction terms of the VAE objective and the EnCodec loss balancer.

Every term is a :class:`ReconstructionTerm` returning one distortion per image, shape ``(B,)``.
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
