"""Tracking on a cluster (issue 25): a SQLite store on a network filesystem is refused before Ray
starts, in one line naming the path, its filesystem and the fix; ``raysweep ui --host`` serves on
another address with a one-line warning that the UI has no authentication.

The mount tables are given to the check as text (the machine running the tests has no NFS); the
refusal through ``raysweep sweep`` reads a mount table file that says the storage is NFS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raysweep.errors import RaysweepError
from raysweep.tracking import store
from raysweep.tracking.store import check_sqlite_on_local_disk, filesystem_of, is_network_filesystem
from raysweep.tracking.ui import exposure_warning, is_loopback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tune"))
from tune_helpers import tiny_sweep, write_sweep  # noqa: E402

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
server:/export/home /home nfs4 rw,relatime,vers=4.2 0 0
/dev/nvme0n1 /home/scratch-local ext4 rw 0 0
10.0.0.1@o2ib:/lustre /lustre lustre rw 0 0
gpfs0 /gpfs gpfs rw 0 0
beegfs_nodev /mnt/beegfs beegfs rw 0 0
//nas/share /mnt/smb cifs rw 0 0
sshfs#me@host: /mnt/my\\040files fuse.sshfs rw 0 0
/dev/sdb1 /mnt/usb fuseblk rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


@pytest.mark.parametrize(("path", "expected"), [
    ("/home/me/sweeps/mlflow.db", ("/home", "nfs4")),
    ("/home/scratch-local/mlflow.db", ("/home/scratch-local", "ext4")),  # the longest mount point wins
    ("/homework/mlflow.db", ("/", "ext4")),  # a prefix of the name, not of the path
    ("/lustre/proj/mlflow.db", ("/lustre", "lustre")),
    ("/mnt/my files/mlflow.db", ("/mnt/my files", "fuse.sshfs")),  # escaped space in the table
    ("/tmp/x/mlflow.db", ("/tmp", "tmpfs")),
])
def test_filesystem_of_takes_the_longest_mount_point(path: str, expected: tuple[str, str]) -> None:
    assert filesystem_of(path, MOUNTS) == expected


@pytest.mark.parametrize(("fstype", "network"), [
    ("nfs", True), ("nfs4", True), ("lustre", True), ("gpfs", True), ("beegfs", True), ("cifs", True),
    ("smb3", True), ("fuse.sshfs", True), ("fuse.gcsfuse", True), ("ext4", False), ("xfs", False),
    ("tmpfs", False), ("fuseblk", False), ("overlay", False),
])
def test_network_filesystems(fstype: str, network: bool) -> None:
    assert is_network_filesystem(fstype) is network


@pytest.mark.parametrize(("db", "fstype", "point"), [
    ("/home/me/sweeps/mlflow.db", "nfs4", "/home"),
    ("/lustre/proj/mlflow.db", "lustre", "/lustre"),
    ("/gpfs/p/mlflow.db", "gpfs", "/gpfs"),
    ("/mnt/beegfs/mlflow.db", "beegfs", "/mnt/beegfs"),
    ("/mnt/smb/mlflow.db", "cifs", "/mnt/smb"),
    ("/mnt/my files/mlflow.db", "fuse.sshfs", "/mnt/my files"),
])
def test_sqlite_on_a_network_filesystem_is_refused_in_one_line(db: str, fstype: str, point: str) -> None:
    with pytest.raises(RaysweepError) as err:
        check_sqlite_on_local_disk(f"sqlite:///{db}", MOUNTS)
    line = str(err.value)
    assert "\n" not in line
    assert db in line and fstype in line and point in line
    assert "local disk" in line and "http://" in line  # the two fixes


@pytest.mark.parametrize("uri", [
    "sqlite:////home/scratch-local/mlflow.db", "sqlite:////tmp/mlflow.db", "sqlite:////mnt/usb/mlflow.db",
    "http://head:5000", "postgresql://mlflow@db/mlflow",
])
def test_local_sqlite_and_servers_pass(uri: str) -> None:
    check_sqlite_on_local_disk(uri, MOUNTS)


def test_sweep_on_nfs_storage_is_refused_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``raysweep sweep --storage`` on a filesystem the mount table calls NFS, with the default
    store (``<storage>/mlflow.db``): exit 2, one line, no Ray, no sweep directory."""
    import ray

    from raysweep.cli import main

    storage = tmp_path / "shared"
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nnas:/export {storage} nfs rw 0 0\n")
    monkeypatch.setattr(store, "MOUNTS_FILE", str(mounts))
    sweep_file = write_sweep(tmp_path, tiny_sweep("onnfs"))
    assert main(["sweep", str(sweep_file), "--storage", str(storage)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{storage}/mlflow.db" in lines[0] and "nfs" in lines[0] and "http://" in lines[0]
    assert not ray.is_initialized()
    assert not (storage / "onnfs").exists()


# ------------------------------------------------------------------------------ ui --host
@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("192.0.2.7", False), ("::", False), ("head.cluster", False),
])
def test_only_non_loopback_addresses_warn(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    warning = exposure_warning(host, 5000)
    if loopback:
        assert warning is None
    else:
        assert warning is not None and "\n" not in warning and host in warning and "authentication" in warning


@pytest.mark.parametrize(("host", "needle"), [("not a host!", "--host not a host!"), ("192.0.2.254", "no such address")])
def test_ui_host_that_cannot_be_bound_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, needle: str
) -> None:
    from raysweep.cli import main

    (tmp_path / "mlflow.db").write_bytes(b"")
    assert main(["ui", "--storage", str(tmp_path), "--host", host, "--port", "5999"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_ui_on_all_interfaces_serves_there_and_warns_once(tmp_path: Path) -> None:
    """``raysweep ui --host 0.0.0.0``: the real MLflow server answers on this machine's
    non-loopback address, and stderr carries exactly one warning line about authentication."""
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to reach the UI on")
    (tmp_path / "mlflow.db").write_bytes(b"")
    port = _free_port()
    raysweep = Path(sys.executable).with_name("raysweep")
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(raysweep), "ui", "--storage", str(tmp_path), "--host", "0.0.0.0", "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the UI did not answer within 180 s"
                time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    warnings = [line for line in log.read_text().splitlines() if "warning" in line.lower() and "authentication" in line]
    assert len(warnings) == 1 and "--host 0.0.0.0" in warnings[0], log.read_text()[-2000:]
