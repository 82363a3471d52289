"""AutoencoderKLVAE: the diffusers config, the spatial latent, parameter counts."""

from __future__ import annotations

import pytest
import torch

from raysweep.models import build_model, count_parameters
from raysweep.models.autoencoder_kl import AutoencoderKLVAE


def test_config_follows_the_paper_table() -> None:
    model = build_model("autoencoder_kl", "tiny", image_size=32, in_channels=3)
    assert isinstance(model, AutoencoderKLVAE)
    config = model.autoencoder.config
    assert config.act_fn == "silu"
    assert config.use_quant_conv and config.use_post_quant_conv
    assert config.mid_block_add_attention and config.force_upcast
    assert config.out_channels == 3


@pytest.mark.parametrize(("size", "latent_side"), [(32, 8), (64, 16)])
def test_spatial_latent_shape(size: int, latent_side: int) -> None:
    model = build_model("autoencoder_kl", "tiny", image_size=size, in_channels=3, latent_dim=6)
    assert model.latent_shape == (6, latent_side, latent_side)
    assert model.num_latents == 6 * latent_side**2
    mu, logvar = model.encode(torch.zeros(1, 3, size, size))
    assert mu.shape == logvar.shape == (1, *model.latent_shape)


def test_encode_matches_diffusers_latent_dist() -> None:
    """Our split of the moments is diffusers' own DiagonalGaussianDistribution."""
    model = build_model("autoencoder_kl", "tiny", image_size=32, in_channels=3)
    assert isinstance(model, AutoencoderKLVAE)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mu, logvar = model.encode(x)
    dist = model.autoencoder.encode(x).latent_dist
    torch.testing.assert_close(mu, dist.mean)
    torch.testing.assert_close(logvar, dist.logvar)
    x_hat, _ = model.decode(mu)
    torch.testing.assert_close(x_hat, model.autoencoder.decode(mu).sample)


def test_pixel_logvar_doubles_decoder_channels() -> None:
    model = build_model("autoencoder_kl", "tiny", image_size=32, in_channels=1, pixel_logvar=True)
    assert isinstance(model, AutoencoderKLVAE)
    assert model.autoencoder.config.out_channels == 2
    out = model(torch.zeros(2, 1, 32, 32))
    assert out.x_hat.shape == out.x_logvar.shape == (2, 1, 32, 32)  # type: ignore[union-attr]


def test_quant_conv_bias_forces_logvar_clamp() -> None:
    model = build_model("autoencoder_kl", "tiny", image_size=32, in_channels=3)
    assert isinstance(model, AutoencoderKLVAE)
    latent_channels = model.latent_shape[0]
    with torch.no_grad():
        model.autoencoder.quant_conv.bias[latent_channels:].fill_(-1e5)
    _, logvar = model.encode(torch.zeros(1, 3, 32, 32))
    assert torch.all(logvar == -30.0)


def test_tiny_preset_size() -> None:
    model = build_model("autoencoder_kl", "tiny", image_size=32, in_channels=3)
    assert count_parameters(model) == 681_911


def test_paper_preset_parameter_count() -> None:
    model = build_model("autoencoder_kl", "paper", image_size=64, in_channels=3)
    assert model.latent_shape == (4, 8, 8)
    count = count_parameters(model)
    assert count == 14_303_911
    assert abs(count - 14.4e6) / 14.4e6 < 0.10
