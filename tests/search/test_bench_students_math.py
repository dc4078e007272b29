"""bench-students' choice of the best file at each accuracy level and its goals, on made-up rows (the benchmark
itself trains for hours)."""

from __future__ import annotations


import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_students")


def _row(student, acc, speedup, params, precision="fp32", vocab=False):
    return {"student": student, "recipe": "r", "precision": precision, "vocab_pruned": vocab, "accuracy": acc,
            "speedup": speedup, "speedup_ci95": [speedup * 0.9, speedup * 1.1], "params": params}


def test_the_fastest_and_smallest_file_at_each_level(bench):
    rows = [_row("L4", 0.905, 1.8, 16_000_000), _row("L3", 0.899, 2.6, 14_000_000),
            _row("L3", 0.897, 5.1, 14_000_000, "int8-static"), _row("L2", 0.885, 7.0, 9_000_000, "int8-static", True),
            _row("L1", 0.80, 20.0, 5_000_000)]
    best = bench.best_at_levels(rows, teacher_acc=0.905, teacher_params=22_700_000)
    assert best["0.99"]["fastest"]["speedup"] == 5.1  # 0.897 >= 0.99 * 0.905 = 0.896
    assert best["0.99"]["smallest"]["params"] == 14_000_000
    assert best["0.97"]["fastest"]["student"] == "L2"  # 0.885 >= 0.97 * 0.905 = 0.878; L1 is below
    goals = bench.goals_from(best)
    assert goals["speedup_at_99"]["met"] and goals["speedup_at_99"]["achieved_by"]["precision"] == "int8-static"
    assert goals["params_share_at_99"]["value"] == pytest.approx(14 / 22.7)
    assert not goals["params_share_at_99"]["met"]
    none = bench.goals_from(bench.best_at_levels([_row("L1", 0.5, 9.0, 1)], 0.91, 22_700_000))
    assert none["speedup_at_97"] == {"value": None, "goal": 6.0, "met": False, "achieved_by": None}


def test_the_stages_run_end_to_end_on_a_tiny_teacher(bench, tmp_path, tiny_base, monkeypatch):
    """train -> variants (fp32, int8-dynamic, int8-static, each with a pruned vocabulary) -> one interleaved timing,
    then the levels and the ablation table, with tiny students in place of the real ones."""
    from compress.config import from_mapping
    from compress.distill.jobs import finetune_teacher, load_context
    from tests.conftest import CONFIRM_QUICK, job_config, write_sentiment_tsv

    train = write_sentiment_tsv(tmp_path / "train.tsv", 48, seed=1)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 16, seed=2)
    raw = job_config(tmp_path, {"type": "classification"}, str(train), str(dev), tiny_base)
    raw["distill"]["train"] = {"epochs": 1, "batch_size": 16, "eval_every": 0}
    raw["search"] = {"latency": {"batch_size": 1, "seq_len": "eval", "threads": 1, "warmup": 1, "wait_s": 0},
                     "confirm": CONFIRM_QUICK, "calibration": {"rows": 16, "batch_size": 8}}
    cfg = from_mapping(raw)
    finetune_teacher(cfg, progress=False)
    ctx = load_context(cfg, progress=False)
    spec = {"num_layers": 1}
    monkeypatch.setattr(bench, "OUT", tmp_path / "bench")
    monkeypatch.setattr(bench, "STUDENTS", {"L3-kd": (spec, "kd"), "L3-kd+rel": (spec, "kd+relations"),
                                            "L3": (spec, bench.FULL)})
    monkeypatch.setattr(bench, "RECIPES", {k: {**v, "epochs": 1} for k, v in bench.RECIPES.items()})
    monkeypatch.setattr(bench, "PRECISIONS", ("fp32", "int8-static"))  # int8-dynamic: tests/deploy/test_variants.py
    trained = bench.stage_train(cfg, ctx)
    assert trained["L3"]["augment"]["enabled"] and not trained["L3-kd"]["augment"]["enabled"]
    assert trained["L3-kd+rel"]["distill_config"]["alpha_relations"] == 1.0
    rows = bench.stage_variants(cfg, ctx, trained)
    assert len(rows) == 3 * 2 * 2 and all(0 <= r["accuracy"] <= 1 for r in rows)
    pruned = [r for r in rows if r["vocab_pruned"]]
    assert all(r["params"] < next(q["params"] for q in rows if q["student"] == r["student"] and not q["vocab_pruned"])
               for r in pruned)
    again = bench.stage_variants(cfg, ctx, trained)  # resumable: nothing is made again
    assert [r["onnx"] for r in again] == [r["onnx"] for r in rows]
    measured = bench.stage_measure(cfg, ctx, rows)
    assert set(measured["result"]["ratios"]) == {r["onnx"] for r in rows}
    for r in rows:
        ratio = measured["result"]["ratios"][r["onnx"]]
        r["speedup"], r["speedup_ci95"] = 1 / ratio["median"], [1 / ratio["ci95"][1], 1 / ratio["ci95"][0]]
    steps = bench.ablation(rows)
    assert [s["step"] for s in steps][-1] == "+ static int8" and steps[-1]["row"]["vocab_pruned"]


def test_every_recipe_sees_the_same_rows_and_each_budget_has_its_own_folder(bench, monkeypatch):
    for name in ("OUT", "TRAIN_ROWS", "PASSES", "RECIPES"):  # restored after the test; configure() changes them
        monkeypatch.setattr(bench, name, getattr(bench, name))
    for passes in (2, 3):
        r = bench.recipes(passes)
        assert r["kd"]["epochs"] == r["kd+relations"]["epochs"] == passes
        aug = r["kd+relations+augment"]
        assert aug["epochs"] * (1 + aug["distill"]["augment"]["factor"]) == passes
    folders = set()
    for rows, passes in ((None, 2), (12000, 3), (12000, 2), (None, 3)):
        bench.configure(rows, passes)
        folders.add(bench.OUT.name)
        assert bench.TRAIN_ROWS == rows and bench.RECIPES == bench.recipes(passes)
    assert folders == {"bench-students-all", "bench-students", "bench-students-12000", "bench-students-all-x3"}
    with pytest.raises(SystemExit, match="--passes 1"):
        bench.configure(None, 1)
