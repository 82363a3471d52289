"""The `raysweep` command: train VAEs, run, grow and track sweeps of them on Ray Tune, report their frontiers.

Commands: train, toy, validate, sweep, resume, extend, sync, prepare, weights, report, claims, ui, export.

Errors a user can cause are :class:`RaysweepError`: printed as one line without a traceback, exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from raysweep.errors import RaysweepError
from raysweep.names import CLAIM_SPECS, FINAL_KEYS, FINAL_SUMMARY, METRICS_LOG, TRIAL_CONFIG

if TYPE_CHECKING:
    from raysweep.tune.summary import SweepOutcome

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 1


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value by its dotted key, e.g. --set loss.lambda_neural=0.5 (repeatable)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with the product's error format: one line naming the argument and where the help
    is, exit status 2 (argparse's own prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("raysweep").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USER_ERROR, f"raysweep: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raysweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one VAE from a trial YAML (or a sweep YAML's trial block), no Ray")
    p.add_argument("config", type=Path, help="trial or sweep YAML")
    p.add_argument("--out", type=Path, required=True, help=f"output directory ({METRICS_LOG}, {FINAL_SUMMARY}, checkpoints/)")
    _add_set(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--workers", type=int, default=1, help="local DDP processes (gloo on CPU, NCCL on GPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")

    p = sub.add_parser("toy", help="closed-form linear-Gaussian model at a matched rate (paper table 3, figure 7)")
    p.add_argument("--dim", type=int, default=None, help="latent dimension d")
    p.add_argument("--ramp", type=float, default=None, help="exponent of the ramped metric M = diag(exp(ramp*i/(d-1))); default ln 16 (weights 1 to 16, paper table 3)")
    p.add_argument("--target-rate", type=float, default=None, help="matched variance-part rate V, nats")
    p.add_argument("--out", type=Path, default=None, help="write table.json, table.md and figure7.png here")
    p.add_argument("--json", action="store_true", help="print the table as JSON")

    _add_sweep_commands(sub)

    p = sub.add_parser("prepare", help="build the prepared image caches (data.cache_dir) a sweep's folder datasets "
                       "need, ahead of the job, so no trial decodes the images (no Ray)")
    p.add_argument("sweep", type=Path, help="sweep YAML")
    _add_set(p)
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding images (default: this machine's CPUs, at most 8; 0: this process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")

    p = sub.add_parser("weights", help="list the pretrained files each loss needs and whether they are present")
    p.add_argument("--weights-dir", type=Path, default=None, help="folder to look in first (as loss.weights_dir)")
    p.add_argument("--download", action="store_true",
                   help="download the missing files into --weights-dir (needs internet)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="frontier report (rate-distortion, anisotropy) of an MLflow experiment as HTML")
    p.add_argument("--experiment", required=True, help="MLflow experiment name (default of a sweep: its name)")
    _add_store(p)
    p.add_argument("--out", type=Path, required=True, help="folder for index.html, report.css and plots/")
    p.add_argument("--ui-url", default=None, help="MLflow UI base URL for run links (default: the server, or "
                   "http://127.0.0.1:5000 where `raysweep ui` listens)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    p.add_argument("--in-progress", type=int, default=None, metavar="TRIALS",
                   help="the page of a sweep still running, of TRIALS trials in all (0: not known): a banner with "
                   "how many have finished, and the page reloads itself every minute (what a running sweep writes)")
    _add_tolerance(p)
    _add_margin(p)

    p = sub.add_parser("claims", help="the paper's claims as statistics over an experiment's runs, one row per "
                       "condition: slopes per seed and paired shifts with intervals over seeds (they hold for the "
                       "method), verdicts that decide (falls / rises / negligible / undecided with the seeds to add), "
                       "and whether each verdict had settled by the end of training")
    p.add_argument("--experiment", required=True, help="MLflow experiment name (default of a sweep: its name)")
    _add_store(p)
    _add_tolerance(p)
    _add_margin(p)
    p.add_argument("--json", action="store_true", help="print the claims as a JSON list (null for missing numbers)")

    p = sub.add_parser("export", help="a run's trained model as DIR/model.safetensors, with its config.yaml and "
                       "final.json (the Python form: raysweep.load_run)")
    p.add_argument("run", help="an MLflow run id, a run name (see --experiment) or a trial folder: <sweep dir>/<trial "
                   "id> (a path or s3:// URI) or a `raysweep train --out` folder")
    p.add_argument("--out", type=Path, required=True, help="a new folder for model.safetensors, config.yaml, final.json")
    p.add_argument("--experiment", default=None, help="the MLflow experiment a run name is looked up in (default: all)")
    _add_store(p)

    p = sub.add_parser("ui", help="MLflow UI on a sweep's tracking store, bound to 127.0.0.1 unless --host says otherwise")
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; reach it from a laptop "
                   "through `ssh -L`; another address serves the UI, which has no authentication, to the network)")
    _add_store(p)
    return parser


def _add_store(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--storage", type=Path, default=None, help="the sweep's storage folder (holds mlflow.db)")
    group.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (sqlite:///... or http://host:port)")


def _add_tolerance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tolerance", type=float, default=None, metavar="T",
                        help="relative rate tolerance |rate / R* - 1| <= T of the matched-rate claim (default: the "
                        "sweep's search.matched_rate.tolerance, else 0.05)")


CLAIM_NAMES = tuple(CLAIM_SPECS)  # the registered claims (raysweep.names), as --margin takes them


def _add_margin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--margin", action="append", default=[], metavar="CLAIM=M",
                        help="equivalence margin of a claim in its unit (repeatable), e.g. rate_vs_lambda=0.5; a claim "
                        "is negligible when its 90%% interval lies inside ±M (default: the sweep's "
                        "search.claims.margin, else "
                        + ", ".join(f"{n}={c.default_margin:g}" for n, c in CLAIM_SPECS.items()) + ")")


def _parse_margins(items: list[str]) -> dict[str, float]:
    margins: dict[str, float] = {}
    for item in items:
        claim, sep, text = item.partition("=")
        if not sep or claim not in CLAIM_NAMES:
            raise RaysweepError(f"--margin {item}: give CLAIM=M with CLAIM one of {', '.join(CLAIM_NAMES)}, "
                                "e.g. --margin rate_vs_lambda=0.5")
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise RaysweepError(f"--margin {item}: the margin must be a positive number in the claim's unit, "
                                f"e.g. --margin {claim}=0.5")
        margins[claim] = value
    return margins


def _check_tolerance(tolerance: float | None) -> float | None:
    if tolerance is not None and not 0.0 < tolerance < 1.0:
        raise RaysweepError(f"--tolerance {tolerance:g}: give a relative tolerance between 0 and 1, e.g. 0.05")
    return tolerance


def _add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    """`validate`, `sweep` and `resume` (implemented in raysweep/tune/)."""
    p = sub.add_parser("validate", help="check a sweep YAML completely and print its trials and resource plan (no Ray)")
    p.add_argument("sweep", type=Path, help="sweep YAML")
    _add_set(p)
    p.add_argument("--name", default=None, help="override the sweep's name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--cluster", type=Path, default=None, metavar="CLUSTER.yaml",
                       help="plan against the node types of a `ray up` cluster file (default: this machine)")
    where.add_argument("--address", default=None, help="plan against a running Ray cluster (connects, starts nothing)")

    p = sub.add_parser("sweep", help="run a sweep on Ray Tune (local Ray, or --address auto under `ray job submit`)")
    p.add_argument("sweep", type=Path, help="sweep YAML")
    _add_set(p)
    p.add_argument("--name", default=None, help="sweep name (default: the file's `name`); the directory is STORAGE/NAME")
    p.add_argument("--storage", default=None,
                   help="where sweep directories go: a path (default ./runs) or a URI (s3://, gs://) shared by all nodes")
    p.add_argument("--address", default=None, help="Ray cluster to join (`auto`: the one this runs on); default: start local Ray")
    p.add_argument("--verbose", action="store_true",
                   help="print Tune's status table too (every 30 s), besides the trial lines and the progress line")

    p = sub.add_parser("resume", help="continue an interrupted sweep from its directory (finished trials are kept)")
    p.add_argument("sweep_dir", help="the sweep directory, STORAGE/NAME (e.g. runs/quickstart)")
    p.add_argument("--address", default=None, help="Ray cluster to join (`auto`: the one this runs on); default: start local Ray")
    p.add_argument("--verbose", action="store_true",
                   help="print Tune's status table too (every 30 s), besides the trial lines and the progress line")

    p = sub.add_parser("extend", help="grow a finished sweep (more seeds, grid values or cells): runs only the new "
                       "trials, in the same directory, MLflow parent run and report")
    p.add_argument("sweep_dir", help="the sweep directory, STORAGE/NAME (e.g. runs/quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a grown search.seeds, search.grid.KEY or search.cells, e.g. --set search.seeds=[0,1,2,3]")
    p.add_argument("--address", default=None, help="Ray cluster to join (`auto`: the one this runs on); default: start local Ray")
    p.add_argument("--verbose", action="store_true",
                   help="print Tune's status table too (every 30 s), besides the trial lines and the progress line")
    p.add_argument("--until-decided", action="store_true",
                   help="add seeds in rounds until every claim is decided (falls / rises / negligible, shifts down / up) "
                   "or --max-seeds is reached; the false-verdict rate is held at 5%% over every look of the sweep "
                   "(search.claims.alpha; a second sequence spends what the first left)")
    p.add_argument("--max-seeds", type=int, default=None, metavar="N",
                   help="until-decided: the most seeds the sweep may reach (default: search.claims.max_seeds, else "
                   "twice its seeds, at least 6)")
    p.add_argument("--seeds-per-round", type=int, default=None, metavar="K",
                   help="until-decided: seeds added per round (default: search.claims.seeds_per_round, 2)")
    p.add_argument("--extra-alpha", type=float, default=None, metavar="A",
                   help="until-decided on a sweep whose earlier sequences spent its false-verdict budget: spend A more; "
                   "every row then says the combined bound (e.g. 0.05 + A)")
    _add_margin(p)

    p = sub.add_parser("sync", help="backfill MLflow from a sweep's own files (after a tracking outage); only what "
                       "is missing is written, so a second sync changes nothing")
    p.add_argument("sweep_dir", help="the sweep directory, STORAGE/NAME (e.g. runs/quickstart)")
    p.add_argument("--tracking-uri", default=None, help="the store to write (default: the sweep's tracking.uri, "
                   "else STORAGE/mlflow.db)")


# ------------------------------------------------------------------------------------- train
def _check_out_dir(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, after refusing to clobber an existing run."""
    from raysweep.train.checkpoint import latest_checkpoint, latest_good_checkpoint

    latest = latest_checkpoint(out / "checkpoints")
    if resume:
        if latest is None:
            raise RaysweepError(f"--resume: {out}/checkpoints holds no checkpoint: run without --resume to start")
        good, damaged = latest_good_checkpoint(out / "checkpoints")
        if good is None:
            path, problem = damaged[0]
            raise RaysweepError(f"--resume: {path}: {problem}, and no older checkpoint is intact: start again "
                                "without --resume in a new --out")
        for path, problem in damaged:
            print(f"raysweep: skipping damaged checkpoint {path} ({problem}); resuming from {good.name}",
                  file=sys.stderr)
        return good
    if latest is not None or (out / FINAL_SUMMARY).exists():
        raise RaysweepError(
            f"--out {out} already holds a run: pass --resume to continue it, or choose another --out"
        )
    return None


