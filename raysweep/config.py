"""Typed, validated configuration for one trial: the blocks `data`, `model`, `loss`, `objective`,
`train`.

Every YAML block maps onto a pydantic model that forbids unknown keys. Validation errors are turned
into a single-line :class:`~raysweep.errors.RaysweepError` that names the dotted key (for example
``loss.lambda_neural``) and what is allowed, so the CLI can print it and exit with status 2.

A trial file is either a plain trial (the five blocks at top level) or a sweep file whose `trial`
block holds them; :func:`load_trial_config` accepts both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raysweep.errors import RaysweepError
from raysweep.registry import DATASETS, NEURAL_TERMS, PIXEL_TERMS

TRIAL_BLOCKS = ("data", "model", "loss", "objective", "train")


class StrictModel(BaseModel):
    """Base for every config block: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------- data
class XYSquaresConfig(StrictModel):
    """XYSquares (seed 003): squares of `square_size` pixels on a grid of `grid_size` positions per
    axis spaced `grid_spacing` pixels apart (default: equal to `square_size`)."""

    square_size: int = Field(8, ge=1)
    grid_size: int | None = Field(None, ge=1, description="positions per axis; None = largest that fits")
    grid_spacing: int | None = Field(None, ge=1, description="pixels between positions; None = square_size")
    num_squares: int = Field(3, ge=1, le=3)
    rgb: bool = True


class DataConfig(StrictModel):
    """Which images a trial trains on and how they are prepared."""

    # The allowed names and the facts checked below come from the registry (raysweep/registry.py).
    dataset: Literal[DATASETS.names()] = DATASETS.default  # type: ignore[valid-type]
    root: Path | None = Field(None, description="dataset folder; required for the datasets read from one ("
                              + ", ".join(spec.name for spec in DATASETS if spec.root) + ")")
    image_size: int = Field(64, ge=8, le=1024, description="square side in pixels after crop and resize")
    val_size: int = Field(512, ge=1, description="held-out images used for validation metrics (a cap for datasets with an official split)")
    train_size: int | None = Field(None, ge=1, description="cap on training images (None = all)")
    split_seed: int = Field(0, description="seed of the train/validation split, kept apart from train.seed so "
                            "trials with different seeds are validated on the same images")
    hflip: bool = Field(True, description="random horizontal flip at training time")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per trial worker decoding image "
                             "files (data.cache false, validation, and building a prepared cache); training batches "
                             "of a prepared cache are read in the trial process, faster than through a worker")
    latent_sample_size: int = Field(
        10_000, ge=2, description="images of a generated dataset (data.dataset xysquares) encoded at the final validation "
        "for the statistics of the aggregated posterior (aggregated and channel anisotropy) and MIG, "
        "drawn from the whole dataset with data.split_seed; generated images cost nothing, and the "
        "validation set alone is too small for a J x J covariance or a 20-bin MIG. Datasets read from "
        "folders use the validation set"
    )
    cache: bool = Field(
        True, description="cacheable datasets (" + ", ".join(spec.name for spec in DATASETS if spec.cacheable)
        + "): decode, crop and resize every image once into a prepared uint8 array in data.cache_dir, shared by "
        "every trial on the node, instead of decoding it again on every epoch of every trial; false decodes the "
        "files on every read. Ignored for the others (" + ", ".join(spec.name for spec in DATASETS if not spec.cacheable)
        + ")"
    )
    cache_dir: Path | None = Field(
        None, description="folder of the prepared caches (None: $XDG_CACHE_HOME/raysweep, else "
        "~/.cache/raysweep, on each node); a folder on shared storage lets every node reuse one copy"
    )
    xysquares: XYSquaresConfig = Field(default_factory=XYSquaresConfig)

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir_usable(cls, value: Path | None) -> Path | None:
        # "~/..." would otherwise name a folder called "~", and a relative path would name another folder
        # in each Ray trial's working directory (no sharing); an existing file cannot hold caches.
        if value is None:
            return None
        value = value.expanduser().absolute()
        if value.exists() and not value.is_dir():
            raise ValueError(f"data.cache_dir {value} is a file, not a folder: point it at a folder (it is created "
                             "when missing)")
        return value

    @model_validator(mode="after")
    def _root_required(self) -> DataConfig:
        holds = DATASETS[self.dataset].root
        if holds is not None and self.root is None:
            raise ValueError(
                f"data.root is required when data.dataset is {self.dataset!r}: set it to "
                f"{holds} (e.g. --set data.root=/data/{self.dataset})"
            )
        return self


