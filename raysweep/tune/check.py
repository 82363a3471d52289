"""`raysweep validate SWEEP.yaml`: check a sweep completely and describe it, without starting Ray.

It prints the number of trials, what varies, the scheduler and searcher, the resource plan per trial
and the maximum concurrency on a cluster: this machine by default, the node types of a ``ray up``
cluster file (``--cluster cluster/ray-cluster-a100.yaml``), or a running cluster (``--address``,
which connects to it without starting anything). Nothing here imports Ray, except to join a running
cluster (``--address``) and to name a local GPU's accelerator type.

It also holds the checks of what lies outside the sweep file, run by ``validate`` and again before
``sweep`` and ``resume`` start Ray (:func:`check_sweep_inputs`), so that a wrong address, a tracking
server that does not answer or a missing data folder is one line before anything starts, rather
than a hang or a traceback after Ray is up:

- ``--address``: a TCP connection to the Ray head is tried with a short timeout first (Ray's own
  connect waits a minute or more for a head that is not there, then raises ``ConnectionError``).
- ``tracking.uri``: a scheme MLflow stores runs under (``sqlite:``, ``http(s)://``, ``databricks``,
  SQLAlchemy databases; MLflow's ``file:`` store is refused, as it duplicates replayed metrics and
  MLflow 3 deprecated it); an ``http(s)://`` server must answer within a few
  seconds (MLflow's client retries an unreachable server for minutes).
- ``data.root`` of folder datasets: it must exist and hold images when this machine can see it.
  With local Ray the trials run here, so a root missing here is an error; on a cluster
  (``--address``) a root missing on the driver may exist on the worker nodes, so it is left to
  the trials, which fail with the data loader's one-line error naming ``data.root``.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from raysweep.config import read_yaml, validate_model
from raysweep.errors import RaysweepError
from raysweep.names import FINAL_SUMMARY
from raysweep.registry import DATASETS
from raysweep.tune.load import apply_sweep_overrides, load_sweep
from raysweep.tune.modes import search_mode
from raysweep.tune.resources import (
    NodeResources,
    local_nodes,
    nodes_from_cluster_file,
    nodes_from_ray,
    plan_resources,
)
from raysweep.tune.space import ExpandedSweep, asha_max_t, expand_sweep
from raysweep.tune.sweep_config import SweepConfig

#: Seconds to wait for a Ray head or an MLflow tracking server to answer before calling it unreachable.
CONNECT_TIMEOUT_S = 3.0
#: Ray's default GCS port, for an ``--address`` given without one.
RAY_DEFAULT_PORT = 6379
#: Files a folder dataset reads as images (as raysweep.data.folders, without importing torch here).
_IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ------------------------------------------------------------------------ outside the sweep file
def _address_fix(address: str) -> str:
    return (f"--address {address}: start the cluster (`ray start --head`) and pass its head as host:port "
            "(e.g. 10.0.0.1:6379), or leave --address out to start a local Ray")


def _split_host_port(address: str) -> tuple[str, int]:
    """Host and port of a Ray address (``host:port``, ``ray://host:port``, a bare ``host``)."""
    bare = address.removeprefix("ray://").rstrip("/")
    host, sep, port_text = bare.rpartition(":")
    if not sep:
        return bare, RAY_DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
        raise RaysweepError(f"--address {address}: expected host:port (e.g. 127.0.0.1:6379), ray://host:port or auto")
    return host.strip("[]"), int(port_text)


def check_ray_address(address: str) -> str:
    """`address` after making sure a Ray head answers there within :data:`CONNECT_TIMEOUT_S`;
    ``auto`` (the cluster this machine belongs to, as under ``ray job submit``) is resolved through
    ``RAY_ADDRESS`` or the address file a local ``ray start`` writes (without either, Ray's own
    search for a running instance decides, and fails at once when there is none).

    Raises:
        RaysweepError: nothing listens at the address.
    """
    target = address
    if address == "auto":
        from ray._private.utils import read_ray_address

        target = os.environ.get("RAY_ADDRESS") or read_ray_address(None) or ""
        if not target or target == "auto":
            return address  # Ray's own discovery of a running instance, which fails fast when there is none
    if "://" in target and not target.startswith("ray://"):
        return address  # another kind of address (a job server's http://): Ray's own connect decides
    host, port = _split_host_port(target)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__).lower()
        raise RaysweepError(f"{_address_fix(address)} (no Ray head answers at {host}:{port}: {reason})") from None
    return address


