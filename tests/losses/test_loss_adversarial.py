"""PatchGAN: discriminator shapes, hinge loss, and gradient isolation between G and D."""

from __future__ import annotations

import pytest
import torch

from raysweep.errors import RaysweepError
from raysweep.losses.adversarial import NLayerDiscriminator, PatchGANLoss


def test_discriminator_outputs_patch_logits_and_features() -> None:
    discriminator = NLayerDiscriminator(3, base_channels=8, n_layers=3)
    logits, features = discriminator(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 1, 2, 2)
    assert len(features) == 4 and features[0].shape == (2, 8, 16, 16)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.modules())
    with pytest.raises(RaysweepError, match="loss.patchgan.layers"):
        discriminator(torch.randn(1, 3, 16, 16))


def test_hinge_discriminator_loss_by_hand() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + fake) = 0, 1, 2
    loss = PatchGANLoss.discriminator_loss(real, fake)
    assert loss.item() == pytest.approx(2.5 / 3 + 1.0)


def test_generator_loss_formula() -> None:
    term = PatchGANLoss(3, base_channels=8, feature_matching_weight=0.5)
    x, x_hat = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    logits, fake_features = term.discriminator(x_hat)
    _, real_features = term.discriminator(x)
    pairs = zip(fake_features, real_features, strict=True)
    matching = sum((f - r).abs().flatten(1).mean(1) for f, r in pairs)
    expected = -logits.flatten(1).mean(1) + 0.5 * matching
    torch.testing.assert_close(term(x, x_hat), expected.detach())


def test_generator_backward_leaves_discriminator_grads_empty() -> None:
    term = PatchGANLoss(3, base_channels=8)
    x = torch.randn(2, 3, 32, 32)
    x_hat = torch.randn(2, 3, 32, 32, requires_grad=True)
    term(x, x_hat).mean().backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    assert all(p.grad is None for p in term.discriminator.parameters())
    assert term.trainable_parameters() == []


def test_discriminator_gets_gradients_only_from_its_own_loss() -> None:
    term = PatchGANLoss(3, base_channels=8)
    x, x_hat = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32, requires_grad=True)
    term.discriminator_step_loss(x, x_hat).backward()
    reference = [p.grad.clone() for p in term.discriminator.parameters()]
    # Every convolution kernel learns (the head's bias can cancel exactly: real and fake hinge
    # slopes are -1 and +1 while all logits are inside the margin).
    assert all(g.abs().sum() > 0 for g in reference if g.dim() == 4)
    assert x_hat.grad is None  # x_hat is detached for the discriminator step
    term.discriminator.zero_grad(set_to_none=True)
    term(x, x_hat).mean().backward()  # generator step first, as in the loop
    term.discriminator_step_loss(x, x_hat).backward()
    for grad, expected in zip((p.grad for p in term.discriminator.parameters()), reference, strict=True):
        torch.testing.assert_close(grad, expected)


def test_discriminator_step_loss_matches_separate_calls() -> None:
    term = PatchGANLoss(1, base_channels=8)
    x, x_hat = torch.randn(3, 1, 24, 24), torch.randn(3, 1, 24, 24)
    real, _ = term.discriminator(x)
    fake, _ = term.discriminator(x_hat)
    torch.testing.assert_close(term.discriminator_step_loss(x, x_hat), term.discriminator_loss(real, fake))
