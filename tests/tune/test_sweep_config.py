"""Sweep files: expansion into cells, counts, overrides and one-line errors naming the source key."""

from __future__ import annotations

import pytest
import yaml
from tune_helpers import tiny_sweep

from raysweep.errors import RaysweepError
from raysweep.tune.load import apply_sweep_overrides, dump_sweep, sweep_from_dict
from raysweep.tune.space import (
    CELL_KEY,
    build_param_space,
    expand_sweep,
    flat_trial_params,
    trial_config_from_params,
)


def test_grid_cells_and_seeds_multiply() -> None:
    raw = tiny_sweep(search={
        "mode": "grid",
        "cells": [{"loss.neural": "none"}, {"loss.neural": "box_blur", "loss.lambda_neural": 0.5}],
        "grid": {"objective.beta": [0.5, 1.0, 2.0], "train.lr": [1e-3, 2e-3]},
        "seeds": [0, 1],
    })
    expanded = expand_sweep(sweep_from_dict(raw))
    assert expanded.num_trials == 2 * 3 * 2 * 2
    first = expanded.cells[0]
    assert first.sources["objective.beta"] == "search.grid.objective.beta[0]"
    assert first.sources["train.seed"] == "search.seeds[0]"
    assert expanded.cells[-1].flat["loss.lambda_neural"] == 0.5
    assert {"loss.neural", "objective.beta", "train.lr", "train.seed"} <= set(expanded.varying_keys)


def test_nested_grid_keys_are_flattened() -> None:
    raw = tiny_sweep(search={"grid": {"objective": {"beta": [1.0, 2.0]}}})
    assert expand_sweep(sweep_from_dict(raw)).num_trials == 2


def test_random_and_optuna_sample_per_cell() -> None:
    dist = {"train.lr": {"loguniform": [1e-4, 1e-2]}}
    raw = tiny_sweep(search={"mode": "random", "grid": {"objective.beta": [1.0, 2.0]}, "distributions": dist,
                             "num_samples": 3})
    assert expand_sweep(sweep_from_dict(raw)).num_trials == 6
    raw = tiny_sweep(search={"mode": "optuna", "distributions": dist, "num_samples": 4,
                             "optuna": {"metric": "psnr", "mode": "max"}, "scheduler": {"type": "asha"}})
    sweep = sweep_from_dict(raw)
    assert expand_sweep(sweep).num_trials == 4
    assert sweep.search.scheduler.metric == "psnr"  # ASHA takes Optuna's metric by default


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ({"grid": {"loss.lambda_neural": [0.0, 1.5]}, "cells": [{"loss.neural": "box_blur"}]},
         "search.grid.loss.lambda_neural[1]: input should be less than or equal to 1"),
        ({"grid": {"loss.lamda": [0.5]}}, "search.grid.loss.lamda[0]: unknown key"),
        ({"cells": [{"loss.neural": "none", "loss.lambda_neural": 0.5}]}, "search.cells[0]: loss.lambda_neural > 0 needs"),
        ({"mode": "random", "distributions": {"train.lr": {"loguniform": [0, 1]}}},
         "search.distributions.train.lr: loguniform: low must be positive"),
        ({"mode": "random", "distributions": {"objective.beta": {"uniform": [-1.0, 1.0]}}},
         "search.distributions.objective.beta.uniform: input should be greater than 0"),
        ({"distributions": {"train.lr": {"uniform": [0.1, 1]}}}, "search.distributions needs search.mode random"),
        ({"grid": {"objective.beta": [1.0]}, "cells": [{"objective.beta": 2.0}]}, "both set objective.beta"),
        ({"grid": {"objective.beta": [1.0]}, "num_samples": 2}, "use search.seeds for repeats"),
        ({"seeds": [0], "grid": {"train.seed": [1]}}, "search.seeds repeats over train.seed"),
        ({"mode": "optuna", "distributions": {"train.lr": {"uniform": [0.1, 1]}}}, "needs a search.optuna block"),
        ({"scheduler": {"type": "asha", "metric": "psnr"}}, "asha needs metric and mode"),
        ({"scheduler": {"type": "asha", "metric": "psnnr", "mode": "max"}}, "'psnnr' is not a metric"),
        ({"grid": {"name": [1]}}, "search.grid.name: not a trial key"),
        ({"mode": "bisection"}, "search.mode: input should be"),
    ],
)
def test_errors_name_their_source(search: dict, expected: str) -> None:
    with pytest.raises(RaysweepError) as err:
        sweep_from_dict(tiny_sweep(search=search), source="s.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("s.yaml: ")
    assert expected in message, message


def test_base_trial_error_and_batch_split() -> None:
    with pytest.raises(RaysweepError, match=r"trial.train.lr: input should be greater than 0"):
        sweep_from_dict(tiny_sweep(trial={**tiny_sweep()["trial"], "train": {"max_steps": 5, "lr": -1}}))
    raw = tiny_sweep(search={"grid": {"train.batch_size": [16, 15]}}, resources={"workers": 2})
    with pytest.raises(RaysweepError, match=r"search.grid.train.batch_size\[1\]: 15 is not divisible by resources.workers 2"):
        sweep_from_dict(raw)
    with pytest.raises(RaysweepError, match="unknown key"):
        sweep_from_dict(tiny_sweep(resources={"gpus": 1}))


def test_overrides_address_trial_and_sweep_keys() -> None:
    raw = tiny_sweep()
    apply_sweep_overrides(raw, ["train.max_steps=40", "trial.objective.beta=2", "resources.cpus_per_worker=0.5",
                                "search.grid.objective.beta=[0.5, 1]", "search.seeds=[3, 4]"])
    sweep = sweep_from_dict(raw)
    assert sweep.trial["train"]["max_steps"] == 40
    assert sweep.resources.cpus_per_worker == 0.5
    assert sweep.search.grid == {"objective.beta": [0.5, 1]}
    assert expand_sweep(sweep).num_trials == 4


def test_dump_reads_back_unchanged() -> None:
    sweep = sweep_from_dict(tiny_sweep(search={"grid": {"objective.beta": [1.0, 2.0]}}))
    again = sweep_from_dict(yaml.safe_load(dump_sweep(sweep)))
    assert again == sweep


def test_param_space_holds_the_full_flat_config() -> None:
    from ray.tune.search.sample import Domain

    sweep = sweep_from_dict(tiny_sweep(search={"grid": {"objective.beta": [1.0, 2.0]}}))
    expanded = expand_sweep(sweep)
    space = build_param_space(expanded)
    assert isinstance(space["objective.beta"], Domain) and isinstance(space[CELL_KEY], Domain)
    assert space["train.max_steps"] == 20 and space["data.image_size"] == 16
    params = {**space, CELL_KEY: 1, "objective.beta": 2.0}
    cfg = trial_config_from_params(params)
    assert cfg.objective.beta == 2.0 and cfg.train.max_steps == 20
    assert flat_trial_params(params) == cfg.flat()


def test_a_used_sweep_directory_is_not_overwritten(tmp_path, capsys) -> None:
    from raysweep.cli import main
    from raysweep.tune.run import run_sweep

    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "sweep.yaml").write_text("name: tiny\n")
    with pytest.raises(RaysweepError, match=r"already holds a sweep: continue it with `raysweep resume .*tiny`"):
        run_sweep(sweep_from_dict(tiny_sweep()), storage=str(tmp_path))
    assert main(["resume", str(tmp_path / "nothing")]) == 2
    assert "not a raysweep sweep directory" in capsys.readouterr().err
