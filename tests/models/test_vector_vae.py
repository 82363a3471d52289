"""VectorVAE: layout, presets, parameter counts."""

from __future__ import annotations

import pytest
import torch

from raysweep.models import build_model, count_parameters
from raysweep.models.vector_vae import VectorVAE, vector_vae_stages


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (8, (1, 4)),
        (16, (2, 4)),
        (32, (3, 4)),
        (48, (3, 6)),
        (64, (4, 4)),
        (256, (6, 4)),
        (96, (4, 6)),
        (4, None),
        (72, None),
        (30, None),
    ],
)
def test_stage_layout(size: int, expected: tuple[int, int] | None) -> None:
    assert vector_vae_stages(size) == expected


@pytest.mark.parametrize("size", [16, 32, 48, 64, 128, 256])
def test_image_sizes_round_trip(size: int) -> None:
    model = build_model("vector_vae", "tiny", image_size=size, in_channels=1, latent_dim=3)
    x = torch.zeros(1, 1, size, size)
    out = model(x)
    assert out.x_hat.shape == x.shape
    assert model.latent_shape == (3,)


def test_presets_channels() -> None:
    tiny = build_model("vector_vae", "tiny", image_size=32, in_channels=3)
    assert isinstance(tiny, VectorVAE)
    assert tiny.stage_channels == (16, 32, 64) and tiny.latent_shape == (10,)
    assert 10_000 <= count_parameters(tiny) <= 200_000  # 115,703
    assert build_model("vector_vae", "tiny", 64, 3).stage_channels == (16, 16, 32, 64)


def test_latent_dim_override() -> None:
    model = build_model("vector_vae", "tiny", image_size=32, in_channels=3, latent_dim=17)
    assert model.latent_shape == (17,) and model.num_latents == 17


def test_logvar_head_bias_is_clamped() -> None:
    model = build_model("vector_vae", "tiny", image_size=32, in_channels=3)
    assert isinstance(model, VectorVAE)
    with torch.no_grad():
        model.logvar_head.bias.fill_(1e4)
    _, logvar = model.encode(torch.zeros(2, 3, 32, 32))
    assert torch.all(logvar == 20.0)


def test_paper_preset_parameter_count() -> None:
    """pythae's Encoder_Conv_VAE_CELEBA + mirrored decoder: the paper's 25.2M parameters."""
    model = build_model("vector_vae", "paper", image_size=64, in_channels=3)
    assert isinstance(model, VectorVAE)
    assert model.stage_channels == (128, 256, 512, 1024)
    assert model.latent_shape == (64,)
    count = count_parameters(model)
    assert count == 25_203_075
    assert abs(count - 25.2e6) / 25.2e6 < 0.10
