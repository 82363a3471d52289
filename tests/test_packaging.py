"""The wheel: it lists every package, ships the report's templates, builds without setuptools
deprecation warnings, and renders a report when raysweep is imported from it (not the checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "frontier"))

from synthetic_store import log_sweep  # noqa: E402


def test_pyproject_lists_every_package() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = find_packages(where=str(REPO), include=["raysweep*"])
    assert sorted(declared) == sorted([*found, "raysweep.dashboards"])


@pytest.mark.slow
def test_wheel_ships_templates_and_renders_a_report(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(REPO)], capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert "project.license" not in build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("raysweep-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"raysweep/dashboards/report.html", "raysweep/dashboards/report.css"} <= names
        archive.extractall(tmp_path / "site")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = [{"loss": "none", "lambda_neural": 0.0, "beta": b, "seed": 0, "rate": 10.0 / b, "mse": 0.01 * b,
             "distortion_sse": 30.0 * b, "anisotropy": 0.1} for b in (0.5, 1.0, 2.0)]
    log_sweep(uri, "wheel-test", "wheel", runs)
    # Only the unpacked wheel (and the dependencies of this environment) on the path, run from
    # elsewhere: the templates must come from the installed package.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    script = ("import raysweep, sys; from raysweep.cli import main; print(raysweep.__file__); "
              f"sys.exit(main(['report', '--experiment', 'wheel-test', '--tracking-uri', {uri!r}, "
              f"'--out', {str(tmp_path / 'report')!r}]))")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0].startswith(str(tmp_path / "site"))
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<html" in page and (tmp_path / "report" / "report.css").is_file()
