"""Neural distortions on frozen pretrained networks: LPIPS (VGG16) and DINOv2 feature distance.

Pretrained weights on machines with no internet (SPEC section 7)
-----------------------------------------------------------------
Nothing here downloads implicitly: a constructor with ``pretrained=True`` looks for a local file
and raises :class:`~raysweep.errors.RaysweepError` naming the file, the places searched and the
fix when it is absent. :func:`download_weights` (behind ``raysweep weights --download``) is the
one function that fetches the files, with the same code paths torchvision and timm use, into a
weights directory. Search order:

- LPIPS backbone ``vgg16-397923af.pth`` (torchvision's ImageNet VGG16): ``loss.weights_dir``,
  then ``$RAYSWEEP_WEIGHTS_DIR``, then the torch hub cache ``$TORCH_HOME/hub/checkpoints``
  (where torchvision downloads it). LPIPS's own v0.1 linear heads ship inside the lpips package.
- DINOv2 ``<model_name>.safetensors`` or ``<model_name>.pth``: the explicit file
  ``loss.dinov2.weights``, then ``loss.weights_dir``, then ``$RAYSWEEP_WEIGHTS_DIR``, then the
  Hugging Face hub cache where timm downloads ``timm/<model_name>.lvd142m``. Both timm-format
  state dicts and the original ``dinov2_vit*14_pretrain.pth`` files load (timm converts them).

:func:`weights_report` lists what each loss needs, where it looks and what is present.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.errors import RaysweepError
from raysweep.losses.base import FrozenNetwork, ReconstructionTerm, check_pair, frozen_network, to_rgb
from raysweep.registry import NEURAL_TERMS

if TYPE_CHECKING:
    from raysweep.config import LossConfig

__all__ = [
    "LPIPSDistance",
    "DINOv2Distance",
    "VGG16_FILENAME",
    "DINOV2_MODELS",
    "weights_report",
    "download_weights",
]

VGG16_FILENAME = "vgg16-397923af.pth"
DINOV2_MODELS = ("vit_small_patch14_dinov2", "vit_base_patch14_dinov2")
_FIX = "put it in loss.weights_dir or $RAYSWEEP_WEIGHTS_DIR, or run `raysweep weights --download`"
# lpips.pretrained_networks.vgg16 splits torchvision's vgg16().features[0:30] into five slices.
_LPIPS_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


def _search_dirs(weights_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The local weights directories in search order: argument, then $RAYSWEEP_WEIGHTS_DIR."""
    dirs = [Path(weights_dir).expanduser()] if weights_dir else []
    env_dir = os.environ.get("RAYSWEEP_WEIGHTS_DIR")
    if env_dir:
        dirs.append(Path(env_dir).expanduser())
    return dirs


