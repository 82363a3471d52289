"""The registries of the extension points whose names the config validates: datasets
(``data.dataset``), reconstruction terms (``loss.neural``, ``loss.pixel``), search modes
(``search.mode``) and matched-rate strategies (``search.matched_rate.strategy``). Claims have theirs in
:mod:`raysweep.names` (``CLAIM_SPECS``), beside the metric names they read.

Each registry has two halves, and this module holds the first:

- the **spec** of each entry: its name and the facts that code outside its own file needs (whether a
  dataset is generated or read from ``data.root``, whether it is cached, its config block, the
  pretrained weights a term needs). Config validation, its error messages, the checks of
  ``raysweep validate`` and ``prepare``, and the README's key tables (checked by a test) all read
  these specs; no other module compares a dataset's or a term's name.
- the **code** (a dataset's builder, a term's constructor), attached where it is defined with
  ``@DATASETS.builds("name")`` / ``@NEURAL_TERMS.builds("name")`` when ``raysweep.data`` or
  ``raysweep.losses`` is imported, ``@SEARCH_MODES.builds("name")`` when ``raysweep.tune.modes`` is, and
  ``@MATCHED_RATE_STRATEGIES.builds("name")`` when ``raysweep.tune.matched_rate.searchers`` is.

Why the specs live here, on the ground floor, rather than being registered by the modules that define
the code (timm's pattern): ``config`` sits below ``data`` and ``losses`` and may import neither, lazy
imports included (``tests/test_import_graph.py``). A registry filled only at import of
``raysweep.data`` would make ``TrialConfig`` accept or refuse a dataset depending on which packages
happened to be imported first, and importing them from ``config`` runs up a layer. So the names and
facts are declared once here, where every layer can read them without importing torch, and the code
is attached beside its definition; a registry refuses code for an undeclared name or a second
builder for one name, and ``tests/test_registry.py`` checks that every spec has its code once both
packages are imported.

Adding a dataset, a term, a search mode or a matched-rate strategy: its own file (with its ``builds``
registration), one spec below, its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from raysweep.errors import RaysweepError

__all__ = [
    "DATASETS",
    "MATCHED_RATE_STRATEGIES",
    "NEURAL_TERMS",
    "PIXEL_TERMS",
    "SEARCH_MODES",
    "DatasetSpec",
    "Registry",
    "SearchModeSpec",
    "Spec",
    "StrategySpec",
    "TermSpec",
]


@dataclass(frozen=True)
class Spec:
    """What every registered entry has: its name (the config value) and one line saying what it is."""

    name: str
    summary: str


SpecT = TypeVar("SpecT", bound=Spec)
CodeT = TypeVar("CodeT", bound=Callable[..., Any])


class Registry(Generic[SpecT]):
    """Specs by name, in declaration order, and the code attached to each by its defining module.

    Args:
        what: what an entry is, in words ("dataset"), for messages.
        key: the dotted config key whose values are the names ("data.dataset").
        specs: the entries; the first is the config's default.
    """

    def __init__(self, what: str, key: str, specs: Iterable[SpecT]) -> None:
        self.what, self.key = what, key
        self._specs: dict[str, SpecT] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"{key}: {spec.name!r} declared twice")
            self._specs[spec.name] = spec
        self._code: dict[str, Callable[..., Any]] = {}

    def names(self) -> tuple[str, ...]:
        """Every registered name, in declaration order (the config's Literal and the README's list)."""
        return tuple(self._specs)

    @property
    def default(self) -> str:
        """The config's default value: the first declared name."""
        return next(iter(self._specs))

    def __iter__(self) -> Iterator[SpecT]:
        return iter(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> SpecT:
        spec = self._specs.get(name)
        if spec is None:
            raise RaysweepError(f"{self.key}: unknown {self.what} {name!r}; registered: {', '.join(self._specs)}")
        return spec

    def builds(self, name: str) -> Callable[[CodeT], CodeT]:
        """Decorator attaching the code of the declared entry `name` (returns the code unchanged)."""
        if name not in self._specs:
            raise ValueError(f"{self.key}: {name!r} is not declared in raysweep/registry.py; add its spec there")

        def attach(code: CodeT) -> CodeT:
            if name in self._code and self._code[name] is not code:
                raise ValueError(f"{self.key}: {name!r} already has code attached ({self._code[name].__qualname__})")
            self._code[name] = code
            return code

        return attach

    def code(self, name: str) -> Callable[..., Any]:
        """The code attached to `name` (its defining package must have been imported)."""
        spec = self[name]
        code = self._code.get(spec.name)
        if code is None:
            raise RaysweepError(f"{self.key}: {self.what} {name!r} has no code attached: its module was not imported")
        return code

    def attached(self) -> tuple[str, ...]:
        """The names whose code is attached so far (for the registry's own tests)."""
        return tuple(name for name in self._specs if name in self._code)


# ------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetSpec(Spec):
    """A dataset's facts.

    Attributes:
        root: what ``data.root`` must hold; None when the dataset needs no folder.
        generated: every image is computed from the config, so the dataset can be as large as its
            geometry: the latent sample is drawn from the whole dataset, and ``raysweep validate``
            checks the split against its length. Its builder returns one pool.
        cacheable: decoded once into ``data.cache_dir`` when ``data.cache`` is on.
        block: the config block holding the dataset's own keys (``data.xysquares``), if any.
        resize_hint: for a generated dataset, the keys that change how many images it has (the
            fix ``raysweep validate`` suggests when a split does not fit).
        extra: the pip extra it needs beyond the base install, if any.
    """

    root: str | None = None
    generated: bool = False
    cacheable: bool = False
    block: str | None = None
    resize_hint: str | None = None
    extra: str | None = None


DATASETS: Registry[DatasetSpec] = Registry("dataset", "data.dataset", [
    DatasetSpec("xysquares", "squares on a grid of positions, generated, needs no download (seed 003)",
                generated=True, block="data.xysquares",
                resize_hint="data.xysquares.grid_size bounds the positions per axis (e.g. 8); a smaller "
                "data.xysquares.grid_spacing or a larger data.image_size adds positions"),
    DatasetSpec("celeba", "aligned CelebA faces with the official partition",
                root="the folder holding img_align_celeba/", cacheable=True),
    DatasetSpec("tiny_imagenet", "Tiny-ImageNet with its train and val folders",
                root="the tiny-imagenet-200 folder holding train/ and val/", cacheable=True),
    DatasetSpec("image_folder", "every image under a folder, centre-cropped",
                root="a folder of images", cacheable=True),
    DatasetSpec("photo_patches", "patches of the photographs the scikit-image wheel ships, needs no download",
                extra="photos"),
])


# --------------------------------------------------------------------------- reconstruction terms
@dataclass(frozen=True)
class TermSpec(Spec):
    """A reconstruction term's facts.

    Attributes:
        block: the config block holding the term's own keys (``loss.box_blur``), if any.
        weights: the pretrained network whose file it loads (listed by ``raysweep weights``), if any.
        builds_term: False only for the entry meaning "no neural term" (lambda must then be 0).
        balancer_cancels: a pixel term whose learned part only scales the x_hat gradient, which the
            balancer renormalises away: it needs ``loss.balancer: false``.

    What the term's class itself says (its metric ``name``, ``needs_logvar``, ``frozen``,
    ``adversarial``, its pretrained files) stays on the class, read through ``code(name)``.
    """

    block: str | None = None
    weights: str | None = None
    builds_term: bool = True
    balancer_cancels: bool = False


NEURAL_TERMS: Registry[TermSpec] = Registry("neural term", "loss.neural", [
    TermSpec("none", "no neural term: the distortion is the pixel term alone", builds_term=False),
    TermSpec("lpips", "LPIPS distance on VGG16 features", weights="ImageNet VGG16 (torchvision)"),
    TermSpec("dinov2", "squared distance of DINOv2 patch features", block="loss.dinov2",
             weights="DINOv2 ViT (timm)"),
    TermSpec("patchgan", "PatchGAN adversarial term with feature matching", block="loss.patchgan"),
    TermSpec("box_blur", "squared error between box-blurred images", block="loss.box_blur"),
])

PIXEL_TERMS: Registry[TermSpec] = Registry("pixel term", "loss.pixel", [
    TermSpec("sse", "sum of squared errors per image"),
    TermSpec("learned_sigma_scalar", "Gaussian likelihood with one learned sigma (LS-VAE)", balancer_cancels=True),
    TermSpec("learned_sigma_pixel", "Gaussian likelihood with a per-pixel sigma from the decoder (LV-VAE)"),
])


# ---------------------------------------------------------------------------------- search modes
@dataclass(frozen=True)
class SearchModeSpec(Spec):
    """A search mode's facts (its code, a :class:`raysweep.tune.modes.SearchMode`, runs it).

    Attributes:
        samples: draws ``search.num_samples`` trials per cell from ``search.distributions`` (which it
            then needs); False: one trial per cell, nothing sampled.
        block: the ``search`` block holding its own settings (``optuna``: ``search.optuna``), which no
            other mode may set; None when it has none.
        block_example: what the block holds, for the error when it is missing.
        extendable: ``raysweep extend`` can add cells to a finished sweep (its trials are fixed points).
        fixed_beta: every trial trains at the beta its cell sets, so the claims on beta and lambda read
            its runs as they are (``raysweep extend --until-decided`` grows its seeds).
    """

    samples: bool = False
    block: str | None = None
    block_example: str = ""
    extendable: bool = False
    fixed_beta: bool = True


SEARCH_MODES: Registry[SearchModeSpec] = Registry("search mode", "search.mode", [
    SearchModeSpec("grid", "one trial per cell of search.cells x search.grid x search.seeds", extendable=True),
    SearchModeSpec("random", "search.num_samples random draws of search.distributions per cell", samples=True),
    SearchModeSpec("optuna", "search.num_samples Optuna TPE suggestions per cell, one study per cell", samples=True,
                   block="optuna", block_example="with metric and mode, e.g. {metric: psnr, mode: max}"),
    SearchModeSpec("matched_rate", "per cell, the beta whose converged rate meets each of search.matched_rate.targets",
                   block="matched_rate", block_example="e.g. {targets: [10.0], tolerance: 0.05, strategy: bisection}",
                   extendable=True, fixed_beta=False),
])


@dataclass(frozen=True)
class StrategySpec(Spec):
    """A matched-rate strategy's facts (its code builds its Tune searcher).

    Attributes:
        steers: one trial per (cell, target) steers its own beta to the target in training (GECO):
            the strategy sets ``objective.geco.target_rate``, the operating point's beta is the run's
            final beta, and no beta is probed; False: trials probe fixed betas, several per task.
        optuna: its studies live in an Optuna storage (``sqlite:///<sweep dir>/optuna.db`` by default).
        asha: ASHA on ``rate_error`` is on unless ``search.matched_rate.early_stopping`` says otherwise.
    """

    steers: bool = False
    optuna: bool = False
    asha: bool = False


MATCHED_RATE_STRATEGIES: Registry[StrategySpec] = Registry("matched-rate strategy", "search.matched_rate.strategy", [
    StrategySpec("bisection", "bisection on log beta, the bracket widened until it holds the target"),
    StrategySpec("optuna", "Optuna TPE on log beta, minimising |log(rate / target)|", optuna=True, asha=True),
    StrategySpec("geco", "one GECO run per target, its beta steered to the rate target in training", steers=True),
])
