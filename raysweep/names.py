"""The names every layer shares: the metrics the training loop reports (with units), the files a
trial writes, and the claims the frontier tests (with their units and default margins). One list
each, imported by the loop, the sweep schema, tracking, the CLI and the report, so a rename cannot
leave a layer behind."""

from __future__ import annotations

import re
from dataclasses import dataclass


# ---------------------------------------------------------------------- the metric registry
@dataclass(frozen=True)
class Metric:
    """One metric the training loop reports: its name, unit and meaning (the one list every layer
    imports: the sweep schema validates scheduler metrics against it, the tracking and report
    layers name columns from it)."""

    name: str
    unit: str
    meaning: str


RATE = "rate"
RATE_BITS = "rate_bits"
DISTORTION_SSE = "distortion_sse"
MSE = "mse"
PSNR = "psnr"
ANISOTROPY = "anisotropy"
AGGREGATED_ANISOTROPY = "aggregated_anisotropy"
AGGREGATED_CONDITION = "aggregated_condition"
AGGREGATED_SAMPLES = "aggregated_samples"
CHANNEL_ANISOTROPY = "channel_anisotropy"
CHANNEL_CONDITION = "channel_condition"
ACTIVE_UNITS = "active_units"
MIG = "mig"
MIG_SAMPLES = "mig_samples"
BETA = "beta"
STEP = "step"

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric(RATE, "nats per image", "mean KL(q(z|x) || N(0, I)) over the validation set"),
    Metric(RATE_BITS, "bits per image", "the rate in bits"),
    Metric(DISTORTION_SSE, "squared error per image", "sum of squared pixel errors on [-1, 1] images"),
    Metric(MSE, "squared error per pixel", "distortion_sse / (C H W)"),
    Metric(PSNR, "dB", "10 log10(4 / mse) for images in [-1, 1]"),
    Metric(ANISOTROPY, "log-variance^2", "mean per-sample posterior anisotropy Var_j(logvar_j(x)) (paper eq. 7)"),
    Metric(AGGREGATED_ANISOTROPY, "log-variance^2",
           "sampling-corrected variance of the log eigenvalues of Cov_x(mu(x)); withheld below 4 means per coordinate"),
    Metric(AGGREGATED_CONDITION, "ratio", "max / min eigenvalue of Cov_x(mu(x))"),
    Metric(AGGREGATED_SAMPLES, "images", "posterior means behind the aggregated statistics"),
    Metric(CHANNEL_ANISOTROPY, "log-variance^2", "the same on the C x C covariance of a spatial latent's mu"),
    Metric(CHANNEL_CONDITION, "ratio", "max / min eigenvalue of the channel covariance"),
    Metric(ACTIVE_UNITS, "coordinates", "latent coordinates with Var_x(mu_j(x)) > 0.01 (Burda et al. 2016)"),
    Metric(MIG, "fraction in [0, 1]", "mutual information gap against ground-truth factors, 20 bins"),
    Metric(MIG_SAMPLES, "images", "images behind the MIG estimate"),
    Metric(BETA, "per image", "the KL weight used at the last step (GECO's multiplier when on)"),
    Metric("lr", "", "the generator's learning rate"),
    Metric(STEP, "optimiser steps", "training step of the validation"),
    Metric("epoch", "passes", "training epochs at the validation"),
    Metric("sigma", "pixel intensity", "learned scalar observation sigma (L-VAE)"),
    Metric("rate_ema", "nats per image", "GECO's EMA of the per-step rate"),
    Metric("rate_error", "log ratio", "|log(R / R*)| of a matched-rate trial"),
    Metric("progress", "fraction", "share of a trial's steps done (matched-rate searchers)"),
)}

# Families of names with a variable part: one reconstruction term's validation value
# (distortion_<term>), a training mean (train_<value>), the balancer's per-term values and the
# PatchGAN's on/off flag.
METRIC_PATTERN = re.compile(r"^((distortion|train)_[a-z0-9_]+|balancer/[a-z0-9_]+/[a-z_]+|patchgan/active)$")


def is_known_metric(name: str) -> bool:
    """Whether the training loop reports a metric of this name."""
    return name in METRICS or METRIC_PATTERN.match(name) is not None


#: Key of a validation's metrics (and of final.json) holding {metric: reason} for the metrics left
#: out as unsound on that data.
WITHHELD = "withheld"

