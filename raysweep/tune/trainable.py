"""The Tune trial: one training run of the sweep.

- One worker: :func:`run_trial` calls the training loop in the Tune trial process. Every
  validation becomes ``tune.report(metrics, checkpoint)``; a restarted or resumed trial continues
  from ``tune.get_checkpoint()``.
- Several workers: :func:`run_trial` is a thin driver that builds a Ray Train v2 ``TorchTrainer``
  (DDP over NCCL on GPUs, gloo on CPUs) whose workers run the same loop and call
  ``ray.train.report``; Ray's ``TuneReportCallback`` forwards rank 0's reports to this trial. The
  Train run is stored under the trial's directory with a fixed name, so a retried or resumed
  trial's TorchTrainer continues from the run's newest checkpoint.

A DDP trial's workers sit in a placement group that its TorchTrainer's controller creates and
removes. A trial that Tune stops (ASHA) or that fails has its process, and with it the controller,
killed before it can remove the group, and Ray Train's own cleaner only removes it when Ray's State
API answers (the dashboard runs): without it the group's CPUs stay held and the next trials wait
forever (the pattern of Ray issue 54305). So rank 0 reports its group's id with every result
(:data:`PLACEMENT_GROUP_KEY`) and :func:`placement_group_reaper`, a callback in the driver
(:mod:`raysweep.tune.placement`), removes
the groups of every trial that ends, fails or is retried.

A run whose loss turns non-finite ends with a last report ``{"diverged": 1, "status":
"diverged", ...}``: the trial finishes normally (it is recorded, the sweep goes on). Every other
report carries ``diverged: 0``.

A matched-rate trial (its config carries ``points.META_KEY``, set by the matched-rate searcher)
reports through :func:`raysweep.tune.matched_rate.points.matched_rate_report`, so every
result, the diverged one included, also carries ``rate_error`` and ``progress`` (a diverged
trial's progress stays below 1: it never counts as converged).

Outputs of the loop (``metrics.jsonl``, ``final.json``, ``config.yaml``, plots) go to
``<sweep dir>/<trial id>/train/`` when the sweep is stored on a local or shared filesystem, else to
a node-local scratch folder (:func:`raysweep.storage.trial_output_dir`) that the trial (rank 0
of a DDP trial) copies to ``<sweep dir>/<trial id>/train/`` on the object storage with every
checkpoint and at its end, and copies back down before continuing from a checkpoint (a retry may
run on another node): the driver reads them from the bucket, never from a worker node's disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep import storage
from raysweep.names import KEY_METRICS
from raysweep.tune.resources import ResourcePlan

Report = Callable[[dict[str, Any], Any], None]

RAY_TRAIN_RUN_NAME = storage.RAY_TRAIN_DIR  # the TorchTrainer run inside a trial's directory
TRAIN_HEALTH_CHECK_INTERVAL_S = 0.25  # how often a DDP trial's Train controller polls its workers
PLACEMENT_GROUP_KEY = "placement_group_id"  # a DDP trial's result: its workers' group (hex id; see placement.py)
# Listed first in every report, so even Tune's default console (RAY_AIR_NEW_OUTPUT=1, which shows
# the first four metrics) shows the headline ones.
TABLE_METRICS = KEY_METRICS


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep needs besides its own config (passed with ``tune.with_parameters``).

    Attributes:
        sweep_dir: the sweep's directory (Tune experiment path): a local path or a URI.
        sweep_name: the sweep's name.
        plan: the resource plan.
        max_failures: retries of a failed trial (Tune's; a DDP trial's worker group is not retried
            inside the trial, see :func:`_run_torch_trainer`).
        num_to_keep: checkpoints a DDP trial's Train run keeps.
    """

    sweep_dir: str
    sweep_name: str
    plan: ResourcePlan
    max_failures: int
    num_to_keep: int


def trial_output_dir(ctx: TrialContext, trial_id: str) -> Path:
    """Where the training loop of trial `trial_id` writes (see :func:`raysweep.storage.trial_output_dir`)."""
    return storage.trial_output_dir(ctx.sweep_dir, ctx.sweep_name, trial_id)


def restore_outputs(out_dir: Path, outputs_uri: str | None) -> None:
    """Before continuing from a checkpoint: the outputs kept on object storage (`outputs_uri`,
    None for a filesystem sweep) copied into the scratch folder, so the loop's ``metrics.jsonl``
    continues the trial's history even when this attempt runs on another node."""
    if outputs_uri is not None:
        storage.download_outputs(outputs_uri, out_dir)


def keep_outputs(out_dir: Path, outputs_uri: str | None) -> None:
    """Copy the loop's outputs to object storage (`outputs_uri`; nothing for a filesystem sweep)."""
    if outputs_uri is not None:
        storage.upload_outputs(out_dir, outputs_uri)


