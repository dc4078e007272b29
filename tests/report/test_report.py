"""The report of a small finished study (opened in headless Chromium: no console errors, every plot rendered),
the QA error analysis, and `compress trials` on it (its filtering: tests/search/test_query.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compress.config import from_mapping
from compress.distill.jobs import finetune_teacher
from compress.report import QA_CATEGORIES, build_report, qa_error_table
from compress.search import run_worker
from tests.conftest import CONFIRM_QUICK, ROOT, job_config, write_sentiment_tsv, write_squad

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _cfg(tmp: Path, teacher: str, kind: str = "classification", n_trials: int = 5):
    if kind == "qa":
        raw = job_config(tmp, {"type": "qa"}, str(write_squad(tmp / "tr.json")), str(write_squad(tmp / "dev.json")),
                         teacher)
        raw["data"].update(max_seq_length=32, doc_stride=8)
    else:
        raw = job_config(tmp, {"type": "classification"}, str(write_sentiment_tsv(tmp / "tr.tsv", 48, 1)),
                         str(write_sentiment_tsv(tmp / "dev.tsv", 24, 2)), teacher)
    raw["name"] = f"report-{kind}"
    raw["distill"]["train"] = {"max_steps": 4, "batch_size": 8, "eval_every": 2}
    raw["student"] = {}
    raw["search"] = {"n_trials": n_trials, "sampler": "random", "seed": 0,
                     "objectives": ["metric", "params", "latency_ms"],
                     "constraints": ["latency_ms <= 1000"],
                     "space": {"num_layers": {"type": "int", "low": 1, "high": 3},
                               "heads": {"type": "categorical", "choices": [2, 4]},
                               "learning_rate": {"type": "logfloat", "low": 1e-4, "high": 1e-2}},
                     "latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                                 "rounds": 3, "calls_per_round": 2, "wait_s": 0},
                     "confirm": CONFIRM_QUICK}
    return from_mapping(raw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_base):
    runs = {}
    for kind, n in (("classification", 5), ("qa", 3)):
        tmp = tmp_path_factory.mktemp(kind)
        teacher = str(finetune_teacher(_cfg(tmp, tiny_base, kind), progress=False))
        cfg = _cfg(tmp, teacher, kind, n)
        run_worker(cfg, progress=False)
        runs[kind] = (cfg, *build_report(cfg))
    return runs


def test_report_files_and_sections(finished):
    cfg, html_path, md_path = finished["classification"]
    page = html_path.read_text()
    md = md_path.read_text()
    for needle in ("Scenarios", "retain size, maximise the metric", "minimise size, retain the metric",
                   "fastest within 1 points of the teacher", "knee of the frontier", "Pareto frontier",
                   "Parameter importance", "Training curves", "How this report was made", "config hash"):
        assert needle in page, needle
    assert "<script" in page and "https://" not in page.split("</head>")[1].split("plotly")[0]
    pngs = sorted(p.name for p in (md_path.parent / "report_files").iterdir())
    assert {"pareto-params.png", "pareto-latency_ms.png", "parallel-all.png"} <= set(pngs)
    for name in pngs:
        assert f"report_files/{name}" in md
    assert "| scenario | trial |" in md
    assert "held out" not in md and "used for selection" not in md  # no test split: one metric column, as before


def test_report_while_the_study_runs_reads_what_is_there(tmp_path, finished):
    cfg, *_ = finished["classification"]
    import optuna

    from compress.search import open_study

    study = open_study(cfg, create=False)
    trial = study.ask()  # a running trial, as another worker would leave it
    try:
        html_path, _ = build_report(cfg, tmp_path / "live")
        assert "running 1" in html_path.read_text()
    finally:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_qa_report_has_error_analysis(finished):
    cfg, html_path, md_path = finished["qa"]
    md = md_path.read_text()
    assert "QA error analysis" in md and "Normans" in md
    for c in QA_CATEGORIES:
        assert c in md
    assert "qa-errors.png" in md


def test_qa_error_categories():
    from compress.data import QAExample

    ex = [QAExample("a", "T1", "ctx", "q", (("Rollo", 0),), False),
          QAExample("b", "T1", "ctx", "q", (("the tenth century AD", 0),), False),
          QAExample("c", "T2", "ctx", "q", (("France", 0),), False),
          QAExample("d", "T2", "ctx", "q", (), True),
          QAExample("e", "T2", "ctx", "q", (), True),
          QAExample("f", "T2", "ctx", "q", (("Rollo", 0),), False)]
    preds = {"a": {"text": "Rollo", "null_odds": -1.0}, "b": {"text": "tenth century", "null_odds": -1.0},
             "c": {"text": "Normandy", "null_odds": -1.0}, "d": {"text": "Rollo", "null_odds": 2.0},
             "e": {"text": "Rollo", "null_odds": -2.0}, "f": {"text": "Rollo", "null_odds": 3.0}}
    table = qa_error_table(ex, preds, threshold=0.0)
    assert table["T1"] == {"correct": 1, "mostly correct": 1, "mostly wrong": 0, "label has answer": 0,
                           "label has no answer": 0}
    assert table["T2"] == {"correct": 1, "mostly correct": 0, "mostly wrong": 1, "label has answer": 1,
                           "label has no answer": 1}


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_report_renders_in_headless_chromium(finished, tmp_path):
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are not installed; .ci/run installs the Debian packages "
                        "chromium and chromium-driver")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    cfg, html_path, md_path = finished["classification"]
    expected = len(list((md_path.parent / "report_files").glob("*.png")))
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,3000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        driver.get(html_path.resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
        rendered = WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "const p = Array.from(document.querySelectorAll('.plot'));"
            "return p.length && p.every(x => x.querySelector('.js-plotly-plot .main-svg')) ? p.length : 0;"))
        assert rendered == expected
        names = driver.execute_script("return Array.from(document.querySelectorAll('.plot')).map(x => x.dataset.name)")
        assert sorted(names) == sorted(p.stem for p in (md_path.parent / "report_files").glob("*.png"))
        # Every plot has drawn marks, not just axes.
        drawn = driver.execute_script(
            "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => "
            "d.querySelectorAll('.point, .trace, .bars path, .line, canvas').length)")
        assert all(n > 0 for n in drawn), drawn
        shot = html_path.parent / "report-screenshot.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


# ------------------------------------------------------------------ compress trials


def test_trials_command(finished):
    cfg, *_ = finished["classification"]
    out = subprocess.run([str(Path(sys.executable).parent / "compress"), "trials", str(cfg.run_dir), "--where",
                          "params > 0", "--sort", "latency_ms", "--format", "csv"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("trial,state,feasible,accuracy,params,latency_ms")
    bad = subprocess.run([str(Path(sys.executable).parent / "compress"), "trials", str(cfg.run_dir), "--where",
                          "nope > 1"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "unknown name 'nope'" in bad.stderr
