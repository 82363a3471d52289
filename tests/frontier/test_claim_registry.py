"""The claim registry: each claim's spec is declared once (raysweep.names) and its computation
registered beside its code (raysweep.frontier.claims.register_claim); the sweep schema's margins,
``--margin``, the table's labels and ``compute_claims`` all read it, so a new claim is its spec plus
one registration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_truth import slope_runs

from raysweep.cli import main
from raysweep.frontier import claims as C
from raysweep.frontier.claims_table import CLAIM_LABELS, format_claims
from raysweep.names import CLAIM_SPECS, ClaimSpec, register_claim_spec
from raysweep.tune.sweep_config import ClaimMargins


def test_the_schema_the_cli_and_the_tables_take_the_registered_claims(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(ClaimMargins.model_fields) == list(CLAIM_SPECS) == list(C.CLAIMS) == list(CLAIM_LABELS)
    assert C.DEFAULT_MARGINS == {name: spec.default_margin for name, spec in CLAIM_SPECS.items()}
    assert main(["claims", "--experiment", "x", "--tracking-uri", "http://127.0.0.1:1", "--margin", "rate=1"]) == 2
    err = capsys.readouterr().err
    assert "CLAIM one of " + ", ".join(CLAIM_SPECS) in err
    with pytest.raises(ValueError, match="has no spec"):
        C.register_claim("not_a_claim", lambda *args: [])
    with pytest.raises(ValueError, match="registered twice"):
        register_claim_spec(CLAIM_SPECS["rate_vs_lambda"])


def test_a_new_claim_is_its_spec_plus_one_registration() -> None:
    """A distortion claim (the slope of per-pixel MSE against lambda at fixed beta) added at run time
    gets rows, verdicts and a label through the same code as the paper's claims."""
    spec = ClaimSpec("mse_vs_lambda", "MSE vs lambda", "MSE per unit lambda", 0.001, "falls", "rises", "beta")

    def mse_vs_lambda(members: pd.DataFrame, base: dict, settings: C.ClaimSettings, tolerance) -> list[C.ClaimRow]:
        fixed = members[members["status"] == "finished"]
        return [C._slope_row(base, at, "mse", settings, claim=spec.name, beta=float(beta))
                for beta, at in fixed.groupby("beta", sort=True)]

    register_claim_spec(spec)
    try:
        C.register_claim(spec.name, mse_vs_lambda)
        frame = slope_runs(np.random.default_rng(1), 1, 4, slope=-2.0)
        frame["mse"] = 0.05 - 0.01 * frame["lambda_neural"] + np.random.default_rng(2).normal(0, 1e-4, len(frame))
        rows = C.compute_claims(frame, settings=C.ClaimSettings(margins={**C.DEFAULT_MARGINS, spec.name: 0.001}))
        [row] = [r for r in rows if r.claim == spec.name]
        assert row.verdict == C.FALLS and row.ci_high < 0 and row.margin == 0.001
        assert "MSE vs lambda" in format_claims(rows)
    finally:
        C.CLAIM_KINDS.pop(spec.name, None)
        CLAIM_SPECS.pop(spec.name, None)
