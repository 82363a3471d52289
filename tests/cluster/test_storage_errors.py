"""Object storage a sweep cannot use is refused before anything starts: ``raysweep sweep --storage``
on a bucket that does not exist, or with credentials the server refuses, exits 2 with one line
naming the URI and the fix, and starts neither Ray nor a trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_helpers import S3_ENV, S3Server, start_moto, stop_process
from tune_helpers import tiny_sweep, write_sweep

from raysweep.cli import main

pytestmark = pytest.mark.slow


def _one_line_error(status: int, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `raysweep sweep` printed for its exit status 2, after checking nothing started."""
    import ray

    out, err = capsys.readouterr()
    assert status == 2, (status, out[-2000:], err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "results in" not in out, out  # the sweep's start line: no trial began
    assert not ray.is_initialized()  # Ray was not even started
    return lines[0]


def test_a_missing_bucket_exits_2_naming_the_uri(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sweep(tmp_path, tiny_sweep("no-bucket"))
    line = _one_line_error(main(["sweep", str(path), "--storage", "s3://missing-bucket/x"]), capsys)
    assert "s3://missing-bucket/x" in line and "does not exist" in line and "create it" in line, line
    assert "missing-bucket" not in {b["Name"] for b in s3_server.client.list_buckets()["Buckets"]}


def test_refused_credentials_exit_2_naming_the_uri_and_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second S3 server that authenticates every request: the test's keys are unknown to it.
    proc, url = start_moto(tmp_path / "moto_auth.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        path = write_sweep(tmp_path, tiny_sweep("refused"))
        for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": url}.items():
            monkeypatch.setenv(key, value)
        status = main(["sweep", str(path), "--storage", "s3://locked-bucket/sweeps"])
    finally:
        stop_process(proc)
    line = _one_line_error(status, capsys)
    assert "s3://locked-bucket/sweeps" in line and "credentials were refused" in line, line
    assert "AWS_ACCESS_KEY_ID" in line


def test_trial_outputs_round_trip_through_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    from raysweep.storage import download_outputs, trial_outputs_uri, upload_outputs

    bucket = s3_server.create_bucket("raysweep-round-trip")
    scratch = tmp_path / "scratch"
    (scratch / "checkpoints" / "step_10").mkdir(parents=True)
    (scratch / "checkpoints" / "step_10" / "model.pt").write_bytes(b"weights")
    (scratch / "metrics.jsonl").write_text('{"step": 10}\n')
    (scratch / "final.json").write_text("{}")
    uri = trial_outputs_uri(f"s3://{bucket}/sweeps/s", "t1")
    assert uri == f"s3://{bucket}/sweeps/s/t1/train" and trial_outputs_uri(str(tmp_path), "t1") is None
    upload_outputs(scratch, uri)
    # The files, not the loop's checkpoint folder (Tune persists checkpoints itself).
    files = sorted(key for key in s3_server.keys(bucket) if not key.endswith("/"))  # pyarrow adds folder markers
    assert files == ["sweeps/s/t1/train/final.json", "sweeps/s/t1/train/metrics.jsonl"]
    copy = download_outputs(uri, tmp_path / "elsewhere")
    assert sorted(p.name for p in copy.iterdir()) == ["final.json", "metrics.jsonl"]
    assert (copy / "metrics.jsonl").read_text() == '{"step": 10}\n'
    assert list(download_outputs(f"s3://{bucket}/sweeps/s/none/train", tmp_path / "empty").iterdir()) == []