# ---------------------------------------------------------------------------------------- model
class ModelConfig(StrictModel):
    """Model family and size. `latent_dim` overrides the preset's latent size (vector length for
    vector_vae, latent channels for autoencoder_kl)."""

    arch: Literal["vector_vae", "autoencoder_kl"] = "vector_vae"
    preset: Literal["tiny", "paper"] = "tiny"
    latent_dim: int | None = Field(None, ge=1)
    logvar_min: float = Field(-30.0, description="lower clamp of the posterior log-variance")
    logvar_max: float = Field(20.0, description="upper clamp of the posterior log-variance")

    @model_validator(mode="after")
    def _clamp_order(self) -> ModelConfig:
        if not self.logvar_min < self.logvar_max:
            raise ValueError("model.logvar_min must be below model.logvar_max")
        return self


# ----------------------------------------------------------------------------------------- loss
class BoxBlurConfig(StrictModel):
    radius: int = Field(1, ge=0, description="kernel is (2r+1)^2 pixels")


class PatchGANConfig(StrictModel):
    start_step: int = Field(0, ge=0, description="generator step at which the adversarial term and the discriminator start")
    layers: int = Field(3, ge=1, le=6)
    channels: int = Field(64, ge=4, description="base channels of the discriminator")
    feature_matching_weight: float = Field(1.0, ge=0.0)
    lr_ratio: float = Field(0.5, gt=0.0, description="discriminator learning rate as a fraction of train.lr")


class DINOv2Config(StrictModel):
    model: Literal["vit_small_patch14_dinov2", "vit_base_patch14_dinov2"] = "vit_small_patch14_dinov2"
    weights: Path | None = Field(None, description="state-dict file (.pth or .safetensors)")
    image_size: int | None = Field(
        224, ge=14, description="side the images are resized to before DINOv2 (a multiple of 14 is used); "
        "null: the input size rounded up to a multiple of 14 (much cheaper on a CPU)"
    )


class LossConfig(StrictModel):
    """The distortion: (1 - lambda_neural) * pixel term + lambda_neural * neural term, combined
    by the EnCodec balancer unless `balancer` is false."""

    # The allowed names and the facts checked below come from the registry (raysweep/registry.py).
    neural: Literal[NEURAL_TERMS.names()] = NEURAL_TERMS.default  # type: ignore[valid-type]
    lambda_neural: float = Field(0.0, ge=0.0, le=1.0)
    pixel: Literal[PIXEL_TERMS.names()] = PIXEL_TERMS.default  # type: ignore[valid-type]
    sigma_init: float = Field(1.0, gt=0.0, description="initial sigma of the learned scalar likelihood")
    balancer: bool = True
    balancer_ema_decay: float = Field(0.999, gt=0.0, lt=1.0)
    balancer_total_norm: float = Field(1.0, gt=0.0)
    balancer_epsilon: float = Field(1e-12, gt=0.0)
    pretrained: bool = Field(True, description="load pretrained LPIPS/DINOv2 weights (false: random weights, for tests)")
    weights_dir: Path | None = Field(None, description="folder holding vgg16-397923af.pth and DINOv2 weights")
    box_blur: BoxBlurConfig = Field(default_factory=BoxBlurConfig)
    patchgan: PatchGANConfig = Field(default_factory=PatchGANConfig)
    dinov2: DINOv2Config = Field(default_factory=DINOv2Config)

    @model_validator(mode="after")
    def _neural_needs_loss(self) -> LossConfig:
        if not NEURAL_TERMS[self.neural].builds_term and self.lambda_neural > 0:
            terms = ", ".join(spec.name for spec in NEURAL_TERMS if spec.builds_term)
            raise ValueError(
                f"loss.lambda_neural > 0 needs a neural term: set loss.neural to one of {terms} (or lambda_neural to 0)"
            )
        if PIXEL_TERMS[self.pixel].balancer_cancels and self.balancer:
            # The balancer renormalises the x_hat gradient, so a scalar sigma (which only scales
            # it) would change nothing: the L-VAE setup needs the plain weighted sum.
            others = " or ".join(spec.name for spec in reversed(tuple(PIXEL_TERMS)) if not spec.balancer_cancels)
            raise ValueError(
                f"loss.pixel={self.pixel} has no effect with loss.balancer=true (the balancer "
                "renormalises the gradient a scalar sigma scales): set loss.balancer=false, or use "
                f"loss.pixel={others}"
            )
        return self


