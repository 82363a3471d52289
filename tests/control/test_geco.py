"""GECO controller and schedules, exactly as SPEC section 2 states them."""

from __future__ import annotations

import math

import pytest

from raysweep.control.geco import GECO
from raysweep.control.schedules import cosine_lr_factor, in_warmup, kl_warmup_factor


def test_update_rule_by_hand() -> None:
    geco = GECO(target_rate=10.0, beta_init=1.0, step_size=0.1, ema_decay=0.5, beta_min=1e-3, beta_max=1e3)
    beta = geco.update(20.0)  # first observation initialises the EMA
    assert geco.rate_ema == 20.0
    assert beta == pytest.approx(math.exp(0.1 * (20.0 - 10.0) / 10.0))
    beta2 = geco.update(4.0)
    ema = 0.5 * 20.0 + 0.5 * 4.0
    assert geco.rate_ema == pytest.approx(ema)
    assert beta2 == pytest.approx(beta * math.exp(0.1 * (ema - 10.0) / 10.0))


def test_beta_rises_above_target_and_falls_below() -> None:
    up = GECO(target_rate=5.0, beta_init=1.0)
    down = GECO(target_rate=5.0, beta_init=1.0)
    for _ in range(10):
        up.update(50.0)
        down.update(1.0)
    assert up.beta > 1.0 > down.beta


def test_held_during_warmup_but_ema_tracked() -> None:
    geco = GECO(target_rate=5.0, beta_init=0.3, ema_decay=0.9)
    for _ in range(5):
        geco.update(100.0, warming_up=True)
    assert geco.beta == 0.3
    assert geco.rate_ema == pytest.approx(100.0)


def test_clamp() -> None:
    geco = GECO(target_rate=1.0, beta_init=1.0, step_size=10.0, ema_decay=0.0, beta_min=0.5, beta_max=2.0)
    geco.update(1000.0)
    assert geco.beta == 2.0
    for _ in range(50):
        geco.update(0.0)
    assert geco.beta == 0.5


def test_state_round_trip() -> None:
    a = GECO(target_rate=3.0, beta_init=1.0)
    for r in (5.0, 4.0, 2.0):
        a.update(r)
    b = GECO(target_rate=3.0, beta_init=1.0)
    b.load_state_dict(a.state_dict())
    assert (b.beta, b.rate_ema) == (a.beta, a.rate_ema)
    assert b.update(1.0) == a.update(1.0)


def test_sine_warmup() -> None:
    assert kl_warmup_factor(0, 100) == 0.0
    assert kl_warmup_factor(50, 100) == pytest.approx(math.sin(math.pi / 4))
    assert kl_warmup_factor(100, 100) == 1.0 and kl_warmup_factor(500, 100) == 1.0
    assert kl_warmup_factor(0, 0) == 1.0
    assert in_warmup(99, 100) and not in_warmup(100, 100) and not in_warmup(0, 0)


def test_cosine_lr() -> None:
    assert cosine_lr_factor(0, 100) == 1.0
    assert cosine_lr_factor(50, 100) == pytest.approx(0.5)
    assert cosine_lr_factor(100, 100, min_ratio=0.1) == pytest.approx(0.1)
