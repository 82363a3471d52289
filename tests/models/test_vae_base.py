"""The VAE interface, checked on the tiny preset of both architectures.

(Named test_vae_base.py rather than test_base.py so it cannot collide with another folder's
test_base.py under pytest's default import mode, since tests/ has no __init__.py files.)
"""

from __future__ import annotations

import pytest
import torch

from raysweep.errors import RaysweepError
from raysweep.models import ARCHS, VAE, VAEOutput, build_model
from raysweep.models.base import X_LOGVAR_MAX, X_LOGVAR_MIN


def _images(batch: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


def _tiny(arch: str, size: int = 32, **kwargs: object) -> VAE:
    torch.manual_seed(0)
    return build_model(arch, "tiny", image_size=size, in_channels=3, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [32, 64])
def test_output_shapes(arch: str, size: int) -> None:
    model = _tiny(arch, size)
    x = _images(2, size)
    out = model(x)
    assert isinstance(out, VAEOutput)
    assert out.x_hat.shape == x.shape
    assert out.mu.shape == (2, *model.latent_shape)
    assert out.logvar.shape == out.mu.shape == out.z.shape
    assert out.x_logvar is None
    assert model.num_latents == out.mu[0].numel()
    assert (model.in_channels, model.image_size) == (3, size)
    assert out.mu.dtype == out.logvar.dtype == out.x_hat.dtype == torch.float32


@pytest.mark.parametrize("arch", ARCHS)
def test_logvar_is_clamped(arch: str) -> None:
    model = _tiny(arch, logvar_min=-5.0, logvar_max=3.0)
    x = _images(2, 32)
    mu = torch.zeros(2, *model.latent_shape)
    for raw, expected in [(1e4, 3.0), (-1e4, -5.0)]:
        model._encode_moments = lambda _x, raw=raw: (mu, torch.full_like(mu, raw))  # type: ignore[method-assign]
        out = model(x)
        assert torch.all(out.logvar == expected)
        assert torch.isfinite(out.z).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_mean_decoding_and_seeded_sampling(arch: str) -> None:
    model = _tiny(arch)
    x = _images(3, 32)
    out = model(x, sample=False)
    assert torch.equal(out.z, out.mu)

    state = torch.random.get_rng_state()
    first = model(x, generator=torch.Generator().manual_seed(7)).z
    again = model(x, generator=torch.Generator().manual_seed(7)).z
    other = model(x, generator=torch.Generator().manual_seed(8)).z
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, out.mu)
    # A caller-supplied generator leaves the global RNG untouched.
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("arch", ARCHS)
def test_sample_uses_reparameterisation(arch: str) -> None:
    model = _tiny(arch)
    x = _images(2, 32)
    out = model(x, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(out.mu.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.z, out.mu + torch.exp(0.5 * out.logvar) * eps)


@pytest.mark.parametrize("arch", ARCHS)
def test_pixel_logvar(arch: str) -> None:
    model = _tiny(arch, pixel_logvar=True)
    x = _images(2, 32)
    out = model(x)
    assert out.x_hat.shape == x.shape
    assert out.x_logvar is not None and out.x_logvar.shape == x.shape
    assert out.x_logvar.min() >= X_LOGVAR_MIN and out.x_logvar.max() <= X_LOGVAR_MAX
    # The log-variance half is trainable: a Gaussian NLL sends gradient into the decoder.
    nll = ((x - out.x_hat) ** 2 / (2 * out.x_logvar.exp()) + 0.5 * out.x_logvar).sum()
    nll.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch: str) -> None:
    model = _tiny(arch)
    out = model(_images(2, 32), generator=torch.Generator().manual_seed(0))
    kl = 0.5 * (out.mu**2 + out.logvar.exp() - out.logvar - 1).sum()
    ((out.x_hat - _images(2, 32)) ** 2).sum().add(kl).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads[0].abs().sum() > 0  # first encoder layer
    assert grads[-1].abs().sum() > 0  # last decoder layer


@pytest.mark.parametrize("arch", ARCHS)
def test_no_batch_statistics(arch: str) -> None:
    """Each image is processed on its own (GroupNorm, no BatchNorm), so a DDP split of the
    batch cannot change the result: a sub-batch gives exactly the rows of the full batch."""
    model = _tiny(arch)
    model.train()
    x = _images(4, 32)
    full = model(x, sample=False)
    half = model(x[:2], sample=False)
    torch.testing.assert_close(half.mu, full.mu[:2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(half.x_hat, full.x_hat[:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_returns_float32(arch: str) -> None:
    model = _tiny(arch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_images(2, 32))
    assert out.mu.dtype == out.logvar.dtype == out.x_hat.dtype == torch.float32
    assert torch.isfinite(out.x_hat).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_overfits_a_batch(arch: str) -> None:
    model = _tiny(arch, size=16)  # 16x16 keeps the 30 Adam steps well under a second
    x = _images(8, 16, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        out = model(x, generator=generator)
        sse = ((out.x_hat - x) ** 2).sum(dim=(1, 2, 3)).mean()
        kl = 0.5 * (out.mu**2 + out.logvar.exp() - out.logvar - 1).flatten(1).sum(1).mean()
        loss = sse + 0.1 * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.85 * losses[0]  # measured: ~0.75 (KL), ~0.27 (vector)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"arch": "resnet_vae"}, "model.arch"),
        ({"preset": "huge"}, "model.preset"),
        ({"latent_dim": 0}, "model.latent_dim"),
        ({"logvar_min": 5.0, "logvar_max": 1.0}, "model.logvar_min"),
        ({"image_size": 0}, "data.image_size"),
        ({"image_size": 72}, "data.image_size"),
        ({"arch": "autoencoder_kl", "image_size": 30}, "data.image_size"),
        ({"arch": "autoencoder_kl", "preset": "paper", "image_size": 36}, "data.image_size"),
    ],
)
def test_bad_arguments_name_the_key(kwargs: dict[str, object], key: str) -> None:
    arguments: dict[str, object] = {
        "arch": "vector_vae",
        "preset": "tiny",
        "image_size": 32,
        "in_channels": 3,
    }
    arguments.update(kwargs)
    with pytest.raises(RaysweepError, match=key.replace(".", r"\.")) as error:
        build_model(**arguments)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)
