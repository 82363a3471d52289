"""``raysweep extend SWEEP --until-decided``: rounds of new seeds through the extend path until every
claim is decided or the seed budget is spent, with one MLflow run per trial and the ledger of looks
(levels spent, the bound) written into the sweep, so ``raysweep claims`` reads it at the same level
afterwards and a second sequence spends only what is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tune_helpers import tiny_sweep, write_sweep

from raysweep.cli import main
from raysweep.frontier import claims as C
from raysweep.frontier import statistics as S
from raysweep.frontier.sequential import extend_until_decided
from raysweep.tracking.store import (
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    TRIAL_ID_TAG,
    make_client,
    search_all,
    tracking_uri_for,
)

pytestmark = pytest.mark.slow

CELLS = [{"loss.neural": "none", "loss.lambda_neural": 0.0}, {"loss.neural": "box_blur", "loss.lambda_neural": 0.5}]


def test_until_decided_adds_seeds_in_rounds_and_logs_each_trial_once(ray_address: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    raw = tiny_sweep("rounds", search={"mode": "grid", "cells": CELLS, "seeds": [0]})
    path = write_sweep(tmp_path, raw)
    assert main(["sweep", str(path), "--storage", str(storage), "--address", ray_address]) == 0
    sweep_dir = storage / "rounds"
    capsys.readouterr()
    # A margin no estimate can sit inside, so only a direction decides; 1 seed per round up to 3.
    result = extend_until_decided(str(sweep_dir), max_seeds=3, seeds_per_round=1,
                                  margins={C.RATE_VS_LAMBDA: 1e-9}, address=ray_address)
    printed = capsys.readouterr().out
    assert result.looks_planned == 3 and "3 looks planned, each at alpha 0.0167" in printed
    assert [look.seeds for look in result.looks][:2] == [[0], [0, 1]]
    first = [r for r in result.looks[0].rows if r.claim == C.RATE_VS_LAMBDA]
    assert first[0].verdict == C.INSUFFICIENT and "add seeds" in first[0].reason  # one seed: no replicate
    assert len(result.looks) == 3, [(look.seeds, [r.verdict for r in look.rows]) for look in result.looks]
    assert result.decided or result.stopped_by_budget
    last = next(r for r in result.rows if r.claim == C.RATE_VS_LAMBDA)
    assert last.looks == 3 and last.level == pytest.approx(1 - 0.05 / 3) and last.margin == 1e-9
    assert last.n_seeds == 3 and last.method == S.TWO_STAGE_METHOD
    assert "look 2 of 3 at 2 seeds" in printed
    # the shift of one beta is withheld: neither decided nor open, and the look line says so
    rows, still_open = result.looks[0].rows, result.looks[0].open
    assert any(r.verdict == C.WITHHELD for r in rows) and not any(r.verdict in C.DECIDED for r in rows)
    assert (f"look 1 of 3 at 1 seed: 0 of {len(rows)} claim rows decided, {len(still_open)} open, "
            f"{len(rows) - len(still_open)} that more seeds cannot decide") in printed

    grown = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    assert grown["search"]["seeds"] == [0, 1, 2] and grown["search"]["claims"]["looks"] == 3
    ledger = grown["search"]["claims"]
    assert ledger["alpha_look"] == pytest.approx(0.05 / 3) and ledger["alpha_spent"] == pytest.approx(0.05)
    assert ledger["alpha_bound"] == pytest.approx(0.05)
    assert grown["search"]["claims"]["margin"]["rate_vs_lambda"] == 1e-9
    client = make_client(tracking_uri_for(storage, None))
    experiment = client.get_experiment_by_name("rounds").experiment_id
    [parent] = search_all(client, [experiment], f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}'")
    children = search_all(client, [experiment], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    trial_ids = [c.data.tags[TRIAL_ID_TAG] for c in children]
    assert len(children) == 6 and len(set(trial_ids)) == 6  # 2 cells x 3 seeds, each trial once

    # `raysweep claims` afterwards reads the sweep's looks and margin from its sweep.yaml
    assert main(["claims", "--experiment", "rounds", "--storage", str(storage), "--json"]) == 0
    again = next(r for r in json.loads(capsys.readouterr().out) if r["claim"] == C.RATE_VS_LAMBDA)
    assert again["looks"] == 3 and again["margin"] == 1e-9 and again["verdict"] == last.verdict
    assert again["level"] == pytest.approx(1 - 0.05 / 3)

    # the budget is spent: a second sequence is refused in one line, or carried on with --extra-alpha and says so
    assert main(["extend", str(sweep_dir), "--until-decided", "--max-seeds", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "spent the sweep's false-verdict budget" in err and "--extra-alpha" in err and "\n" not in err
    assert main(["extend", str(sweep_dir), "--until-decided", "--max-seeds", "3", "--extra-alpha", "0.05",
                 "--margin", "rate_vs_lambda=1e-9"]) in (0, 1)
    printed = capsys.readouterr().out
    assert "1 look planned, each at alpha 0.05; false verdicts over every look of this sweep at most 0.1" in printed
    ledger = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())["search"]["claims"]
    assert ledger["alpha_spent"] == pytest.approx(0.10) and ledger["alpha_bound"] == pytest.approx(0.10)
    assert ledger["looks"] == 4
    assert main(["claims", "--experiment", "rounds", "--storage", str(storage)]) == 0
    assert "the false-verdict rate over every look at most 10%" in capsys.readouterr().out


def test_until_decided_refusals_are_one_line(ray_address: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    path = write_sweep(tmp_path, tiny_sweep("refused", search={"mode": "grid", "cells": CELLS, "seeds": [0, 1]}))
    assert main(["sweep", str(path), "--storage", str(storage), "--address", ray_address]) == 0
    capsys.readouterr()
    sweep_dir = str(storage / "refused")
    for args, message in (
        (["--until-decided", "--max-seeds", "1"], "--max-seeds 1: the sweep already has 2 seeds"),
        (["--until-decided", "--set", "search.seeds=[0,1,2]"], "--until-decided grows search.seeds itself"),
        (["--max-seeds", "4"], "go with --until-decided"),
        (["--until-decided", "--margin", "rate=1"], "--margin rate=1: give CLAIM=M"),
        (["--until-decided", "--margin", "rate_vs_lambda=-1"], "must be a positive number"),
        (["--until-decided", "--extra-alpha", "0.05"], "still has 0.05 of its false-verdict budget"),
        (["--extra-alpha", "0.05"], "go with --until-decided"),
    ):
        assert main(["extend", sweep_dir, *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("raysweep: error: ") and message in err and "\n" not in err, err