# ------------------------------------------------------------------------- a trial's files
METRICS_LOG = "metrics.jsonl"  # one JSON line per validation
FINAL_SUMMARY = "final.json"  # the run's summary (withheld metrics as null)
TRIAL_CONFIG = "config.yaml"  # the validated trial configuration
VARIANCE_PROFILE_CSV = "variance_profile.csv"
VARIANCE_PROFILE_PNG = "variance_profile.png"
RECONSTRUCTIONS = "reconstructions.png"
#: The folder of a validation's reconstruction grids (``train.log_images``), one PNG per step, and the
#: key they are logged under as MLflow images (``mlflow.log_image(key=..., step=...)``).
RECONSTRUCTIONS_DIR = "reconstructions"
RECONSTRUCTIONS_KEY = "reconstructions"


def reconstructions_file(step: int) -> str:
    """The grid of validation `step`, relative to the trial's output folder."""
    return f"{RECONSTRUCTIONS_DIR}/step_{int(step):08d}.png"


#: The metrics a trial's final summary always holds (NaN when never measured, null when withheld),
#: in the order the CLI's train summary prints them.
FINAL_KEYS = (RATE, DISTORTION_SSE, MSE, PSNR, ANISOTROPY, AGGREGATED_ANISOTROPY, ACTIVE_UNITS, BETA)
#: What a trial's MLflow child run carries as artifacts.
TRIAL_ARTIFACTS = (FINAL_SUMMARY, TRIAL_CONFIG, METRICS_LOG, RECONSTRUCTIONS, VARIANCE_PROFILE_CSV,
                   VARIANCE_PROFILE_PNG)
#: The operating-points table of a matched-rate sweep: files in the sweep folder, and where they
#: sit on the sweep's MLflow parent run.
OPERATING_POINTS_CSV = "operating_points.csv"
OPERATING_POINTS_JSON = "operating_points.json"
OPERATING_POINTS_ARTIFACT_DIR = "operating_points"

# --------------------------------------------------------------------- what a console shows
#: The headline metrics of a trial: the sweep's live status table, its one line per ended trial
#: and the end-of-sweep table show these (in this order).
KEY_METRICS = (RATE, DISTORTION_SSE, PSNR, ANISOTROPY)


# ----------------------------------------------------------------------- the claim registry
@dataclass(frozen=True)
class ClaimSpec:
    """What every layer needs to know of one claim: the sweep schema validates its margin
    (``search.claims.margin.<name>``), the CLI takes ``--margin <name>=M``, and the frontier names
    its rows; how it is computed is registered beside its code
    (:func:`raysweep.frontier.claims.register_claim`).

    Attributes:
        name: the claim's key. label: how a table names it. unit: the unit of its estimate (and margin).
        default_margin: the equivalence margin when the sweep sets none (``negligible`` inside ±it).
        down, up: the verdicts for an interval below / above 0 (``falls``/``rises``, ``shifts down``/``shifts up``).
        at: the row attribute that says where the row is taken: ``beta``, ``lambda_neural`` or ``target_rate``.
    """

    name: str
    label: str
    unit: str
    default_margin: float
    down: str
    up: str
    at: str


CLAIM_SPECS: dict[str, ClaimSpec] = {}


def register_claim_spec(spec: ClaimSpec) -> ClaimSpec:
    """Add a claim to :data:`CLAIM_SPECS` (a name registered twice is refused)."""
    if spec.name in CLAIM_SPECS:
        raise ValueError(f"claim {spec.name!r} is registered twice")
    CLAIM_SPECS[spec.name] = spec
    return spec


RATE_VS_LAMBDA_CLAIM = register_claim_spec(ClaimSpec(
    "rate_vs_lambda", "rate vs lambda", "nats per unit lambda", 1.0, "falls", "rises", "beta"))
FRONTIER_SHIFT_CLAIM = register_claim_spec(ClaimSpec(
    "frontier_shift", "frontier shift", "nats", 1.0, "shifts down", "shifts up", "lambda_neural"))
ANISOTROPY_VS_LAMBDA_CLAIM = register_claim_spec(ClaimSpec(
    "anisotropy_vs_lambda", "anisotropy vs lambda", "anisotropy per unit lambda", 0.1, "falls", "rises",
    "target_rate"))
