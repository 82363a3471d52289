"""LPIPS and DINOv2: gradients, frozen networks, the cache, and real loading of local weight files."""

from __future__ import annotations

from pathlib import Path

import lpips
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from raysweep.errors import RaysweepError
from raysweep.losses.perceptual import (
    VGG16_FILENAME,
    DINOv2Distance,
    LPIPSDistance,
    weights_report,
)


def _random_vgg16_file(directory: Path) -> dict[str, torch.Tensor]:
    """Save a random torchvision VGG16 state dict where LPIPS looks for the real one."""
    state = torchvision.models.vgg16(weights=None).state_dict()
    # The 120M-parameter classifier is ignored by LPIPS; keep one key of it (proves it is skipped)
    # instead of writing half a gigabyte.
    state = {k: v for k, v in state.items() if k.startswith("features.") or k == "classifier.6.bias"}
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / VGG16_FILENAME)
    return state


def test_lpips_gradient_flows_to_reconstruction() -> None:
    term = LPIPSDistance(pretrained=False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = torch.zeros_like(x, requires_grad=True)
    value = term(x, x_hat)
    assert value.requires_grad, "LPIPS must not be computed under no_grad"
    value.sum().backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "factory",
    [lambda: LPIPSDistance(pretrained=False), lambda: DINOv2Distance(pretrained=False, image_size=None)],
    ids=["lpips", "dinov2"],
)
def test_frozen_network_stays_frozen_and_is_cached(factory) -> None:
    term = factory()
    term.train()
    network = term.network("cpu")
    network.train()
    assert not any(module.training for module in network.modules())
    assert not any(p.requires_grad for p in network.parameters())
    assert term.trainable_parameters() == [] and list(term.parameters()) == []
    assert term.state_dict() == {}  # frozen weights are not checkpointed with the run
    assert factory().network("cpu") is network
    x = torch.rand(1, 3, 28, 28) * 2 - 1
    term(x, x.flip(-1)).sum()  # evaluating it does not switch anything back on
    assert not network.training


def test_lpips_missing_weights_names_the_file() -> None:
    with pytest.raises(RaysweepError, match=VGG16_FILENAME) as error:
        LPIPSDistance(pretrained=True)
    assert "\n" not in str(error.value)


def test_lpips_loads_backbone_from_weights_dir(tmp_path: Path) -> None:
    state = _random_vgg16_file(tmp_path / "weights")
    term = LPIPSDistance(weights_dir=tmp_path / "weights")
    assert term.weights_path == str((tmp_path / "weights" / VGG16_FILENAME).resolve())
    vgg = term.network("cpu").network.net
    loaded = dict(vgg.named_parameters())
    conv_keys = [k for k in state if k.startswith("features.")]
    assert len(conv_keys) == len(loaded) == 26  # 13 convolutions, weight and bias
    for key in conv_keys:
        index = int(key.split(".")[1])
        slices = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
        slice_number = next(n for n, (lo, hi) in enumerate(slices, 1) if lo <= index < hi)
        torch.testing.assert_close(loaded[f"slice{slice_number}.{key[len('features.') :]}"], state[key])
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert term(x, -x).item() > 0
    # The v0.1 linear heads come from the lpips package, not from random initialisation.
    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    torch.testing.assert_close(term.network("cpu").network.lin0.model[1].weight, heads["lin0.model.1.weight"])


def test_lpips_unreadable_weights_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / VGG16_FILENAME).write_bytes(b"truncated")
    with pytest.raises(RaysweepError, match="cannot read weights file"):
        LPIPSDistance(weights_dir=tmp_path, device="cpu")


@pytest.mark.parametrize("location", ["RAYSWEEP_WEIGHTS_DIR", "TORCH_HOME"])
def test_lpips_search_order_env_and_hub_cache(
    location: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_value = tmp_path / "w" if location == "RAYSWEEP_WEIGHTS_DIR" else tmp_path
    directory = env_value if location == "RAYSWEEP_WEIGHTS_DIR" else tmp_path / "hub" / "checkpoints"
    directory.mkdir(parents=True)
    (directory / VGG16_FILENAME).write_bytes(b"")
    monkeypatch.setenv(location, str(env_value))
    assert LPIPSDistance().weights_path == str((directory / VGG16_FILENAME).resolve())


def _random_dinov2_state() -> dict[str, torch.Tensor]:
    model = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True
    )
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def test_dinov2_missing_weights_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RaysweepError, match="vit_small_patch14_dinov2.safetensors"):
        DINOv2Distance(weights_dir=tmp_path)
    with pytest.raises(RaysweepError, match="loss.dinov2.weights"):
        DINOv2Distance(weights=tmp_path / "absent.pth")
    with pytest.raises(RaysweepError, match="image_size"):
        DINOv2Distance(pretrained=False, image_size=100)


def test_dinov2_loads_safetensors_from_weights_dir(tmp_path: Path) -> None:
    state = _random_dinov2_state()
    save_file(state, str(tmp_path / "vit_small_patch14_dinov2.safetensors"))
    term = DINOv2Distance(weights_dir=tmp_path, image_size=None)
    loaded = term.network("cpu").network.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value)
    x = torch.rand(1, 3, 28, 28) * 2 - 1
    assert term(x, -x).item() > 0


def test_dinov2_loads_an_explicit_original_format_pth(tmp_path: Path) -> None:
    state = _random_dinov2_state()
    original = dict(state, mask_token=torch.zeros(1, state["cls_token"].shape[-1]))  # facebook layout
    torch.save(original, tmp_path / "dinov2_vits14_pretrain.pth")
    term = DINOv2Distance(weights=tmp_path / "dinov2_vits14_pretrain.pth", image_size=None)
    torch.testing.assert_close(term.network("cpu").network.pos_embed, state["pos_embed"])


def test_dinov2_base_model_builds() -> None:
    term = DINOv2Distance("vit_base_patch14_dinov2", pretrained=False, image_size=None)
    x = torch.rand(1, 3, 14, 14) * 2 - 1
    assert term(x, x.flip(-1)).shape == (1,)
    with pytest.raises(RaysweepError, match="loss.dinov2.model"):
        DINOv2Distance("resnet50", pretrained=False)


def test_weights_report(tmp_path: Path) -> None:
    report = weights_report(tmp_path)
    assert [entry["loss"] for entry in report] == ["lpips", "dinov2", "dinov2"]
    assert not any(entry["present"] for entry in report)
    assert report[0]["searched"][0] == str(tmp_path / VGG16_FILENAME)
    (tmp_path / VGG16_FILENAME).write_bytes(b"")
    report = weights_report(tmp_path)
    assert report[0]["present"] and report[0]["found"] == str(tmp_path / VGG16_FILENAME)


def test_device_argument_builds_the_network_eagerly() -> None:
    term = LPIPSDistance(pretrained=False, device="cpu")
    assert term.network("cpu") is LPIPSDistance(pretrained=False).network(torch.device("cpu"))
