"""raysweep.models: the two VAE families of the paper behind one interface.

``build_model(arch, preset, ...)`` is the only constructor the rest of raysweep needs:

* ``arch="vector_vae"``: :class:`~raysweep.models.vector_vae.VectorVAE`, pythae-style, vector latent.
* ``arch="autoencoder_kl"``: :class:`~raysweep.models.autoencoder_kl.AutoencoderKLVAE`, diffusers,
  spatial latent.

Each comes in a ``tiny`` preset (trains on a CPU in seconds) and a ``paper`` preset (25.2M and
14.4M parameters at 64x64). diffusers is imported only when an AutoencoderKL is built, so importing
this package stays fast.
"""

from __future__ import annotations

from raysweep.errors import RaysweepError
from raysweep.models.base import LOGVAR_MAX, LOGVAR_MIN, VAE, VAEOutput, count_parameters
from raysweep.models.vector_vae import VECTOR_VAE_PRESETS, VectorVAE, vector_vae_stages

ARCHS: tuple[str, ...] = ("vector_vae", "autoencoder_kl")
PRESETS: tuple[str, ...] = ("tiny", "paper")

__all__ = [
    "ARCHS",
    "PRESETS",
    "LOGVAR_MAX",
    "LOGVAR_MIN",
    "VAE",
    "VAEOutput",
    "VectorVAE",
    "build_model",
    "count_parameters",
]


def build_model(
    arch: str,
    preset: str,
    image_size: int,
    in_channels: int,
    latent_dim: int | None = None,
    pixel_logvar: bool = False,
    logvar_min: float = LOGVAR_MIN,
    logvar_max: float = LOGVAR_MAX,
) -> VAE:
    """Build a randomly initialised VAE.

    Args:
        arch: ``"vector_vae"`` or ``"autoencoder_kl"`` (config key ``model.arch``).
        preset: ``"tiny"`` or ``"paper"`` (config key ``model.preset``).
        image_size: image side H = W in pixels (config key ``data.image_size``). vector_vae: b * 2^n
            with b in 4..7, n >= 1 (every power of two >= 8); autoencoder_kl: divisible by the
            preset's downsampling factor (4 for tiny, 8 for paper).
        in_channels: image channels C (3 for RGB).
        latent_dim: overrides the preset's latent size: the latent vector length for vector_vae
            (default 10 tiny, 64 paper), the latent channels for autoencoder_kl (default 4).
        pixel_logvar: the decoder also emits a per-pixel log-variance (LV-VAE likelihood).
        logvar_min: lower clamp of the posterior log-variance log sigma^2 (default -30).
        logvar_max: upper clamp of the posterior log-variance (default 20).

    Returns:
        A :class:`VAE` in training mode, float32, on the CPU.

    Raises:
        RaysweepError: an unknown arch or preset, an unsupported image size, a non-positive
            latent_dim or in_channels, or logvar_min >= logvar_max; the message names the key.
    """
    if arch not in ARCHS:
        raise RaysweepError(f"model.arch={arch!r} is unknown: use one of {', '.join(ARCHS)}")
    if preset not in PRESETS:
        raise RaysweepError(f"model.preset={preset!r} is unknown: use one of {', '.join(PRESETS)}")
    if latent_dim is not None and (
        isinstance(latent_dim, bool) or int(latent_dim) != latent_dim or latent_dim < 1
    ):
        raise RaysweepError(f"model.latent_dim={latent_dim!r} is invalid: use a positive integer")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise RaysweepError(f"data.image_size={image_size!r} is invalid: use a positive integer")
    if in_channels < 1:
        raise RaysweepError(f"in_channels={in_channels!r} is invalid: images need >= 1 channel")
    if not logvar_min < logvar_max:
        raise RaysweepError(
            f"model.logvar_min={logvar_min} is not below model.logvar_max={logvar_max}: "
            "use logvar_min < logvar_max (defaults -30 and 20)"
        )
    common = dict(pixel_logvar=pixel_logvar, logvar_min=logvar_min, logvar_max=logvar_max)

    if arch == "vector_vae":
        size = VECTOR_VAE_PRESETS[preset]
        if vector_vae_stages(image_size) is None:
            raise RaysweepError(
                f"data.image_size={image_size} is not supported by model.arch=vector_vae: use "
                "b * 2^n with b in 4..7 and n >= 1, e.g. 32, 48, 64, 96, 128 or 256"
            )
        return VectorVAE(
            in_channels=in_channels,
            image_size=image_size,
            latent_dim=int(latent_dim) if latent_dim is not None else size.latent_dim,
            max_channels=size.max_channels,
            min_channels=size.min_channels,
            **common,
        )

    # Imported here: diffusers takes seconds to import and vector_vae runs never need it.
    from raysweep.models.autoencoder_kl import (
        AUTOENCODER_KL_PRESETS,
        AutoencoderKLVAE,
        downsampling_factor,
    )

    kl_size = AUTOENCODER_KL_PRESETS[preset]
    factor = downsampling_factor(kl_size)
    if image_size < factor or image_size % factor:
        raise RaysweepError(
            f"data.image_size={image_size} is not supported by model.arch=autoencoder_kl with "
            f"model.preset={preset}: use a positive multiple of its downsampling factor {factor}"
        )
    return AutoencoderKLVAE(
        in_channels=in_channels,
        image_size=image_size,
        block_out_channels=kl_size.block_out_channels,
        layers_per_block=kl_size.layers_per_block,
        latent_channels=int(latent_dim) if latent_dim is not None else kl_size.latent_channels,
        norm_num_groups=kl_size.norm_num_groups,
        **common,
    )
