"""A run folder made by an earlier version (tests/fixtures/old_run, see make_old_run.py there and its MADE_BY) is
still read: `compress report` and `compress package` work on a copy of it, from the folder it was made in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "old_run"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    if not (FIXTURE / "runs" / "old" / "study.db").is_file():
        pytest.skip(f"{FIXTURE} is missing; run tests/fixtures/make_old_run.py")
    where = tmp_path_factory.mktemp("old") / "old_run"
    shutil.copytree(FIXTURE, where)
    return where


def _compress(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(cwd / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    return subprocess.run([str(BIN / "compress"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_fixture_is_small():
    size = sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file())
    assert size < 2_000_000, f"{FIXTURE} holds {size:,} bytes; keep it under 2 MB"


def test_an_old_run_folder_still_reports(old_run):
    res = _compress(old_run, "report", "runs/old")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("report: runs/old/report.html")
    html = (old_run / "runs" / "old" / "report.html").read_text()
    md = (old_run / "runs" / "old" / "report.md").read_text()
    assert "Choosing a student: old" in html and "## Scenarios" in md
    assert "test accuracy (held out)" in md
    assert (old_run / "runs" / "old" / "report_files" / "pareto-params.png").stat().st_size > 0
    doc = json.loads((old_run / "runs" / "old" / "frontier.json").read_text())
    assert doc["frontier"] and doc["baseline"]["number"] == 0 and "test" in doc["baseline"]


def test_an_old_run_folder_still_packages(old_run):
    res = _compress(old_run, "package", "runs/old", "--pick", "knee")
    assert res.returncode == 0, res.stderr[-3000:]
    tag = next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("packaged "))
    name, version = tag.split(":")
    assert name == "compress-model"
    meta = json.loads((old_run / "bentoml" / "models" / name / version / "compress.json").read_text())
    assert meta["run"] == "old" and meta["scenario"] == "knee" and meta["labels"] == ["negative", "positive"]
    assert meta["test"]["rows"] == 16
    assert "COMPRESS_MODEL=" in res.stdout