def connect_ray(address: str, **init_kwargs: object) -> None:
    """``ray.init(address=...)`` after :func:`check_ray_address`, with Ray's connection errors (a
    port that answers but is not a Ray head, a version mismatch) turned into one line."""
    import ray

    check_ray_address(address)
    try:
        ray.init(address=address, **init_kwargs)
    except (ConnectionError, RuntimeError, TimeoutError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RaysweepError(f"{_address_fix(address)} (Ray could not connect: {first})") from None


def check_tracking_uri(uri: str | None, what: str = "tracking.uri") -> None:
    """Refuse a ``tracking.uri`` MLflow cannot store runs in, and an ``http(s)://`` server that does
    not answer within :data:`CONNECT_TIMEOUT_S` (``None``, the sweep's own SQLite store, is fine).
    `what` names the setting in the message (``--tracking-uri`` for ``report`` and ``claims``)."""
    if not uri:
        return
    from raysweep.tracking.store import tracking_uri_for

    uri = tracking_uri_for(None, uri)
    if not uri.startswith(("http://", "https://")):
        return
    request = urllib.request.Request(f"{uri.rstrip('/')}/health", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # something answers (a proxy in front of MLflow may not serve /health): MLflow will tell
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise RaysweepError(
            f"{what} {uri}: the MLflow tracking server does not answer ({reason}): start it "
            f"(`mlflow server --host HOST --port PORT`) or fix the address"
        ) from None


def check_tracking_store(sweep: SweepConfig, sweep_dir: str, mounts: str | None = None) -> None:
    """Refuse a SQLite tracking store on a network filesystem, the default ``<storage>/mlflow.db``
    on a cluster's shared storage included, before Ray or any trial starts (the rule and its fix:
    :func:`raysweep.tracking.store.check_sqlite_on_local_disk`; `mounts` is a mount table's text for tests)."""
    from raysweep.storage import split_sweep_dir
    from raysweep.tracking.store import check_sqlite_on_local_disk, tracking_uri_for

    root, _ = split_sweep_dir(sweep_dir)
    check_sqlite_on_local_disk(tracking_uri_for(root, sweep.tracking.uri), mounts)


def _holds_images(root: Path) -> bool:
    for _directory, _subdirs, files in os.walk(root, followlinks=True):
        if any(name.lower().endswith(_IMAGE_ENDINGS) for name in files):
            return True
    return False


def check_data_roots(expanded: ExpandedSweep, on_cluster: bool) -> None:
    """Every folder dataset's ``data.root`` exists and holds images, where this machine can tell.

    With local Ray (not `on_cluster`) the trials read the folder here, so a missing root is refused;
    on a cluster only a root that exists here is looked into (see the module docstring)."""
    seen: set[tuple[str, str]] = set()
    for cell in expanded.cells:
        dataset, root = cell.flat.get("data.dataset"), cell.flat.get("data.root")
        if DATASETS[dataset].root is None or root is None or (dataset, str(root)) in seen:
            continue
        seen.add((dataset, str(root)))
        key = cell.sources.get("data.root", "trial.data.root")
        path = Path(root).expanduser()
        if not path.exists():
            if not on_cluster:
                raise RaysweepError(
                    f"{key}: {root} does not exist on this machine, where local Ray runs the trials: "
                    f"set data.root to the folder holding the {dataset} images"
                )
            continue
        if not path.is_dir():
            raise RaysweepError(f"{key}: {root} is not a folder: set data.root to the folder holding the {dataset} images")
        if not _holds_images(path):
            raise RaysweepError(
                f"{key}: {root} holds no image files ({', '.join(_IMAGE_ENDINGS)}): set data.root to the folder "
                f"holding the {dataset} images"
            )


def check_sweep_inputs(
    sweep: SweepConfig, address: str | None, expanded: ExpandedSweep | None = None, on_cluster: bool | None = None
) -> None:
    """What a valid sweep file still needs from the world, checked before anything starts: the
    tracking server, the data folders and the Ray cluster at `address`. `on_cluster` (default:
    whether an `address` is given) says the trials run on other machines (``validate --cluster``)."""
    check_tracking_uri(sweep.tracking.uri)
    on_cluster = address is not None if on_cluster is None else on_cluster
    check_data_roots(expanded if expanded is not None else expand_sweep(sweep), on_cluster)
    if address is not None:
        check_ray_address(address)


def _finished(final_json: Path) -> bool:
    """Whether a trial's loop wrote a ``final.json`` with status ``finished``."""
    try:
        return json.loads(final_json.read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


def check_trial_checkpoints(sweep_dir: str) -> None:
    """Before ``resume`` starts Ray: the checkpoint each unfinished trial of a local sweep directory
    will continue from is intact (see :func:`raysweep.train.checkpoint.checkpoint_problem`).

    Tune restores a trial from the checkpoint its experiment state records and nothing older, so a
    damaged one stops the resume here, naming the file, rather than failing that trial on every
    retry. That is the recorded checkpoint (:func:`raysweep.tune.ray_shim.recorded_checkpoints`),
    not the newest folder on disk: a driver killed while a trial was persisting a checkpoint leaves
    that folder half written and unrecorded, and the trial continues from the one before. A driver
    killed while Tune was replacing the recorded checkpoint by a newer one (``num_to_keep``) leaves
    the recorded one part-deleted: the trial continues from the newest intact one after it. Without
    a readable experiment state (Tune's own restore then says why) or with a Ray that reads it
    differently, the newest folder of every trial whose loop has not finished is checked. Sweeps on
    object storage are not read here."""
    from raysweep.storage import is_uri
    from raysweep.train.checkpoint import STATE_FILE, checkpoint_problem, newer_intact_sibling
    from raysweep.tune import ray_shim

    if is_uri(sweep_dir):
        return
    root = Path(sweep_dir)
    states = sorted(root.glob("experiment_state-*.json"))
    recorded = None
    if states:
        try:
            recorded = ray_shim.recorded_checkpoints(states[-1].read_text())
        except (OSError, ValueError):
            return  # unreadable state: Tune's restore reports it
    if recorded is not None:
        candidates = [(trial_id, root / Path(path).parent.name / Path(path).name)
                      for trial_id, (status, path) in sorted(recorded.items())
                      if status != "TERMINATED" and path is not None]
    else:
        candidates = []
        for trial_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            checkpoints = sorted(p for p in trial_dir.glob("checkpoint_*") if p.is_dir())
            if checkpoints and not _finished(trial_dir / "train" / FINAL_SUMMARY):
                candidates.append((trial_dir.name, checkpoints[-1]))
    for trial_id, checkpoint in candidates:
        problem = checkpoint_problem(checkpoint)
        newer = newer_intact_sibling(checkpoint) if problem is not None else None
        if newer is not None:  # Tune's rotation was deleting the recorded one when the driver stopped
            print(f"raysweep: trial {trial_id}: the checkpoint Tune recorded ({checkpoint.name}: {problem}) was being "
                  f"replaced when the driver stopped; it continues from {newer.name}, the newest intact one it "
                  "reported", file=sys.stderr, flush=True)
        elif problem is not None:
            raise RaysweepError(
                f"{checkpoint / STATE_FILE}: {problem}: trial {trial_id} cannot continue from the checkpoint Tune "
                "recorded for it; restore the file from a copy, or run the sweep again under another --name"
            )


def precheck_sweep_file(
    path: Path, overrides: list[str] | None = None, name: str | None = None, address: str | None = None,
    on_cluster: bool | None = None,
) -> None:
    """:func:`check_sweep_inputs` on the sweep file's structure alone, before :func:`load_sweep`
    validates every trial in full (which imports torch for the generated data's geometry): a wrong
    address or tracking server is reported in a second, not after the heavy checks. A file that is
    not structurally valid is left to :func:`load_sweep`, which names its error."""
    try:
        raw = apply_sweep_overrides(copy.deepcopy(read_yaml(path)), overrides or [])
        if name is not None:
            raw["name"] = name
        sweep = validate_model(SweepConfig, raw)
        expanded = expand_sweep(sweep)
    except RaysweepError:
        return
    try:
        check_sweep_inputs(sweep, address, expanded, on_cluster)
    except RaysweepError as err:
        raise RaysweepError(f"{path}: {err}") from None


def describe_nodes(nodes: list[NodeResources]) -> str:
    """One line per node type: count x CPUs, GPUs, accelerator type."""
    parts = []
    for node in nodes:
        accel = f" {'/'.join(sorted(node.accelerator_types))}" if node.accelerator_types else ""
        gpus = f", {node.gpus:g} GPU{accel}" if node.gpus else ""
        parts.append(f"{node.count} x {node.name} ({node.cpus:g} CPU{gpus})")
    return "; ".join(parts)


def cluster_nodes(address: str | None, cluster_file: Path | None) -> tuple[list[NodeResources], str]:
    """The nodes to plan against and a phrase saying which cluster they describe."""
    if cluster_file is not None:
        return nodes_from_cluster_file(cluster_file), f"cluster file {cluster_file}"
    if address is not None:
        import ray

        connect_ray(address, log_to_driver=False)
        try:
            return nodes_from_ray(), f"Ray cluster at {address}"
        finally:
            ray.shutdown()
    return local_nodes(), "this machine"


def validate_sweep(
    path: Path, overrides: list[str] | None = None, name: str | None = None, address: str | None = None,
    cluster_file: Path | None = None,
) -> str:
    """Validate the sweep at `path` against a cluster and return the report ``validate`` prints;
    raise a one-line RaysweepError when the sweep or its plan is invalid."""
    # The world outside the file first (it is quick), then every trial in full.
    precheck_sweep_file(path, overrides, name, address, on_cluster=address is not None or cluster_file is not None)
    file_nodes = nodes_from_cluster_file(cluster_file) if cluster_file is not None else None
    sweep = load_sweep(path, overrides, name)
    expanded = expand_sweep(sweep)
    search = sweep.search
    max_t = asha_max_t(search.scheduler, expanded) if search.scheduler.type == "asha" else None
    if file_nodes is not None:
        nodes, where = file_nodes, f"cluster file {cluster_file}"
    else:
        nodes, where = cluster_nodes(address, None)
    try:
        plan = plan_resources(sweep.resources, nodes)
    except RaysweepError as err:
        raise RaysweepError(f"{path}: {err} (planned on {where})") from None
    lines = [f"{path}: sweep {sweep.name} is valid"]
    lines.extend(search_mode(sweep).describe(expanded))
    for key in expanded.varying_keys:
        values = sorted({repr(cell.flat[key]) for cell in expanded.cells})
        lines.append(f"  {key}: {', '.join(values)}")
    for key, dist in expanded.distributions.items():
        lines.append(f"  {key}: {dist.kind} {getattr(dist, dist.kind)}")
    if search.optuna is not None:
        lines.append(f"  optuna TPE per cell: {search.optuna.mode} {search.optuna.metric}")
    sched = search.scheduler
    if sched.type == "asha":
        lines.append(f"scheduler: ASHA on {sched.mode} {sched.metric}, grace {sched.grace_period}, reduction "
                     f"{sched.reduction_factor:g}, max_t {max_t} validations")
    else:
        lines.append("scheduler: FIFO (every trial runs to its end)")
    lines.append(f"cluster: {where}: {describe_nodes(nodes)}")
    lines.extend(plan.describe())
    return "\n".join(lines)
