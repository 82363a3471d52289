"""Search modes and matched-rate strategies behind their registries (raysweep.registry, raysweep.tune.modes):
every declared entry has its code, the schema's choices and messages come from the specs, the facts a spec
declares are what the sweep does, and no module outside a registry tests an entry's name."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from tune_helpers import tiny_sweep

import raysweep.data  # noqa: F401  (attaches every dataset's builder)
import raysweep.losses  # noqa: F401  (attaches every term's class)
from raysweep.errors import RaysweepError
from raysweep.names import CLAIM_SPECS
from raysweep.registry import DATASETS, MATCHED_RATE_STRATEGIES, NEURAL_TERMS, PIXEL_TERMS, SEARCH_MODES
from raysweep.storage import SWEEP_FILE
from raysweep.tune.extend import plan_extension
from raysweep.tune.load import dump_sweep, sweep_from_dict
from raysweep.tune.matched_rate.searchers import MatchedRateSearcher
from raysweep.tune.modes import SearchMode, search_mode
from raysweep.tune.search import CellSearcher
from raysweep.tune.space import expand_sweep
from raysweep.tune.sweep_config import MatchedRateSearch, SearchConfig

PACKAGE = Path(__file__).resolve().parents[2] / "raysweep"

#: The least `search` block each mode accepts (its own block, or what it samples).
MINIMAL = {
    "grid": {"grid": {"objective.beta": [0.5, 1.0]}},
    "random": {"grid": {"objective.beta": [0.5, 1.0]}, "num_samples": 3,
               "distributions": {"train.lr": {"loguniform": [1e-4, 1e-2]}}},
    "optuna": {"grid": {"objective.beta": [0.5, 1.0]}, "num_samples": 3,
               "distributions": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, "optuna": {"metric": "psnr", "mode": "max"}},
    "matched_rate": {"grid": {"loss.lambda_neural": [0.0]}, "matched_rate": {"targets": [5.0, 10.0]}},
}
BLOCKS = {"optuna": {"metric": "psnr", "mode": "max"}, "matched_rate": {"targets": [5.0]}}


def _sweep(mode: str, **search: object):
    return sweep_from_dict(tiny_sweep(search={"mode": mode, **MINIMAL[mode], **search}))


def test_every_mode_and_strategy_has_its_code() -> None:
    assert set(MINIMAL) == set(SEARCH_MODES.names())
    assert SEARCH_MODES.attached() == SEARCH_MODES.names()
    assert MATCHED_RATE_STRATEGIES.attached() == MATCHED_RATE_STRATEGIES.names()
    for name in SEARCH_MODES.names():
        assert issubclass(SEARCH_MODES.code(name), SearchMode), name
    for name in MATCHED_RATE_STRATEGIES.names():
        searcher = MATCHED_RATE_STRATEGIES.code(name)
        assert issubclass(searcher, MatchedRateSearcher) and searcher.strategy == name
        built = searcher.from_search(MatchedRateSearch(targets=[5.0], strategy=name), [{"loss.lambda_neural": 0.0}])
        assert isinstance(built, searcher)


def test_the_schema_choices_are_the_registered_names() -> None:
    assert typing.get_args(SearchConfig.model_fields["mode"].annotation) == SEARCH_MODES.names()
    assert typing.get_args(MatchedRateSearch.model_fields["strategy"].annotation) == MATCHED_RATE_STRATEGIES.names()
    assert (SearchConfig().mode, MatchedRateSearch(targets=[1.0]).strategy) == ("grid", "bisection")


@pytest.mark.parametrize("mode", SEARCH_MODES.names())
def test_a_mode_does_what_its_spec_declares(mode: str, tmp_path: Path) -> None:
    spec = SEARCH_MODES[mode]
    sweep = _sweep(mode)
    expanded = expand_sweep(sweep)
    assert expanded.samples_per_cell == (3 if spec.samples else 1)
    if spec.samples:  # a sampling mode needs something to sample
        raw = tiny_sweep(search={"mode": mode, **{k: v for k, v in MINIMAL[mode].items() if k != "distributions"}})
        with pytest.raises(RaysweepError, match=f"search.mode {mode} needs search.distributions"):
            sweep_from_dict(raw)
    elif spec.fixed_beta:  # and a mode that samples nothing refuses distributions
        sampling = " or ".join(s.name for s in SEARCH_MODES if s.samples)
        with pytest.raises(RaysweepError, match=f"needs search.mode {sampling} \\(mode is {mode}\\)"):
            _sweep(mode, distributions={"train.lr": {"uniform": [0.1, 1]}})
    for other in SEARCH_MODES:  # another mode's block is refused, naming the mode it belongs to
        if other.block is not None and other.block != spec.block:
            with pytest.raises(RaysweepError, match=f"search.{other.block} is only used with search.mode {other.name}"):
                _sweep(mode, **{other.block: BLOCKS[other.block]})
    if spec.block is not None:
        raw = tiny_sweep(search={"mode": mode, **{k: v for k, v in MINIMAL[mode].items() if k != spec.block}})
        with pytest.raises(RaysweepError, match=f"search.mode {mode} needs a search.{spec.block} block"):
            sweep_from_dict(raw)
    assert sweep.search.uses_optuna_storage == (spec.block == "optuna")
    # extend grows exactly the extendable modes, before anything else is checked
    folder = tmp_path / sweep.name
    folder.mkdir()
    (folder / SWEEP_FILE).write_text(dump_sweep(sweep))
    if spec.extendable:
        with pytest.raises(RaysweepError) as caught:
            plan_extension(str(folder), ["search.seeds=[0,1]"])
        assert "extend grows" not in str(caught.value)
    else:
        with pytest.raises(RaysweepError, match=f"search.mode {mode}: extend grows grid and matched_rate sweeps only"):
            plan_extension(str(folder), ["search.seeds=[0,1]"])


@pytest.mark.parametrize("strategy", MATCHED_RATE_STRATEGIES.names())
def test_a_strategy_does_what_its_spec_declares(strategy: str) -> None:
    spec = MATCHED_RATE_STRATEGIES[strategy]
    sweep = _sweep("matched_rate", matched_rate={"targets": [5.0, 10.0], "strategy": strategy})
    mode = search_mode(sweep)
    # what the run names and the console show: GECO sets the target itself, the others probe beta
    assert ("objective.beta" in mode.searched_keys()) == (not spec.steers)
    assert ("objective.geco.target_rate" in mode.searched_keys()) == spec.steers
    assert mode.repeats_within_cell(expand_sweep(sweep)) == (not spec.steers)
    assert sweep.search.matched_rate.uses_asha == spec.asha
    assert sweep.search.uses_optuna_storage == spec.optuna
    assert sweep.search.matched_rate.trials_per_task == (1 if spec.steers else sweep.search.matched_rate.max_trials)
    lines = mode.describe(expand_sweep(sweep))
    assert lines[1].startswith(f"search: matched_rate, strategy {strategy}")
    assert any("beta bracket" in line for line in lines) == (not spec.steers)
    if spec.steers:  # the key it sets is its own
        with pytest.raises(RaysweepError, match="searches objective.geco.target_rate itself"):
            _sweep("matched_rate", grid={"objective.geco.target_rate": [5.0]},
                   matched_rate={"targets": [5.0], "strategy": strategy})


def test_a_cell_mode_hands_its_searcher_the_sweep() -> None:
    for mode in SEARCH_MODES.names():
        runner = search_mode(_sweep(mode))
        if not SEARCH_MODES[mode].fixed_beta:
            continue
        searcher_class = runner.searcher_class()
        assert issubclass(searcher_class, CellSearcher)
        searcher = searcher_class(expand_sweep(runner.sweep), max_concurrent=100, optuna=runner.search.optuna)
        first = searcher.suggest("a")
        assert first["objective.beta"] == 0.5
        assert ("train.lr" in first) == SEARCH_MODES[mode].samples


# ------------------------------------------------------------------------ names stay in their registry
_NAMES = sorted(set(DATASETS.names()) | set(NEURAL_TERMS.names()) | set(PIXEL_TERMS.names())
                | set(SEARCH_MODES.names()) | set(MATCHED_RATE_STRATEGIES.names()) | set(CLAIM_SPECS), key=len, reverse=True)
_ALT = "|".join(map(re.escape, _NAMES))
#: A registered name compared as a string literal: `x == "grid"`, `x in ("grid", ...)`, `"geco" != x`, `.eq("grid")`.
COMPARED = re.compile(rf"""(==|!=|\bin|\bnot in)\s*[(\[{{]?\s*["']({_ALT})["']|["']({_ALT})["']\s*(==|!=)|\.(eq|isin)\(\s*[\[(]?["']({_ALT})["']""")


def test_the_pattern_catches_a_compared_name() -> None:
    for line in ('if sweep.search.mode == "matched_rate":', 'if mode not in ("grid", "matched_rate"):',
                 'beta = a if strategy == "geco" else b', 'if data.dataset != "xysquares":', 'df.eq("matched_rate")',
                 'if claim == "rate_vs_lambda":'):
        assert COMPARED.search(line), line
    assert not COMPARED.search('SEARCH_MODES.builds("grid")') and not COMPARED.search('mode: str = "grid"')


def test_no_registered_name_is_compared_outside_its_registry() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("registry.py", "names.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if COMPARED.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "a registered name compared outside its registry (read the spec's facts instead):\n" + "\n".join(found)