def _check_same_config(cfg_dict: dict, out: Path) -> None:
    from raysweep.config import TrialConfig, flatten, read_yaml

    saved_file = out / TRIAL_CONFIG
    if not saved_file.is_file():
        return
    saved = flatten(read_yaml(saved_file))
    current = flatten(cfg_dict)
    # A key the run's config.yaml lacks was added to raysweep after the run started; at its default
    # it changes nothing the run did (e.g. data.cache, whose images are bit-identical either way).
    defaults = TrialConfig().flat()
    changed = sorted(
        k for k in set(saved) | set(current)
        if saved.get(k) != current.get(k) and not (k not in saved and k in defaults and current.get(k) == defaults[k])
    )
    if changed:
        raise RaysweepError(
            f"--resume: the config differs from the one {out} started with at {', '.join(changed)}: "
            f"resume with the same config (see its {TRIAL_CONFIG}) or start a new --out"
        )


def cmd_train(args: argparse.Namespace) -> int:
    from raysweep.config import load_trial_config

    cfg = load_trial_config(args.config, args.overrides)
    out: Path = args.out
    resume_from = _check_out_dir(out, args.resume)
    if resume_from is not None:
        _check_same_config(cfg.to_dict(), out)
    if args.workers < 1:
        raise RaysweepError(f"--workers {args.workers}: give at least 1")
    if cfg.train.batch_size % args.workers:
        raise RaysweepError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by --workers {args.workers}: "
            "the global batch is split evenly over workers"
        )
    progress = False if args.no_progress else None
    out.mkdir(parents=True, exist_ok=True)
    if args.workers == 1:
        from raysweep.train.loop import train

        final = train(cfg, out, resume_from=resume_from, progress=progress)
    else:
        from raysweep.train.launch import launch_local_ddp

        launch_local_ddp(cfg, out, args.workers, resume_from=resume_from, progress=progress)
        final = json.loads((out / FINAL_SUMMARY).read_text())
    summary = {k: final.get(k) for k in ("status", "step", *FINAL_KEYS)}
    print(json.dumps(summary))
    print(f"raysweep: {final['status']}; outputs in {out}", file=sys.stderr)
    if final["status"] == "diverged":
        print(f"raysweep: the loss became non-finite at step {final['step']}; the last good checkpoint is kept in "
              f"{out}/checkpoints", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


# --------------------------------------------------------------------------------------- toy
def cmd_toy(args: argparse.Namespace) -> int:
    from raysweep import toy

    kwargs = {k: v for k, v in (("dim", args.dim), ("ramp", args.ramp), ("target_rate", args.target_rate)) if v is not None}
    rows = toy.run_toy(out_dir=args.out, **kwargs)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        dim = args.dim if args.dim is not None else toy.DEFAULT_DIM
        ramp = args.ramp if args.ramp is not None else toy.DEFAULT_RAMP
        print(toy.table_markdown(rows, dim, ramp))
        if args.out is not None:
            print(f"wrote {args.out}/table.json, table.md, figure7.png", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------- weights
def cmd_weights(args: argparse.Namespace) -> int:
    from raysweep.losses.perceptual import download_weights, weights_report

    if args.download:
        if args.weights_dir is None:
            raise RaysweepError("--download needs --weights-dir: the folder to save the files in")
        try:
            download_weights(args.weights_dir)
        except (OSError, RuntimeError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RaysweepError(
                f"--download into {args.weights_dir} failed ({first}): copy the files listed by "
                "`raysweep weights` into that folder by hand"
            ) from None
    rows = weights_report(weights_dir=args.weights_dir)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        state = "present" if row.get("present") else "MISSING"
        print(f"{row.get('loss')}: {row.get('file')} [{state}]")
        for place in row.get("searched", []):
            print(f"    looks in {place}")
        if row.get("found"):
            print(f"    found at {row['found']}")
    return 0


# ----------------------------------------------------------------------------------- prepare
def cmd_prepare(args: argparse.Namespace) -> int:
    from raysweep.tune.prepare import prepare_sweep

    prepare_sweep(args.sweep, args.overrides, workers=args.workers, progress=False if args.no_progress else None)
    return 0


# ---------------------------------------------------------------------------- sweeps (Ray Tune)
def cmd_validate(args: argparse.Namespace) -> int:
    from raysweep.tune.check import validate_sweep

    print(validate_sweep(args.sweep, args.overrides, name=args.name, address=args.address, cluster_file=args.cluster))
    return 0


def _print_outcome(outcome: SweepOutcome) -> int:
    from raysweep.storage import optuna_storage_url
    from raysweep.tune.load import load_sweep_dir
    from raysweep.tune.summary import format_outcome

    print(format_outcome(outcome, optuna_storage_url(load_sweep_dir(outcome.sweep_dir), outcome.sweep_dir)))
    return 0 if outcome.complete else 1


def _verbosity(args: argparse.Namespace) -> int:
    """The sweep console's level: 1 (trial lines and the progress line), 2 with ``--verbose`` (Tune's table too)."""
    return 2 if args.verbose else 1


def _live_report(sweep: Any, sweep_dir: str, total: int | None) -> list[Any]:
    """The callback rewriting ``<sweep dir>/report`` while the sweep runs (``tracking.report_every``; none at 0)."""
    if not sweep.tracking.report_every:
        return []
    from raysweep.frontier.live_report import LiveReport
    from raysweep.storage import local_sweep_dir, split_sweep_dir
    from raysweep.tracking.store import tracking_uri_for

    root, _ = split_sweep_dir(sweep_dir)
    try:
        uri = tracking_uri_for(root, sweep.tracking.uri)
    except RaysweepError:
        return []  # the sweep's own checks say what is wrong with its storage or store, before it starts
    out = Path(local_sweep_dir(sweep_dir, sweep.name)) / "report"
    return [LiveReport(sweep.tracking.experiment or sweep.name, uri, out, sweep.tracking.report_every, total)]


def _planned_trials(sweep: Any) -> int | None:
    from raysweep.tune.modes import search_mode
    from raysweep.tune.space import expand_sweep

    return search_mode(sweep).planned_trials(expand_sweep(sweep))


def cmd_sweep(args: argparse.Namespace) -> int:
    from raysweep.tune.check import precheck_sweep_file
    from raysweep.tune.load import load_sweep

    # Before importing Ray and torch (seconds): a wrong address or tracking server is reported at once.
    precheck_sweep_file(args.sweep, args.overrides, name=args.name, address=args.address)
    sweep = load_sweep(args.sweep, args.overrides, name=args.name)
    from raysweep.storage import sweep_dir_for
    from raysweep.tune.run import run_sweep

    live = _live_report(sweep, sweep_dir_for(args.storage, sweep.name), _planned_trials(sweep))
    return _print_outcome(run_sweep(sweep, storage=args.storage, address=args.address, callbacks=live,
                                    verbose=_verbosity(args)))


def _print_unsent(sweep_dir: str | None = None, uri: str | None = None, experiment: str | None = None) -> None:
    """One line per sweep whose tracking journal records updates MLflow lacks (naming `raysweep sync`)."""
    from raysweep.storage import resolve_sweep_dir
    from raysweep.tracking.journal import experiment_notices, unsent_notice

    notices = [unsent_notice(resolve_sweep_dir(sweep_dir))] if sweep_dir else []
    if uri and experiment:
        notices += experiment_notices(uri, experiment)
    for notice in filter(None, notices):
        print(notice, file=sys.stderr, flush=True)


def cmd_resume(args: argparse.Namespace) -> int:
    from raysweep.storage import check_storage, resolve_sweep_dir
    from raysweep.tune.load import load_sweep_dir
    from raysweep.tune.run import resume_sweep

    _print_unsent(args.sweep_dir)
    sweep_dir = resolve_sweep_dir(args.sweep_dir)
    check_storage(sweep_dir)  # a missing bucket or refused credentials, in their own words, first
    sweep = load_sweep_dir(sweep_dir)
    live = _live_report(sweep, sweep_dir, _planned_trials(sweep))
    return _print_outcome(resume_sweep(args.sweep_dir, address=args.address, callbacks=live, verbose=_verbosity(args)))


def cmd_extend(args: argparse.Namespace) -> int:
    from raysweep.storage import check_storage, resolve_sweep_dir
    from raysweep.tune.load import load_sweep_dir
    from raysweep.tune.modes import search_mode

    sweep_dir = resolve_sweep_dir(args.sweep_dir)
    check_storage(sweep_dir)  # a missing bucket or refused credentials, in their own words, first
    if args.until_decided:
        from raysweep.frontier.sequential import extend_until_decided

        live = _live_report(load_sweep_dir(sweep_dir), sweep_dir, None)  # the rounds decide how many trials
        result = extend_until_decided(args.sweep_dir, max_seeds=args.max_seeds, seeds_per_round=args.seeds_per_round,
                                      margins=_parse_margins(args.margin), overrides=args.overrides,
                                      address=args.address, extra_alpha=args.extra_alpha, callbacks=live,
                                      verbose=_verbosity(args))
        return 0 if result.decided or result.stopped_by_budget else 1
    if args.max_seeds is not None or args.seeds_per_round is not None or args.margin or args.extra_alpha is not None:
        raise RaysweepError("--max-seeds, --seeds-per-round, --extra-alpha and --margin go with --until-decided: add it, "
                            "or grow the "
                            "sweep with --set search.seeds=[...] alone")
    from raysweep.tune.extend import extend_sweep, plan_extension

    grown, expanded, _ = plan_extension(sweep_dir, args.overrides)  # refusals here, before anything starts
    live = _live_report(grown, sweep_dir, search_mode(grown).planned_trials(expanded))
    outcome = extend_sweep(args.sweep_dir, args.overrides, address=args.address, callbacks=live,
                           verbose=_verbosity(args))
    return 0 if outcome is None else _print_outcome(outcome)


def cmd_sync(args: argparse.Namespace) -> int:
    from raysweep.tune.backfill import sync_sweep_dir

    print(sync_sweep_dir(args.sweep_dir, tracking_uri=args.tracking_uri).line())
    return 0


# ------------------------------------------------------------------------------- report, ui
def cmd_report(args: argparse.Namespace) -> int:
    from raysweep.frontier.report import build_report
    from raysweep.tracking.store import resolve_tracking_uri
    from raysweep.tune.check import check_tracking_uri

    tolerance = _check_tolerance(args.tolerance)
    uri = resolve_tracking_uri(args.tracking_uri, args.storage)
    check_tracking_uri(uri, "--tracking-uri")
    _print_unsent(uri=uri, experiment=args.experiment)
    if args.in_progress is not None and args.in_progress < 0:
        raise RaysweepError(f"--in-progress {args.in_progress}: give the sweep's number of trials, or 0 if not known")
    index = build_report(args.experiment, uri, args.out, ui_url=args.ui_url, log_to_mlflow=not args.no_log,
                         tolerance=tolerance, margins=_parse_margins(args.margin), in_progress=args.in_progress)
    print(f"report: open {index.resolve().as_uri()}")
    print(f"MLflow UI: raysweep ui --tracking-uri {uri}" if not uri.startswith("http") else f"MLflow UI: {uri}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from raysweep.frontier.claims_table import claims_json, format_claims
    from raysweep.frontier.report import describe_experiment, sweep_claims
    from raysweep.tracking.store import resolve_tracking_uri
    from raysweep.tune.check import check_tracking_uri

    tolerance = _check_tolerance(args.tolerance)
    margins = _parse_margins(args.margin)
    uri = resolve_tracking_uri(args.tracking_uri, args.storage)
    check_tracking_uri(uri, "--tracking-uri")
    _print_unsent(uri=uri, experiment=args.experiment)
    rows = sweep_claims(args.experiment, uri, tolerance, margins)
    describe_experiment(args.experiment, uri, rows)  # the sweeps' parent runs show the table in MLflow
    print(claims_json(rows) if args.json else format_claims(rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from raysweep.tracking.trained import EXPORT_FILES, check_export_dir, export_run, load_run

    check_export_dir(args.out)  # before the run is read: a taken --out is refused at once
    loaded = load_run(args.run, experiment=args.experiment, tracking_uri=args.tracking_uri, storage=args.storage)
    out = export_run(loaded, args.out)
    run = f"run {loaded.run_id}" if loaded.run_id else loaded.folder
    print(f"raysweep: exported {run} (step {loaded.step}, from {loaded.checkpoint}) to {out}: {', '.join(EXPORT_FILES)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from raysweep.tracking.ui import run_ui

    return run_ui(args.tracking_uri, args.storage, port=args.port, host=args.host)


COMMANDS = {
    "train": cmd_train, "toy": cmd_toy, "weights": cmd_weights, "report": cmd_report, "claims": cmd_claims, "ui": cmd_ui,
    "validate": cmd_validate, "sweep": cmd_sweep, "resume": cmd_resume, "extend": cmd_extend, "sync": cmd_sync, "prepare": cmd_prepare,
    "export": cmd_export,
}


EXIT_TERMINATED = 128 + signal.SIGTERM


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, a process manager, a job scheduler) as a normal exit: Python's default
    action ends the process at once, skipping ``finally`` blocks and atexit handlers, and with
    them the stop of what the command started (the ``mlflow server`` of ``ui``, the DDP ranks of
    ``train --workers``, local Ray's shutdown that ``ray.init`` registers). Further SIGTERMs are
    ignored while that cleanup runs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _TERMINATED.set()
    raise SystemExit(EXIT_TERMINATED)


# Set once SIGTERM arrived: Ray's compiled wait loop turns the handler's SystemExit into SystemExit(1),
# so the exit status is decided by this flag, not by the exception's code.
_TERMINATED = threading.Event()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `raysweep` console script."""
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        return COMMANDS[args.command](args)
    except RaysweepError as err:
        print(f"raysweep: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("raysweep: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        if not _TERMINATED.is_set():
            raise
        print("raysweep: terminated", file=sys.stderr)
        raise SystemExit(EXIT_TERMINATED) from None
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
