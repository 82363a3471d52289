"""Configuration: defaults, overrides and one-line errors that name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raysweep.config import TrialConfig, load_trial_config, parse_override, trial_config_from_dict
from raysweep.errors import RaysweepError


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_quickstart_trial_block_loads() -> None:
    cfg = load_trial_config("search_spaces/quickstart.yaml")
    assert cfg.model.arch == "vector_vae" and cfg.data.image_size == 32
    assert cfg.train.max_steps and cfg.train.max_steps > 0


def test_overrides_parse_yaml_types(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"max_steps": 5}})
    cfg = load_trial_config(path, ["loss.neural=box_blur", "loss.lambda_neural=0.5", "data.hflip=false",
                                   "objective.geco.target_rate=12"])
    assert cfg.loss.neural == "box_blur" and cfg.loss.lambda_neural == 0.5
    assert cfg.data.hflip is False and cfg.objective.geco_enabled and cfg.objective.geco.target_rate == 12.0


def test_sweep_file_prefix_in_messages(tmp_path: Path) -> None:
    path = write(tmp_path, {"trial": {"loss": {"lambda_neural": 1.5, "neural": "lpips"}}})
    with pytest.raises(RaysweepError, match=r"trial\.loss\.lambda_neural"):
        load_trial_config(path)


@pytest.mark.parametrize(
    ("tree", "key"),
    [
        ({"loss": {"lamda_neural": 0.5}}, "loss.lamda_neural: unknown key; allowed here: "),
        ({"loss": {"neural": "lpips", "lambda_neural": 1.5}}, "loss.lambda_neural"),
        ({"objective": {"beta": 0}}, "objective.beta"),
        ({"data": {"dataset": "celeba"}}, "data.root is required"),
        ({"model": {"arch": "resnet"}}, "model.arch"),
        ({"train": {"batch_size": "many"}}, "train.batch_size"),
        ({"objective": {"geco": {"target_rate": -1}}}, "objective.geco.target_rate"),
        ({"frobnicate": 1}, "frobnicate: unknown key; allowed here: data, loss, model, objective, train"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, tree: dict, key: str) -> None:
    tree.setdefault("train", {}).setdefault("max_steps", 5)
    with pytest.raises(RaysweepError) as info:
        load_trial_config(write(tmp_path, tree))
    message = str(info.value)
    assert key in message
    assert "\n" not in message


def test_lambda_without_neural_term_is_rejected() -> None:
    with pytest.raises(RaysweepError, match="loss.lambda_neural > 0 needs a neural term"):
        trial_config_from_dict({"loss": {"lambda_neural": 0.3}, "train": {"max_steps": 1}})


def test_round_trip_through_dict() -> None:
    cfg = trial_config_from_dict({"loss": {"neural": "box_blur", "lambda_neural": 0.25}, "train": {"max_steps": 3}})
    again = TrialConfig.model_validate(cfg.to_dict())
    assert again == cfg
    assert cfg.flat()["loss.lambda_neural"] == 0.25


def test_override_needs_equals() -> None:
    with pytest.raises(RaysweepError, match="expected dotted.key=value"):
        parse_override("loss.neural")


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(RaysweepError, match="bad.yaml"):
        load_trial_config(path)


def test_scalar_sigma_under_the_balancer_is_refused(tmp_path: Path) -> None:
    """A learned scalar sigma only scales the x_hat gradient, which the balancer renormalises: the
    combination would silently train as plain SSE, so it is refused naming both keys."""
    path = write(tmp_path, {"train": {"max_steps": 5}})
    with pytest.raises(RaysweepError) as err:
        load_trial_config(path, ["loss.pixel=learned_sigma_scalar"])
    message = str(err.value)
    assert "loss.pixel" in message and "loss.balancer" in message and "\n" not in message
    assert load_trial_config(path, ["loss.pixel=learned_sigma_scalar", "loss.balancer=false"]).loss.balancer is False
    assert load_trial_config(path, ["loss.pixel=learned_sigma_pixel"]).loss.balancer is True