# ------------------------------------------------------------------------------------ objective
class GecoConfig(StrictModel):
    """GECO rate controller (Rezende and Viola 2018): on when `target_rate` is set."""

    target_rate: float | None = Field(None, gt=0.0, description="rate target R* in nats")
    step_size: float = Field(0.01, gt=0.0, description="eta in beta <- beta * exp(eta * C)")
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0, description="a in R_ema <- a R_ema + (1 - a) KL")
    beta_min: float = Field(1e-4, gt=0.0)
    beta_max: float = Field(1e4, gt=0.0)

    @model_validator(mode="after")
    def _clamp_order(self) -> GecoConfig:
        if not self.beta_min < self.beta_max:
            raise ValueError("objective.geco.beta_min must be below objective.geco.beta_max")
        return self


class ObjectiveConfig(StrictModel):
    """KL weight: fixed `beta` with a sine warm-up, or the GECO multiplier starting at `beta`."""

    beta: float = Field(1.0, gt=0.0, description="KL weight (initial value when GECO is on)")
    kl_warmup_steps: int = Field(0, ge=0)
    geco: GecoConfig = Field(default_factory=GecoConfig)

    @property
    def geco_enabled(self) -> bool:
        return self.geco.target_rate is not None


# ---------------------------------------------------------------------------------------- train
class TrainConfig(StrictModel):
    """Optimisation. `batch_size` is the global batch, split evenly over DDP workers, so a run's
    maths does not depend on how many workers it uses."""

    epochs: float | None = Field(None, gt=0, description="passes over the training set (may be fractional)")
    max_steps: int | None = Field(None, ge=1, description="optimiser steps; with epochs, the smaller wins")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    lr_min_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine annealing ends at lr * lr_min_ratio")
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    val_every: int = Field(100, ge=1, description="steps between validations")
    grad_clip: float | None = Field(None, gt=0.0)
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept in OUT/checkpoints")
    log_images: bool = Field(True, description="at every validation, a grid of fixed validation images over their "
                             "reconstructions: OUT/reconstructions/step_*.png, an MLflow image at that step in a sweep")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("train: set train.max_steps or train.epochs (how long to train)")
        return self


