"""One key, two spellings (:mod:`raysweep.tune.keys`): nested and dotted both read, never both kept
silently; what the CLI prints for the refusals is in ``tests/test_bad_input.py``."""

from __future__ import annotations

import pytest
from tune_helpers import tiny_sweep

from raysweep.errors import RaysweepError
from raysweep.tune.keys import flatten_once
from raysweep.tune.load import apply_sweep_overrides, sweep_from_dict
from raysweep.tune.space import expand_sweep


def test_a_key_given_twice_is_refused_naming_both_spellings_unless_both_hold() -> None:
    with pytest.raises(RaysweepError, match=r"^g: objective.beta is given twice, as objective: \{beta\} \(\[0.5\]\) "
                                            r"and as objective.beta \(\[0.01\]\)"):
        flatten_once({"objective": {"beta": [0.5]}, "objective.beta": [0.01]}, "g")
    assert flatten_once({"objective": {"beta": [0.5]}, "objective.beta": [0.5]}, "g") == {"objective.beta": [0.5]}
    with pytest.raises(RaysweepError, match="objective.geco sets the block objective.geco and objective: "
                                            r"\{geco: \{target_rate\}\} sets objective.geco.target_rate"):
        flatten_once({"objective.geco": None, "objective": {"geco": {"target_rate": 5.0}}}, "g")


def test_cells_and_the_trial_block_read_either_spelling_and_a_cell_merges_into_the_trial() -> None:
    raw = tiny_sweep("spell", search={"cells": [{"loss": {"neural": "box_blur"}, "loss.lambda_neural": 0.5}]})
    raw["trial"]["loss"]["box_blur"] = {"radius": 3}
    raw["trial"]["data.hflip"] = False  # dotted inside the trial block, beside its nested `data`
    cell = expand_sweep(sweep_from_dict(raw)).cells[0]
    assert cell.flat["loss.neural"] == "box_blur" and cell.flat["loss.lambda_neural"] == 0.5
    assert cell.flat["loss.box_blur.radius"] == 3  # the nested cell did not replace the trial's loss block
    assert cell.flat["data.hflip"] is False and cell.flat["data.image_size"] == 16


def test_set_replaces_a_grid_axis_however_the_file_spells_it_and_refuses_two_different_sets() -> None:
    raw = tiny_sweep("spell", search={"grid": {"objective": {"beta": [0.5, 1.0]}}})
    apply_sweep_overrides(raw, ["search.grid.objective.beta=[0.25]"])
    assert [c.flat["objective.beta"] for c in expand_sweep(sweep_from_dict(raw)).cells] == [0.25]
    raw = tiny_sweep("spell")
    apply_sweep_overrides(raw, ["objective.beta=0.3", "trial.objective.beta=0.3"])  # the same value: both hold
    with pytest.raises(RaysweepError, match=r"--set objective.beta=0.3 and --set trial.objective.beta=0.4 both set "
                                            "trial.objective.beta"):
        apply_sweep_overrides(tiny_sweep("spell"), ["objective.beta=0.3", "trial.objective.beta=0.4"])
