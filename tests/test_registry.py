"""The registries of datasets and reconstruction terms (raysweep.registry): every declared entry has its
code attached by the module that defines it, the config's choices and messages and the README's key
table come from them, and a registry refuses what it does not declare."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

import raysweep.data  # noqa: F401  (attaches every dataset's builder)
import raysweep.losses  # noqa: F401  (attaches every term's class)
from raysweep.config import DataConfig, LossConfig
from raysweep.errors import RaysweepError
from raysweep.losses.base import ReconstructionTerm
from raysweep.registry import (
    DATASETS,
    MATCHED_RATE_STRATEGIES,
    NEURAL_TERMS,
    PIXEL_TERMS,
    SEARCH_MODES,
    Registry,
    Spec,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_declared_entry_has_its_code_attached() -> None:
    assert DATASETS.attached() == DATASETS.names()
    assert PIXEL_TERMS.attached() == PIXEL_TERMS.names()
    assert NEURAL_TERMS.attached() == tuple(spec.name for spec in NEURAL_TERMS if spec.builds_term)
    for registry in (NEURAL_TERMS, PIXEL_TERMS):
        for name in registry.attached():
            assert issubclass(registry.code(name), ReconstructionTerm), name


def test_a_neural_term_logs_its_metric_under_its_registered_name() -> None:
    # the frontier reads the neural term back from its metric's name
    for name in NEURAL_TERMS.attached():
        assert NEURAL_TERMS.code(name).name == name


def test_the_config_choices_are_the_registered_names() -> None:
    assert typing.get_args(DataConfig.model_fields["dataset"].annotation) == DATASETS.names()
    assert typing.get_args(LossConfig.model_fields["neural"].annotation) == NEURAL_TERMS.names()
    assert typing.get_args(LossConfig.model_fields["pixel"].annotation) == PIXEL_TERMS.names()
    assert (DataConfig().dataset, LossConfig().neural, LossConfig().pixel) == ("xysquares", "none", "sse")


def test_every_config_block_a_spec_names_exists() -> None:
    for registry, model in ((DATASETS, DataConfig), (NEURAL_TERMS, LossConfig), (PIXEL_TERMS, LossConfig)):
        for spec in registry:
            if spec.block is not None:
                prefix, _, field = spec.block.rpartition(".")
                assert prefix == registry.key.split(".")[0] and field in model.model_fields, spec.block


def test_root_generated_and_weights_agree_with_the_code(tmp_path: Path) -> None:
    for spec in DATASETS:
        if spec.root is not None:
            with pytest.raises(ValueError, match=f"data.root is required when data.dataset is '{spec.name}'"):
                DataConfig(dataset=spec.name)
        else:
            DataConfig(dataset=spec.name)
    squares = DATASETS.code("xysquares")(DataConfig(image_size=16))
    assert DATASETS["xysquares"].generated and not isinstance(squares, tuple)
    for spec in NEURAL_TERMS:
        if spec.builds_term:
            assert bool(spec.weights) == bool(NEURAL_TERMS.code(spec.name).weight_files(tmp_path)), spec.name


def test_the_lambda_message_names_every_term_that_builds() -> None:
    with pytest.raises(ValueError) as caught:
        LossConfig(neural=NEURAL_TERMS.default, lambda_neural=0.5)
    listed = re.search(r"one of (.*) \(or", str(caught.value)).group(1).split(", ")
    assert listed == [spec.name for spec in NEURAL_TERMS if spec.builds_term]


def test_a_registry_refuses_undeclared_and_doubly_attached_code() -> None:
    registry: Registry[Spec] = Registry("widget", "data.widget", [Spec("a", "one"), Spec("b", "two")])
    with pytest.raises(ValueError, match="'c' is not declared"):
        registry.builds("c")

    @registry.builds("a")
    def first() -> None: ...

    with pytest.raises(ValueError, match="'a' already has code attached"):
        registry.builds("a")(lambda: None)
    assert registry.attached() == ("a",) and registry.default == "a"
    with pytest.raises(RaysweepError, match=r"^data.widget: unknown widget 'c'; registered: a, b$"):
        registry["c"]
    with pytest.raises(RaysweepError, match="'b' has no code attached"):
        registry.code("b")


def _readme_names(key: str) -> list[str]:
    """The backticked names in the meaning cell of the README key table's row for `key`."""
    rows = [line for line in README.read_text().splitlines() if line.startswith(f"| `{key}`")]
    assert len(rows) == 1, f"README: expected one key-table row for {key}"
    meaning = rows[0].split(" | ")[1]
    return re.findall(r"`([a-z0-9_]+)`", meaning)


@pytest.mark.parametrize(("key", "registry"), [
    ("data.dataset", DATASETS), ("loss.neural", NEURAL_TERMS), ("loss.pixel", PIXEL_TERMS),
    ("search.mode", SEARCH_MODES), ("search.matched_rate.strategy", MATCHED_RATE_STRATEGIES),
])
def test_the_readme_key_table_names_exactly_the_registered_entries(key: str, registry: Registry) -> None:
    assert _readme_names(key) == list(registry.names())