class TrialConfig(StrictModel):
    """Everything one training run needs."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=1000))

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-serialisable dict (paths as strings)."""
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, e.g. ``{"loss.lambda_neural": 0.5, ...}``."""
        return flatten(self.to_dict())


# -------------------------------------------------------------------------------- error wording
def _loc_to_key(loc: tuple[Any, ...], prefix: str) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    key = ".".join(parts)
    return f"{prefix}{key}" if key else prefix.rstrip(".")


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields allowed where an unknown key `loc` was found."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Turn pydantic's first error into one line naming the dotted key and what is allowed."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = _loc_to_key(loc, prefix)
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    msg = first["msg"]
    if kind == "value_error":
        # Our own model validators already write a full sentence naming the key.
        return msg.removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{key}: {msg[0].lower() + msg[1:]}{shown}"


def validate_model(model: type[StrictModel], raw: Any, prefix: str = "") -> Any:
    """Validate `raw` against `model`, raising a one-line RaysweepError on failure."""
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "the file"
        raise RaysweepError(f"{where}: expected a mapping of keys to values, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise RaysweepError(format_validation_error(err, model, prefix)) from None


# ---------------------------------------------------------------------------- dotted overrides
def spelling(parts: list[str]) -> str:
    """How a key was written, from the keys on its path: ``objective.beta`` (one dotted key) or
    ``objective: {beta}`` (nested)."""
    if len(parts) == 1:
        return parts[0]
    return parts[0] + "".join(": {" + p for p in parts[1:]) + "}" * (len(parts) - 1)


def flatten(
    tree: Mapping[str, Any], prefix: str = "", *, where: str | None = None, private: bool = True,
    empty_blocks: bool = True,
) -> dict[str, Any]:
    """Nested (and/or already dotted) keys -> dotted keys; lists and scalars are leaves.

    The one flattener of the package: trial configs, sweep axes, Tune configs and the params a
    tracker logs all go through it, so ``objective: {beta}`` and ``objective.beta`` mean one key
    everywhere.

    Args:
        where: refuse a key given twice: a sweep file may spell a key nested or dotted, and taking
            one of two spellings by file order would drop the other without a word. With `where`
            set, a key given twice with values that cannot both hold (two different values, or a
            block beside a key inside it) raises; the message starts with `where` and names both
            spellings. The same value twice is accepted (the first spelling is kept). Without it,
            a later spelling simply overwrites an earlier one.
        private: keep keys starting with ``_`` (at any depth). ``False`` leaves them out: a Tune
            config's private keys belong to the trainable, not to the trial's params.
        empty_blocks: an empty mapping is a leaf (``True``) or contributes nothing (``False``, as
            a tracker's params: MLflow has no value to log for it).

    Raises:
        RaysweepError: with `where` set, a key given twice in two spellings that cannot both hold.
    """
    out: dict[str, Any] = {}
    written: dict[str, str] = {}

    def walk(node: Mapping[str, Any], parts: list[str], dotted_prefix: str) -> None:
        for key, value in node.items():
            if not private and str(key).startswith("_"):
                continue
            dotted, path = f"{dotted_prefix}{key}", [*parts, str(key)]
            if isinstance(value, Mapping) and (value or not empty_blocks):
                walk(value, path, dotted + ".")
                continue
            if where is None:
                out[dotted] = value
                continue
            if dotted in out and out[dotted] != value:
                raise RaysweepError(
                    f"{where}: {dotted} is given twice, as {written[dotted]} ({out[dotted]!r}) and as "
                    f"{spelling(path)} ({value!r}): give it once")
            out.setdefault(dotted, value)
            written.setdefault(dotted, spelling(path))

    walk(tree, [], prefix)
    if where is not None:
        for key in out:
            inner = next((k for k in out if k.startswith(key + ".")), None)
            if inner is not None:
                raise RaysweepError(
                    f"{where}: {written[key]} sets the block {key} and {written[inner]} sets {inner} inside it: "
                    "give the keys inside the block, or the block alone")
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for ``dotted = "a.b.c"``, creating mappings on the way."""
    parts = dotted.split(".")
    if not all(parts):
        raise RaysweepError(f"--set {dotted}: empty part in the dotted key")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RaysweepError(f"--set {dotted}: {'.'.join(parts[: i + 1])} is a value, not a block")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` (value read as YAML, so ``0.5`` is a float and ``true`` a bool)."""
    if "=" not in text:
        raise RaysweepError(f"--set {text}: expected dotted.key=value, e.g. --set loss.lambda_neural=0.5")
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):
        raise RaysweepError(f"--set {key}: value must be finite, got {raw!r}")
    return key, value


def apply_overrides(tree: dict[str, Any], overrides: list[str], prefix: str = "") -> dict[str, Any]:
    """Apply ``--set`` overrides (dotted keys relative to `prefix`) to a raw config tree in place."""
    for text in overrides:
        key, value = parse_override(text)
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        set_dotted(tree, key, value)
    return tree


# ------------------------------------------------------------------------------------- loading
def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RaysweepError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RaysweepError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RaysweepError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    return raw


def trial_block(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The raw trial mapping of a trial or sweep file, and the prefix its keys carry in messages."""
    if "trial" in raw:
        block = raw["trial"] if raw["trial"] is not None else {}
        return block, "trial."
    return raw, ""


def load_trial_config(path: str | Path, overrides: list[str] | None = None) -> TrialConfig:
    """Load a trial (or the `trial` block of a sweep file), apply ``--set`` overrides, validate."""
    raw = read_yaml(path)
    block, prefix = trial_block(raw)
    apply_overrides(block, overrides or [], prefix=prefix)
    try:
        return validate_model(TrialConfig, block, prefix=prefix)
    except RaysweepError as err:
        raise RaysweepError(f"{path}: {err}") from None


def trial_config_from_dict(raw: dict[str, Any]) -> TrialConfig:
    """Validate a raw trial mapping (as produced by :meth:`TrialConfig.to_dict` or a sweep)."""
    return validate_model(TrialConfig, raw)


def dump_yaml(cfg: TrialConfig, path: str | Path) -> None:
    """Write a trial config as YAML that :func:`load_trial_config` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
