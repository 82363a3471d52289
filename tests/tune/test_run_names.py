"""Child run names (:mod:`raysweep.tune.run_names`): what varies and the seed, unique, the same from
the tracking callback (Tune config) and from ``raysweep sync`` (flat params, ``params.json``)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from tune_helpers import REPO, tiny_sweep

from raysweep.tune.load import load_sweep, sweep_from_dict
from raysweep.tune.matched_rate.points import META_KEY
from raysweep.tune.run_names import run_namer
from raysweep.tune.space import build_param_space, cell_params, expand_sweep, flat_trial_params


def _tune_configs(sweep):  # as the sweep's searcher hands them to Tune: constants + the cell's keys
    expanded = expand_sweep(sweep)
    space = {k: v for k, v in build_param_space(expanded).items() if not hasattr(v, "sample")}
    return [{**space, **cell_params(cell, expanded.varying_keys)} for cell in expanded.cells]


def test_quickstart_names_say_loss_lambda_beta_and_seed() -> None:
    sweep = load_sweep(REPO / "search_spaces" / "quickstart.yaml")
    namer = run_namer(sweep)
    names = [namer("e70464f7", config) for config in _tune_configs(sweep)]
    seeds = sweep.search.seeds or [0]
    assert names == [f"{loss} β={beta} s{seed}" for loss in ("none λ=0", "box_blur λ=0.5", "box_blur λ=0.9")
                     for beta in ("0.01", "0.1") for seed in seeds]


def test_the_callback_sync_resume_and_a_pickled_callback_name_a_trial_alike() -> None:
    sweep = load_sweep(REPO / "search_spaces" / "claims_cpu.yaml")
    namer = run_namer(sweep)
    reread = run_namer(sweep_from_dict(sweep.to_dict()))  # what resume and sync read: sweep.yaml
    unpickled = pickle.loads(pickle.dumps(namer))  # Tune pickles the callback for Tuner.restore
    names = []
    for config in _tune_configs(sweep):
        name = namer("t1", config)
        assert name == reread("t1", config) == unpickled("t1", config) == namer("t1", flat_trial_params(config))
        names.append(name)
    assert len(set(names)) == len(names) == 36
    # GECO cells say their rate target; fixed-beta cells have none to say.
    assert "none λ=0 β=0.03 R*=15 s1" in names and "none λ=0 β=0.01 s0" in names


def test_a_block_valued_grid_axis_is_named_and_reaches_the_trials() -> None:
    # The paper's grid gives `data` whole blocks: data.dataset varies (and data.root with it).
    sweep = load_sweep(REPO / "search_spaces" / "paper_rate_vs_lambda.yaml")
    expanded = expand_sweep(sweep)
    assert {"data.dataset", "data.root"} <= set(expanded.varying_keys)
    tiny = next(c for c in expanded.cells if c.flat["data.dataset"] == "tiny_imagenet")
    assert cell_params(tiny, expanded.varying_keys)["data.dataset"] == "tiny_imagenet"  # not the first cell's
    namer = run_namer(sweep, expanded)
    names = {namer("x", c.flat) for c in expanded.cells}
    assert len(names) == len(expanded.cells) == 260
    assert "lpips λ=0.5 tiny_imagenet autoencoder_kl β=0.0312 s0" in names
    assert not any("root" in n for n in names)  # told by the dataset already


def test_floats_keep_the_digits_that_tell_them_apart_and_twins_get_the_trial_id() -> None:
    sweep = sweep_from_dict(tiny_sweep("digits", search={"grid": {"train.lr": [1.0001e-3, 1.0002e-3]}}))
    namer = run_namer(sweep)
    assert [namer("a", c) for c in _tune_configs(sweep)] == ["lr=0.0010001 s0", "lr=0.0010002 s0"]
    twins = sweep_from_dict(tiny_sweep("twins", search={"cells": [{"train.lr": 1e-3}, {"train.lr": 1e-3},
                                                                    {"train.lr": 2e-3}]}))
    namer = run_namer(twins)
    expanded = expand_sweep(twins)
    assert [namer(f"id{c.index}", c.flat) for c in expanded.cells] == ["lr=0.001 s0 #id0", "lr=0.001 s0 #id1", "lr=0.002 s0"]


def test_sampled_trials_carry_their_trial_id() -> None:
    sweep = sweep_from_dict(tiny_sweep("draws", search={
        "mode": "random", "num_samples": 3, "distributions": {"train.lr": {"choice": [1e-3, 2e-3]}}}))
    namer = run_namer(sweep)
    assert namer("e70464f7", {"train.lr": 1e-3, "train.seed": 0}) == "lr=0.001 s0 #e70464f7"


def test_a_matched_rate_probe_says_its_target_from_the_tune_config_or_from_params_json(tmp_path: Path) -> None:
    sweep = sweep_from_dict(tiny_sweep("mr", search={
        "mode": "matched_rate", "cells": [{"loss.neural": "none", "loss.lambda_neural": 0.0},
                                          {"loss.neural": "box_blur", "loss.lambda_neural": 0.5}],
        "matched_rate": {"targets": [5.0, 10.0]}}))
    config = {"loss.neural": "box_blur", "loss.lambda_neural": 0.5, "objective.beta": 0.123456, "train.seed": 0,
              META_KEY: {"cell": "x", "cell_params": {}, "target": 10.0, "strategy": "bisection"}}
    from_callback = run_namer(sweep)("ab12cd34", config)
    assert from_callback == "box_blur λ=0.5 R*=10 β=0.123 s0 #ab12cd34"
    # sync has the flat params only (no metadata): the namer reads the trial's params.json.
    (tmp_path / "ab12cd34").mkdir()
    (tmp_path / "ab12cd34" / "params.json").write_text(json.dumps(config))
    flat = {k: v for k, v in config.items() if k != META_KEY}
    assert run_namer(sweep, sweep_dir=str(tmp_path))("ab12cd34", flat) == from_callback


def test_a_config_the_namer_cannot_read_is_named_by_its_trial_id() -> None:
    namer = run_namer(load_sweep(REPO / "search_spaces" / "quickstart.yaml"))
    assert namer("e70464f7", None) == "e70464f7"  # type: ignore[arg-type]