def _vgg16_candidates(weights_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Every path where the VGG16 file is looked for, in order."""
    # torch.hub.get_dir() reads $TORCH_HOME at call time, so tests can redirect it.
    hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return [d / VGG16_FILENAME for d in _search_dirs(weights_dir)] + [hub_checkpoints / VGG16_FILENAME]


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "huggingface" / "hub"


def _dinov2_candidates(model_name: str, weights_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Every path where a DINOv2 state dict is looked for, in order (explicit file excluded)."""
    extensions = (".safetensors", ".pth")
    local = [d / f"{model_name}{ext}" for d in _search_dirs(weights_dir) for ext in extensions]
    # timm downloads from the hub repo timm/<model_name>.lvd142m into the standard cache layout.
    repo_dir = _hf_hub_cache() / f"models--timm--{model_name}.lvd142m" / "snapshots"
    cached = sorted(repo_dir.glob("*/model.safetensors")) if repo_dir.is_dir() else []
    return local + (cached or [repo_dir / "<revision>" / "model.safetensors"])


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` or ``.pth`` state dict onto the CPU."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated download, wrong format, ...: all need the same fix
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RaysweepError(
            f"cannot read weights file {path} ({reason}); replace it with a good copy"
        ) from None
    if not isinstance(state, dict):
        raise RaysweepError(f"{path} does not hold a state dict; save model.state_dict() to it")
    return state


def _lpips_vgg_state(torchvision_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map torchvision VGG16 keys (``features.<i>.<param>``) to lpips' ``slice<k>.<i>.<param>``."""
    has_prefix = any(key.startswith("features.") for key in torchvision_state)
    mapped: dict[str, Tensor] = {}
    for key, value in torchvision_state.items():
        if has_prefix:
            if not key.startswith("features."):
                continue  # the classifier is not part of LPIPS
            key = key[len("features.") :]
        index, _, param = key.partition(".")
        layer = int(index) if index.isdigit() else -1
        slice_number = next((k + 1 for k, (lo, hi) in enumerate(_LPIPS_VGG_SLICES) if lo <= layer < hi), None)
        if slice_number is not None:
            mapped[f"slice{slice_number}.{index}.{param}"] = value
    return mapped


def _build_lpips(weights_path: str | None) -> nn.Module:
    """lpips' VGG LPIPS with its v0.1 linear heads and the given (or random) VGG16 backbone."""
    import lpips

    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=` flag; the backbone is random here.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if weights_path is not None:
        state = _lpips_vgg_state(_load_state_dict(Path(weights_path)))
        try:
            # strict: every conv weight and bias of relu1_2 .. relu5_3 must come from the file.
            model.net.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first_line = str(error).splitlines()[1:2] or [str(error)]
            raise RaysweepError(
                f"{weights_path} is not torchvision's VGG16 state dict ({first_line[0].strip()}); "
                f"replace it with {VGG16_FILENAME}"
            ) from None
    return model


@NEURAL_TERMS.builds("lpips")
class LPIPSDistance(ReconstructionTerm):
    """LPIPS (Zhang et al. 2018) with the VGG16 trunk, per image.

    Units: the LPIPS distance (dimensionless; roughly 0 to 1 with pretrained weights): per
    layer, channel-normalised feature differences weighted by the v0.1 linear heads and
    averaged over space, summed over the five VGG layers. Inputs are in ``[-1, 1]``, which is
    what lpips expects (``normalize=False``); grey images are repeated to RGB. Gradients flow
    to ``x_hat`` (the frozen network is evaluated with autograd on).

    Args:
        weights_dir: directory holding ``vgg16-397923af.pth`` (config ``loss.weights_dir``).
        pretrained: False builds a random VGG16 trunk (tests; no file needed).
        device: if given, build (or fetch from the cache) the network there now, so that a bad
            weights file fails at construction; otherwise it is built on first use, on the
            device of the input.

    Raises:
        RaysweepError: ``pretrained=True`` and the VGG16 file is in none of the searched places.
    """

    name: ClassVar[str] = "lpips"
    frozen: ClassVar[bool] = True

    @classmethod
    def from_config(
        cls, loss: LossConfig, *, channels: int = 3, device: torch.device | str | None = None
    ) -> LPIPSDistance:
        """VGG16 from ``loss.weights_dir`` (random weights when ``loss.pretrained`` is false)."""
        return cls(weights_dir=loss.weights_dir, pretrained=loss.pretrained, device=device)

    @classmethod
    def weight_files(cls, weights_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """torchvision's ImageNet VGG16, where :class:`LPIPSDistance` looks for it."""
        return [_entry(cls.name, "vgg16", VGG16_FILENAME, _vgg16_candidates(weights_dir))]

    def __init__(
        self,
        weights_dir: str | os.PathLike[str] | None = None,
        pretrained: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.weights_path: str | None = None
        if pretrained:
            candidates = _vgg16_candidates(weights_dir)
            found = next((path for path in candidates if path.is_file()), None)
            if found is None:
                searched = ", ".join(str(path.parent) for path in candidates)
                raise RaysweepError(
                    f"LPIPS needs VGG16 weights {VGG16_FILENAME}, not found in {searched}; {_FIX}"
                )
            self.weights_path = str(found.resolve())
        if device is not None:
            self.network(device)

    def network(self, device: torch.device | str = "cpu") -> FrozenNetwork:
        """The shared frozen lpips module on ``device`` (built on first use, then cached)."""
        weights_path = self.weights_path
        return frozen_network("lpips-vgg", weights_path, device, lambda: _build_lpips(weights_path))

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """LPIPS distance per image, shape ``(B,)``; ``x_logvar`` is ignored."""
        check_pair(x, x_hat)
        distance = self.network(x_hat.device)(to_rgb(x_hat), to_rgb(x), normalize=False)
        return distance.reshape(x.shape[0]).float()


def _build_dinov2(model_name: str, weights_path: str | None) -> nn.Module:
    """A timm DINOv2 ViT without head, with the given (or random) weights."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    # Native img_size (518) keeps pos_embed identical to the checkpoint; dynamic_img_size
    # interpolates it to the actual input grid at run time.
    model = timm.create_model(model_name, pretrained=False, num_classes=0, dynamic_img_size=True)
    if weights_path is not None:
        state = checkpoint_filter_fn(_load_state_dict(Path(weights_path)), model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RaysweepError(
                f"{weights_path} does not match {model_name} (missing {list(missing)[:3]}, unexpected "
                f"{list(unexpected)[:3]}); set loss.dinov2.model to the checkpoint's model"
            )
    return model


@NEURAL_TERMS.builds("dinov2")
class DINOv2Distance(ReconstructionTerm):
    """Squared distance between L2-normalised DINOv2 patch tokens, per image.

    Preprocessing: ``[-1, 1] -> [0, 1]``, grey repeated to RGB, bilinear resize with antialias
    to ``image_size x image_size`` (default 224, DINOv2's standard evaluation size: 16 x 16
    patches of 14 pixels), then ImageNet mean/std normalisation. With ``image_size=None`` each
    side is instead rounded *up* to the next multiple of 14 (28 x 28 stays 28 x 28: fast tests).

    Distance: ``t = forward_features(image)`` (after the final LayerNorm), drop the class (and
    any register) tokens, L2-normalise each patch token over channels, then sum the squared
    differences over tokens and channels: ``sum_p || t_p(x_hat)/|t_p(x_hat)| - t_p(x)/|t_p(x)| ||^2
    = sum_p 2 (1 - cos_p)``. Units: dimensionless, in ``[0, 4 * n_patches]`` (256 patches at 224).

    Args:
        model_name: timm DINOv2 model (``vit_small_patch14_dinov2``, ``vit_base_patch14_dinov2``).
        weights: explicit state-dict file (config ``loss.dinov2.weights``).
        weights_dir: directory holding ``<model_name>.safetensors`` or ``.pth``.
        pretrained: False builds random weights (tests; no file needed).
        image_size: side length the images are resized to (multiple of 14), or None.
        device: if given, build (or fetch from the cache) the network there now (fail fast on a
            bad weights file); otherwise it is built on first use, on the input's device.
    """

    name: ClassVar[str] = "dinov2"
    frozen: ClassVar[bool] = True

    @classmethod
    def from_config(
        cls, loss: LossConfig, *, channels: int = 3, device: torch.device | str | None = None
    ) -> DINOv2Distance:
        """The DINOv2 of ``loss.dinov2`` (random weights when ``loss.pretrained`` is false)."""
        return cls(
            model_name=loss.dinov2.model,
            weights=loss.dinov2.weights,
            weights_dir=loss.weights_dir,
            pretrained=loss.pretrained,
            image_size=loss.dinov2.image_size,
            device=device,
        )

    @classmethod
    def weight_files(cls, weights_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """One state dict per supported DINOv2 model, where :class:`DINOv2Distance` looks for it."""
        return [
            _entry(cls.name, model_name, f"{model_name}.safetensors", _dinov2_candidates(model_name, weights_dir))
            for model_name in DINOV2_MODELS
        ]

    def __init__(
        self,
        model_name: str = "vit_small_patch14_dinov2",
        weights: str | os.PathLike[str] | None = None,
        weights_dir: str | os.PathLike[str] | None = None,
        pretrained: bool = True,
        image_size: int | None = 224,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        import timm

        if "dinov2" not in model_name or not timm.is_model(model_name):
            raise RaysweepError(
                f"loss.dinov2.model={model_name!r} is not a timm DINOv2 model; use one of {DINOV2_MODELS}"
            )
        if image_size is not None and (image_size <= 0 or image_size % 14):
            raise RaysweepError(
                f"DINOv2Distance image_size={image_size} must be a positive multiple of 14, e.g. 224"
            )
        self.model_name = model_name
        self.image_size = image_size
        self.weights_path = _resolve_dinov2(model_name, weights, weights_dir) if pretrained else None
        # ImageNet statistics, the normalisation DINOv2 was trained with; not checkpointed.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        if device is not None:
            self.network(device)

    def network(self, device: torch.device | str = "cpu") -> FrozenNetwork:
        """The shared frozen DINOv2 ViT on ``device`` (built on first use, then cached)."""
        model_name, weights_path = self.model_name, self.weights_path
        return frozen_network(
            f"dinov2:{model_name}", weights_path, device, lambda: _build_dinov2(model_name, weights_path)
        )

    def _input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size: ``image_size`` square, or each side rounded up to a multiple of 14."""
        if self.image_size is not None:
            return self.image_size, self.image_size
        return -(-height // 14) * 14, -(-width // 14) * 14

    def _patch_features(self, network: FrozenNetwork, images: Tensor) -> Tensor:
        """L2-normalised patch tokens ``(B, n_patches, channels)`` of images in ``[-1, 1]``."""
        images = (to_rgb(images) + 1.0) / 2.0
        size = self._input_size(images.shape[-2], images.shape[-1])
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        images = (images - self.mean.to(images)) / self.std.to(images)
        vit = network.network
        tokens = vit.forward_features(images)[:, vit.num_prefix_tokens :]
        return F.normalize(tokens.float(), dim=-1, eps=1e-6)

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """DINOv2 patch-token distance per image, shape ``(B,)``; ``x_logvar`` is ignored."""
        check_pair(x, x_hat)
        network = self.network(x_hat.device)
        with torch.no_grad():
            target = self._patch_features(network, x)
        return (self._patch_features(network, x_hat) - target).square().sum(dim=(1, 2))


def _resolve_dinov2(
    model_name: str, weights: str | os.PathLike[str] | None, weights_dir: str | os.PathLike[str] | None
) -> str:
    """Find the DINOv2 state dict: explicit file, weights dirs, then the Hugging Face cache."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise RaysweepError(
                f"loss.dinov2.weights: {path} does not exist; point it at a {model_name} state dict"
            )
        return str(path.resolve())
    candidates = _dinov2_candidates(model_name, weights_dir)
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        searched = ", ".join(str(path) for path in candidates)
        raise RaysweepError(
            f"DINOv2 needs {model_name}.safetensors (or .pth), not found at {searched}; "
            f"set loss.dinov2.weights to the file or {_FIX}"
        )
    return str(found.resolve())


def weights_report(weights_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """For each registered neural term that needs pretrained weights (``TermSpec.weights`` in
    :mod:`raysweep.registry`), in registry order, the files it loads, where it looks, and whether they are there.

    Backs the ``raysweep weights`` command. Each entry has ``loss``, ``model``, ``file`` (the
    name looked for), ``searched`` (paths in search order), ``found`` (first existing path or
    None) and ``present`` (bool).
    """
    # Every term's class is attached already: importing this module ran raysweep/losses/__init__.py,
    # which imports every term's module.
    entries: list[dict[str, Any]] = []
    for spec in NEURAL_TERMS:
        if spec.weights:
            entries += NEURAL_TERMS.code(spec.name).weight_files(weights_dir)
    return entries


def _entry(loss: str, model: str, file: str, searched: list[Path]) -> dict[str, Any]:
    """One row of :func:`weights_report`."""
    found = next((path for path in searched if path.is_file()), None)
    return {
        "loss": loss,
        "model": model,
        "file": file,
        "searched": [str(path) for path in searched],
        "found": None if found is None else str(found),
        "present": found is not None,
    }


def download_weights(
    weights_dir: str | os.PathLike[str], dinov2_models: tuple[str, ...] = DINOV2_MODELS
) -> list[Path]:
    """Download every pretrained file the neural losses need into ``weights_dir`` (needs internet).

    Fetches torchvision's ImageNet VGG16 as ``vgg16-397923af.pth`` and, for each DINOv2 model,
    timm's pretrained weights (Hugging Face hub), saved as ``<model_name>.safetensors``. Files
    already present are kept. Returns the paths written or found.
    """
    import timm
    from safetensors.torch import save_file
    from torchvision.models import VGG16_Weights

    target = Path(weights_dir).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / VGG16_FILENAME]
    if not paths[0].is_file():
        torch.hub.download_url_to_file(VGG16_Weights.IMAGENET1K_V1.url, str(paths[0]), progress=True)
    for model_name in dinov2_models:
        path = target / f"{model_name}.safetensors"
        if not path.is_file():
            model = timm.create_model(model_name, pretrained=True, num_classes=0)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        paths.append(path)
    return paths