def order_metrics(metrics: dict[str, Any], diverged: int = 0) -> dict[str, Any]:
    """The loop's metrics with the table's metrics first and the ``diverged`` flag added."""
    ordered = {k: metrics[k] for k in TABLE_METRICS if k in metrics}
    ordered.update((k, v) for k, v in metrics.items() if k not in ordered)
    ordered["diverged"] = diverged
    return ordered


def diverged_report(final: dict[str, Any]) -> dict[str, Any]:
    """The last report of a diverged run: its final summary's numbers, ``diverged: 1``, the status."""
    numbers = {k: v for k, v in final.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    report = order_metrics(numbers, diverged=1)
    report["status"] = "diverged"
    return report


def clear_previous_attempt(out_dir: Path) -> None:
    """Remove what an earlier attempt of this trial left in `out_dir` before it reported a
    checkpoint: the trial restarts from scratch, so its metrics log must too."""
    if out_dir.exists():
        shutil.rmtree(out_dir, ignore_errors=True)


def _quiet_checkpoint_logs() -> None:
    # Ray logs one INFO line per persisted checkpoint from every trial; the progress table suffices.
    import logging

    for name in ("ray.train._internal.storage", "ray.train._internal.session", "ray.tune.trainable.trainable"):
        logging.getLogger(name).setLevel(logging.WARNING)


def matched_rate_target(config: dict[str, Any]) -> float | None:
    """The rate target (nats) of a matched-rate trial's Tune config, None for other sweeps."""
    from raysweep.tune.matched_rate.points import split_trial_config

    _, meta = split_trial_config(config)
    return float(meta["target"]) if meta is not None else None


def wrap_report(emit: Report, target: float | None, cfg: Any) -> Report:
    """``emit`` for plain trials; for a matched-rate trial (``target`` nats) ``emit`` behind
    :func:`matched_rate_report`, with a diverged report's ``progress`` held below 1."""
    if target is None:
        return emit
    from raysweep.tune.matched_rate.points import PROGRESS, matched_rate_report

    def guarded(metrics: dict[str, Any], checkpoint: Any) -> None:
        if metrics.get("diverged") == 1:
            metrics = {**metrics, PROGRESS: min(float(metrics.get(PROGRESS, 0.0)), 0.999)}
        emit(metrics, checkpoint)

    return matched_rate_report(guarded, target, cfg=cfg)


def _set_threads(cpus: float) -> None:
    # Several busy processes share the cores: more intra-op threads than reserved CPUs thrash.
    import torch

    torch.set_num_threads(max(1, int(cpus)))


# --------------------------------------------------------------------------- one worker
def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The function trainable of every sweep (see the module docstring)."""
    from ray import tune

    from raysweep.tune.space import trial_config_from_params

    _quiet_checkpoint_logs()
    cfg = trial_config_from_params(config)
    trial_id = tune.get_context().get_trial_id()
    out_dir = trial_output_dir(ctx, trial_id)
    target = matched_rate_target(config)
    if ctx.plan.uses_trainer:
        _run_torch_trainer(cfg.to_dict(), out_dir, ctx, trial_id, target)
        return
    _set_threads(ctx.plan.cpus_per_worker)
    outputs_uri = storage.trial_outputs_uri(ctx.sweep_dir, trial_id)

    def emit(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is None:
            tune.report(metrics)
            return
        # Outputs first, checkpoint second: once Tune knows this checkpoint, a retry on another node
        # continues from it, and the log it downloads must already hold this validation's line (a
        # line past the checkpoint is truncated and redone by the resumed loop, never lost).
        keep_outputs(out_dir, outputs_uri)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        # Tune has copied the checkpoint into the trial's storage; the loop's copy is redundant.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)

    send = wrap_report(emit, target, cfg)
    final = _train_in_process(cfg, out_dir, send, outputs_uri)
    keep_outputs(out_dir, outputs_uri)
    if final["status"] == "diverged":
        send(diverged_report(final), None)


def intact_resume_dir(resume_from: str | Path) -> str:
    """The checkpoint folder to resume from: the one Tune restored, or, where Tune's state recorded a
    checkpoint its rotation was deleting when the driver stopped, the newest intact one the trial
    reported after it (:func:`raysweep.train.checkpoint.newer_intact_sibling`)."""
    from raysweep.train.checkpoint import checkpoint_problem, newer_intact_sibling

    path = Path(resume_from)
    if checkpoint_problem(path) is None:
        return str(resume_from)
    newer = newer_intact_sibling(path)
    return str(newer) if newer is not None else str(resume_from)


def _train_in_process(cfg: Any, out_dir: Path, send: Report, outputs_uri: str | None = None) -> dict[str, Any]:
    from ray import tune

    from raysweep.train.loop import train

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        send(order_metrics(metrics), checkpoint_dir)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        clear_previous_attempt(out_dir)
        return train(cfg, out_dir, report=report, progress=False)
    restore_outputs(out_dir, outputs_uri)
    with checkpoint.as_directory() as resume_from:
        return train(cfg, out_dir, report=report, resume_from=intact_resume_dir(resume_from), progress=False)


# ---------------------------------------------------------------------------- DDP workers
def _torch_trainer_worker(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: the training loop under the process group Ray set up."""
    import ray.train

    from raysweep.config import trial_config_from_dict
    from raysweep.train.loop import train

    _set_threads(loop_config["cpus_per_worker"])
    cfg = trial_config_from_dict(loop_config["trial"])
    _use_ray_train_device()
    out_dir = Path(loop_config["out_dir"])
    # Rank 0 writes the loop's outputs, so rank 0 alone keeps them on object storage.
    outputs_uri = loop_config.get("outputs_uri") if ray.train.get_context().get_world_rank() == 0 else None

    placement_group_id = ray.get_runtime_context().get_placement_group_id()

    def emit(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = None if checkpoint_dir is None else ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        if placement_group_id:
            metrics = {**metrics, PLACEMENT_GROUP_KEY: placement_group_id}
        if checkpoint is not None:  # outputs before the checkpoint they belong to (see run_trial's emit)
            keep_outputs(out_dir, outputs_uri)
        ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=checkpoint is not None)

    send = wrap_report(emit, loop_config.get("matched_rate_target"), cfg)

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        send(order_metrics(metrics), checkpoint_dir)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        if ray.train.get_context().get_world_rank() == 0:
            clear_previous_attempt(Path(loop_config["out_dir"]))
        final = train(cfg, loop_config["out_dir"], report=report, progress=False)
    else:
        restore_outputs(out_dir, outputs_uri)
        with checkpoint.as_directory() as resume_from:
            final = train(cfg, loop_config["out_dir"], report=report, resume_from=intact_resume_dir(resume_from),
                          progress=False)
    keep_outputs(out_dir, outputs_uri)
    if final["status"] == "diverged":
        # Every rank sees the same (all-reduced) loss, so every rank reports: report is a barrier.
        send(diverged_report(final), None)


def _use_ray_train_device() -> None:
    """Point the loop at the GPU Ray Train assigned to this worker.

    The loop picks ``cuda:<LOCAL_RANK>``; Ray Train makes every GPU of the node's workers visible
    to each of them, and the one it assigned need not sit at the local rank's index.
    """
    import ray.train.torch
    import torch

    device = ray.train.torch.get_device()
    if device.type == "cuda" and device.index is not None:
        os.environ["LOCAL_RANK"] = str(device.index)
        torch.cuda.set_device(device)


def _run_torch_trainer(trial: dict[str, Any], out_dir: Path, ctx: TrialContext, trial_id: str,
                       target: float | None = None) -> None:
    """Run the trial as a DDP job of ``plan.workers`` Ray Train workers and wait for it (``target``:
    a matched-rate trial's rate target, nats, for the workers' reports)."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # The Train controller polls its workers every health-check interval (Ray's default: 2 s), and a
    # worker's second report blocks until the controller has taken the first: with validations
    # seconds apart each report waited ~1 s and the trial's end was seen up to 2 s late (measured:
    # benchmarks/trial_overhead.py). Ray propagates this variable to the controller it starts.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(TRAIN_HEALTH_CHECK_INTERVAL_S))
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    plan = ctx.plan
    trainer = TorchTrainer(
        _torch_trainer_worker,
        train_loop_config={"trial": trial, "out_dir": str(out_dir), "cpus_per_worker": plan.cpus_per_worker,
                           "matched_rate_target": target,
                           "outputs_uri": storage.trial_outputs_uri(ctx.sweep_dir, trial_id)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.workers, use_gpu=plan.use_gpu, resources_per_worker=plan.worker_resources(),
            accelerator_type=plan.accelerator_type, placement_strategy="STRICT_PACK",
        ),
        run_config=ray.train.RunConfig(
            # The same (storage_path, name) on every attempt: a retried trial resumes the run.
            name=RAY_TRAIN_RUN_NAME,
            storage_path=storage.trial_dir(ctx.sweep_dir, trial_id),
            # No retries inside the trial: Tune retries a failed trial (failure.max_failures) from
            # its newest checkpoint. A worker-group retry would also outlive a trial Tune stopped
            # (ASHA): the reaper removes its group, and a retry would hold the node with a new one.
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=ctx.num_to_keep),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


# ------------------------------------------------------------------- placement groups
def placement_group_reaper() -> Any:
    """The driver's :class:`raysweep.tune.placement.PlacementGroupReaper` (imports Ray)."""
    from raysweep.tune.placement import PlacementGroupReaper

    return PlacementGroupReaper(PLACEMENT_GROUP_KEY)
