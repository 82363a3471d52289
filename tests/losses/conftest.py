"""Shared fixtures of the loss tests: no test may find (or fetch) real pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def isolated_weight_locations(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point every weights location at empty directories and make hub libraries offline."""
    root = tmp_path_factory.mktemp("empty_caches")
    for variable in ("TORCH_HOME", "HF_HOME", "RAYSWEEP_WEIGHTS_DIR"):
        (root / variable).mkdir()
        monkeypatch.setenv(variable, str(root / variable))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    return root
