"""FPTAS on tiny models: the W-coefficient's directions, candidate parameter counts, the calibration, and the
procedure end to end (moved from tests/test_agora.py as it was)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compress.config import FptasConfig, from_mapping
from compress.distill.jobs import finetune_teacher
from compress.model.student import build_student, model_param_count, param_count
from compress.search import calibrate, candidate_grid, spearman, surrogate_error, w_coefficient
from tests.conftest import tiny_config
from tests.distill.test_agora import _raw


# ------------------------------------------------------------------ W-coefficient and candidates


def test_w_coefficient_moves_the_right_way():
    base = dict(p=10e6, i=1.0, e=1.2, p_max=22e6, i_max=2.5, e_max=0.4)
    w = w_coefficient(**base)
    assert w_coefficient(**{**base, "p": 8e6}) > w  # smaller is better
    assert w_coefficient(**{**base, "i": 0.5}) > w  # faster is better
    assert w_coefficient(**{**base, "e": 0.8}) > w  # closer to the maximum point is better
    assert w_coefficient(**{**base, "p": 22e6, "i": 2.5, "e": 0.4}) == pytest.approx(1.0)  # the maximum point
    with pytest.raises(ValueError, match="positive finite"):
        w_coefficient(**{**base, "e": 0.0})


def test_surrogate_error_is_lowest_against_itself():
    rng = np.random.default_rng(0)
    t = {"logits": rng.normal(size=(20, 3))}
    s = {"logits": rng.normal(size=(20, 3))}
    assert surrogate_error(t, t) < surrogate_error(t, s)


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    x = [3.0, 1.0, 2.0, 2.0, 5.0, 4.0]
    y = [0.3, 0.1, 0.25, 0.2, 0.9, 0.1]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _calibration_case(k: float = 1.5):
    """Five candidates where the real relative error is exactly 2 * s**k: small ones are fast but worse."""
    from compress.search import Constraint

    teacher = 0.90  # 10 points short of perfect
    specs = [("tiny", 2e6, 0.2, 3.1), ("small", 4e6, 0.4, 2.0), ("mid", 8e6, 0.8, 1.5), ("big", 16e6, 1.6, 1.2),
             ("slow", 16e6, 3.0, 1.25)]  # slow: as big as "big", slower and worse; never on the frontier
    e_max = 0.2
    ranking, distilled = [], []
    for name, p, i, s in specs:
        r = 2.0 * s ** k
        ranking.append({"candidate": name, "params": p, "inference_ms": i, "surrogate_error": s * e_max,
                        "relative_error": s})
        distilled.append({"candidate": name, "value": 1.0 - r * (1.0 - teacher), "latency_ms": i})
    result = {"maximum_point": {"params": 32e6, "inference_ms": 4.0, "surrogate_error": e_max},
              "ranking": ranking, "distilled": distilled}
    return result, teacher, [Constraint("accuracy", ">=", 0.62)]


def test_calibration_recovers_the_error_map_and_what_each_alpha_picks():
    result, teacher, constraints = _calibration_case()
    cal = calibrate(result, teacher, "accuracy", (0.25, 1.0, 4.0, 16.0), constraints)
    assert cal["k"] == pytest.approx(1.5) and cal["r2"] == pytest.approx(1.0)
    assert cal["alpha_for_real_1to1"] == pytest.approx(1.5)
    assert cal["spearman_error"] == pytest.approx(1.0) and cal["spearman_error_metric"] == pytest.approx(-1.0)
    assert "slow" not in cal["frontier"] and {"tiny", "big"} <= set(cal["frontier"])
    tops = [p["top"] for p in cal["per_alpha"]]
    assert tops[0] == "tiny" and tops[-1] == "big"  # a small alpha buys size and speed, a large one accuracy
    values = [p["value"] for p in cal["per_alpha"]]
    assert values == sorted(values)  # the first candidate's accuracy never falls as alpha grows
    tiny = next(c for c in cal["candidates"] if c["candidate"] == "tiny")
    assert tiny["value"] < 0.62 and not cal["per_alpha"][0]["meets_constraints"]
    assert cal["alpha_meeting_constraints"] == min(p["alpha"] for p in cal["per_alpha"] if p["meets_constraints"])
    # with k = 1.5, alpha on the surrogate weighs the real error 1.5 times as much: rankings differ somewhere
    assert any(p["top"] != p["ideal_top"] or p["spearman_w"] < 0.999 for p in cal["per_alpha"])
    # when the surrogate is the real error up to a factor (k = 1), W ranks exactly as with the real error
    result, teacher, constraints = _calibration_case(k=1.0)
    cal = calibrate(result, teacher, "accuracy", (0.25, 1.0, 4.0, 16.0), constraints)
    assert cal["k"] == pytest.approx(1.0)
    assert all(p["spearman_w"] == pytest.approx(1.0) and p["top"] == p["ideal_top"] for p in cal["per_alpha"])


def test_calibration_needs_distilled_candidates():
    result, teacher, constraints = _calibration_case()
    result["distilled"] = result["distilled"][:2]
    with pytest.raises(ValueError, match="at least 3 fully distilled"):
        calibrate(result, teacher, "accuracy", (1.0,), constraints)


def test_candidate_sizes_equal_the_built_models():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config(num_labels=2))
    from compress.model.student import Importance

    importance = Importance(heads=np.random.rand(4, 4), neurons=np.random.rand(4, 64))
    grid = candidate_grid(FptasConfig(depths=(1, 2, 4), heads=(2, 4), hidden_sizes=(16, 24, 32),
                                      intermediate_sizes=(32, 64)), teacher.config)
    assert len(grid) == 3 * 2 * 3 * 2  # every hidden size here is divisible by 2 and 4 heads
    assert all(c.hidden % c.heads == 0 for c in grid)
    for c in grid:
        model = build_student(teacher, c.spec(teacher.config), importance)
        assert param_count(model.config, "classification", 2) == model_param_count(model), c
        assert model.config.hidden_size == c.hidden and model.config.num_attention_heads == c.heads



def test_fptas_end_to_end(tmp_path, tiny_base):
    from compress.search import run_fptas

    teacher = str(finetune_teacher(from_mapping(_raw(tmp_path, tiny_base)), progress=False))
    raw = _raw(tmp_path, teacher)
    raw["fptas"] = {"depths": [1, 2], "heads": [2, 4], "hidden_sizes": [16, 32], "intermediate_sizes": [32],
                    "steps": 2, "eval_rows": 16, "top_k": 1}
    raw["search"] = {"latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                                 "rounds": 3, "calls_per_round": 2, "wait_s": 0}}
    res = run_fptas(from_mapping(raw), progress=False)
    ranking = res["ranking"]
    assert len(ranking) == 8 and [r["rank"] for r in ranking] == list(range(1, 9))
    assert all(a["W"] >= b["W"] for a, b in zip(ranking, ranking[1:]))
    assert all(r["relative_error"] >= 1.0 - 1e-9 for r in ranking)
    assert "could not be checked" in res["definition"]
    [d] = res["distilled"]
    assert d["candidate"] == ranking[0]["candidate"] and d["params"] == ranking[0]["params"]
    md = (tmp_path / "runs" / "t" / "fptas" / "ranking.md").read_text()
    assert "| rank | W | parameters |" in md


def test_fptas_calibration_end_to_end_and_resume(tmp_path, tiny_base, monkeypatch, capsys):
    import compress.distill.jobs
    import compress.search.fptas_run
    from compress.search import run_fptas

    teacher = str(finetune_teacher(from_mapping(_raw(tmp_path, tiny_base)), progress=False))
    raw = _raw(tmp_path, teacher)
    raw["fptas"] = {"depths": [1, 2], "heads": [2], "hidden_sizes": [16, 32], "intermediate_sizes": [32],
                    "steps": 2, "eval_rows": 16, "top_k": 1, "calibrate": True, "calibration_alphas": [0.5, 2.0]}
    raw["search"] = {"latency": {"batch_size": 1, "seq_len": 16, "threads": 1, "warmup": 1, "repeats": 3,
                                 "rounds": 3, "calls_per_round": 2, "wait_s": 0},
                     "constraints": ["accuracy >= 0.1"]}
    res = run_fptas(from_mapping(raw), progress=False)
    assert {d["candidate"] for d in res["distilled"]} == {r["candidate"] for r in res["ranking"]}  # all four
    cal = res["calibration"]
    assert [p["alpha"] for p in cal["per_alpha"]] == [0.5, 2.0] and cal["constraints"] == ["accuracy >= 0.1"]
    rho = cal["spearman_error_metric"]  # nan when the tiny candidates all score alike
    assert len(cal["candidates"]) == 4 and (np.isnan(rho) or -1.0 <= rho <= 1.0)
    for d in res["distilled"]:  # each distilled candidate is checked against search.constraints
        assert d["misses"] == ([] if d["value"] >= 0.1 else ["accuracy >= 0.1"])
    out = tmp_path / "runs" / "t" / "fptas"
    assert (out / "calibration.png").stat().st_size > 0 and "| alpha | W's first |" in (out / "calibration.md").read_text()

    def no_training(*a, **k):
        raise AssertionError("a rerun with the same inputs must not train again")

    # a rerun (say, after the job was killed) keeps every finished candidate and distillation
    monkeypatch.setattr(compress.search.fptas_run, "train", no_training)
    monkeypatch.setattr(compress.distill.jobs, "train", no_training)
    again = run_fptas(from_mapping(raw), progress=False)
    assert [(r["candidate"], r["surrogate_error"]) for r in again["ranking"]] == \
        [(r["candidate"], r["surrogate_error"]) for r in res["ranking"]]
    assert {d["candidate"]: d["value"] for d in again["distilled"]} == {d["candidate"]: d["value"] for d in res["distilled"]}

    # the command line, on the same (finished) work: the ranking, each distilled candidate, the calibration
    import yaml

    from compress.cli import main

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["fptas", str(path), "--calibrate", "--alpha", "2"]) == 0
    printed = capsys.readouterr().out
    assert "W-coefficient: W = " in printed and printed.count("distilled L") == 4
    assert "calibration: Spearman rho" in printed and "alpha     2: first" in printed
    assert json.loads((out / "ranking.json").read_text())["alpha"] == 2.0
