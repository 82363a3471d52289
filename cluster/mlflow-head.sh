#!/bin/bash
# The MLflow tracking server of a cluster's head node, used by all three cluster templates
# (cluster/slurm/raysweep.sbatch, the `ray up` head, the KubeRay head pod's sidecar).
#
#   bash cluster/mlflow-head.sh LOCAL_DIR SHARED_DIR [PORT]
#
# - The backend is SQLite in LOCAL_DIR (the head's local disk): SQLite on a network filesystem
#   (NFS, EFS, Lustre, GPFS...) is unsafe, and raysweep refuses it as a sweep's store.
# - Artifacts go to SHARED_DIR/artifacts (shared storage); the server proxies them, so only the
#   driver, on the head, talks to MLflow (http://127.0.0.1:PORT).
# - The database is copied to SHARED_DIR/mlflow.db every RAYSWEEP_MLFLOW_BACKUP_S seconds
#   (default 300) and when this script gets SIGTERM/SIGINT (a job's end, a pod's deletion), with
#   SQLite's online backup (a consistent copy, written beside and renamed into place); a head that
#   starts with an empty LOCAL_DIR starts from that copy. A requeued SLURM job or a new head pod
#   therefore continues the same MLflow runs, and `raysweep ui --storage SHARED_DIR` opens them
#   after the cluster is gone. Runs logged after the last copy by a head that died without a signal
#   are refilled by `raysweep resume` (it backfills MLflow from the sweep directory) or `raysweep sync`.
#
# Environment: RAYSWEEP_MLFLOW_HOST (default 127.0.0.1), RAYSWEEP_MLFLOW_BACKUP_S, PYTHON (default python).
set -uo pipefail

LOCAL="${1:?usage: mlflow-head.sh LOCAL_DIR SHARED_DIR [PORT]}"
SHARED="${2:?usage: mlflow-head.sh LOCAL_DIR SHARED_DIR [PORT]}"
PORT="${3:-5000}"
HOST="${RAYSWEEP_MLFLOW_HOST:-127.0.0.1}"
EVERY="${RAYSWEEP_MLFLOW_BACKUP_S:-300}"
PYTHON="${PYTHON:-python}"

mkdir -p "$LOCAL" "$SHARED/artifacts" || { echo "mlflow-head.sh: cannot create $LOCAL or $SHARED/artifacts" >&2; exit 2; }
# The shared copy wins over an older local database (a head restarted on a node that kept one).
if [ -f "$SHARED/mlflow.db" ] && { [ ! -f "$LOCAL/mlflow.db" ] || [ "$SHARED/mlflow.db" -nt "$LOCAL/mlflow.db" ]; }; then
  cp "$SHARED/mlflow.db" "$LOCAL/mlflow.db"
  echo "mlflow-head.sh: continuing the runs of $SHARED/mlflow.db"
fi

save() {
  [ -f "$LOCAL/mlflow.db" ] || return 0
  "$PYTHON" - "$LOCAL/mlflow.db" "$SHARED/mlflow.db" <<'EOF' || echo "mlflow-head.sh: could not copy the database to $SHARED" >&2
import os, sqlite3, sys
source, target = sys.argv[1:]
partial = f"{target}.partial"
with sqlite3.connect(source) as src, sqlite3.connect(partial) as dst:
    src.backup(dst)
os.replace(partial, target)
EOF
}

# Its own process group: `mlflow server` starts workers that must stop with it.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$PYTHON" -m mlflow server --host "$HOST" --port "$PORT" --workers 1 \
  --backend-store-uri "sqlite:///$LOCAL/mlflow.db" --artifacts-destination "$SHARED/artifacts" &
SERVER=$!
echo "mlflow-head.sh: MLflow server on http://$HOST:$PORT (database $LOCAL/mlflow.db, artifacts $SHARED/artifacts)"

SLEEP=""
stop() {
  trap - TERM INT
  [ -n "$SLEEP" ] && kill "$SLEEP" 2>/dev/null
  kill -TERM -- "-$SERVER" 2>/dev/null
  for _ in $(seq 40); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$SERVER" 2>/dev/null
  wait "$SERVER" 2>/dev/null
  save
  echo "mlflow-head.sh: stopped; database copied to $SHARED/mlflow.db"
  exit 0
}
trap stop TERM INT

while kill -0 "$SERVER" 2>/dev/null; do
  sleep "$EVERY" &
  SLEEP=$!
  wait "$SLEEP"
  save
done
echo "mlflow-head.sh: the MLflow server exited" >&2
save
exit 1
