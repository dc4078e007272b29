"""The held-out test split, scored once the search is over: the teacher, the baseline and every frontier point,
each on the ONNX file that is deployed. `evaluate_heldout(cfg, study)` runs at the end of `compress search` and in
`compress report`; results are cached beside each trial (trials/<n>/test.json, teacher_onnx/test.json).

Nothing here feeds back into the search: the test split (`data.test`, or carved by `data.split.test`) is never
used by training, early stopping, the objectives, the frontier choice, SQuAD 2.0's no-answer threshold or Agora.
For SQuAD 2.0 the threshold is the one a server would use, chosen on the EVAL split with the same file
(compress.deploy.variants.serving_threshold); the test split's own best threshold is recorded apart, labelled as the
oracle threshold on test, and is never the reported test figure.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..artifacts import write_json
from ..config import JobConfig
from ..data.features import prepare_task_data
from ..data.split import ids_hash
from ..deploy.measure import external_data
from ..deploy.variants import serving_threshold
from ..distill.vocab import data_for_model, is_pruned
from ..model.inference import evaluate_onnx
from ..model.metrics import SquadGold, squad_evaluate
from ..model.teacher import load_tokenizer
from .pareto import baseline_trial, frontier

__all__ = ["CACHE_NAME", "ORACLE_KEYS", "cached_score", "evaluate_heldout", "heldout_block", "heldout_data",
           "onnx_sha256", "read_heldout", "score_heldout"]

CACHE_NAME = "test.json"  # in the trial folder (the deployed file) or in teacher_onnx/
# SQuAD 2.0 figures at the threshold that is best on the test split itself: they peek at test labels, so they
# are kept apart from the test metrics and labelled as such
ORACLE_KEYS = ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")
PROTOCOL = 1  # bump when the way a file is scored changes: every cached result is then recomputed
BATCH_SIZE = 64  # rows per ONNX Runtime call; does not change the metric


def onnx_sha256(path: str | Path) -> str:
    """Content hash of an ONNX model: the .onnx file and every external data file it refers to."""
    path = Path(path)
    h = hashlib.sha256()
    for f in [path, *(path.parent / loc for loc in external_data(path))]:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _same_file(recorded: str | None, path: Path) -> bool:
    return recorded is not None and Path(recorded).resolve() == path.resolve()


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _key(onnx_hash: str, data) -> dict[str, Any]:
    # SQuAD 2.0: the threshold comes from the eval split, so its features are part of what the result depends on
    return {"protocol": PROTOCOL, "onnx_sha256": onnx_hash, "test_split": data.test.key,
            "eval_split": data.eval.key if data.version_2 else None}


def score_heldout(onnx_path: str | Path, data, threads: int = 2) -> dict[str, Any]:
    """Score one ONNX file on data.test with the task's metrics (no cache); the record test.json holds.

    SQuAD 2.0: the file is first scored on data.eval to choose the no-answer threshold (best exact there, as
    `compress package` does); the test outputs are scored at that threshold. The best thresholds on test go to
    `oracle_threshold_on_test`, never into `metrics`.
    """
    if data.test is None:
        raise ValueError("the job has no test split (data.test or data.split.test); there is nothing held out")
    path = Path(onnx_path)
    t0 = time.perf_counter()
    rec: dict[str, Any] = {}
    where = f"{path.parent.name}/{path.name}"
    rows = len(data.test.examples)
    if data.version_2:
        eval_metrics, eval_preds = evaluate_onnx(path, data, split=data.eval, batch_size=BATCH_SIZE, threads=threads)
        threshold = serving_threshold(eval_metrics, eval_preds)
        metrics, _ = evaluate_onnx(path, data, split=data.test, batch_size=BATCH_SIZE, threads=threads,
                                   na_threshold=threshold)
        rec["oracle_threshold_on_test"] = {
            **{k: metrics.pop(k) for k in ORACLE_KEYS if k in metrics},
            "note": "oracle threshold on test: the no-answer threshold that is best on the test split itself; it "
                    "looks at test labels, so it is not a held-out figure",
        }
        rec["eval_at_threshold"] = _numeric(_eval_at(data, eval_preds, threshold))
        rec["na_threshold_source"] = (f"best exact on the eval split ({len(data.eval.examples)} questions) with "
                                      "this file (compress.deploy.variants.serving_threshold), as `compress package` "
                                      "uses")
        how = f"SQuAD 2.0 no-answer threshold {threshold:.4g} chosen on eval"
    else:
        metrics, _ = evaluate_onnx(path, data, split=data.test, batch_size=BATCH_SIZE, threads=threads)
        how = "task metrics as in the search"
    return {
        "metrics": _numeric(metrics), "rows": rows,
        "method": f"ONNX Runtime on {where}, test split ({rows} rows), {how}",
        **rec,
        "onnx": str(path), "onnx_stat": _stat(path), "test_ids_sha256": ids_hash(data.test.examples),
        "runtime": {"onnxruntime": ort.__version__, "threads": threads, "batch_size": BATCH_SIZE},
        "seconds": round(time.perf_counter() - t0, 2), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _eval_at(data, eval_preds: list[Any], threshold: float) -> dict[str, Any]:
    """Eval metrics of the same predictions at `threshold` (the eval split's best exact): the like-for-like eval
    figure for a SQuAD 2.0 test figure (the search's own eval metrics are at threshold 0)."""
    gold = [SquadGold(ex.qid, tuple(t for t, _ in ex.answers), ex.title) for ex in data.eval.examples]
    texts = {p.qid: p.text for p in eval_preds}
    odds = {p.qid: p.null_odds for p in eval_preds}
    out = {k: v for k, v in squad_evaluate(gold, texts, odds, na_prob_thresh=threshold).items() if k not in ORACLE_KEYS}
    return {**out, "na_threshold": threshold,
            "no_answer_rate": float(np.mean([p.null_odds > threshold for p in eval_preds]))}


def cached_score(onnx_path: str | Path, cache: Path, data, threads: int = 2, write: bool = True) -> dict[str, Any]:
    """score_heldout, reused from `cache` when it holds the result for this file's content and these splits;
    a new result is written there unless `write` is False (a file other than the one the cache is for)."""
    onnx_path = Path(onnx_path)
    key = _key(onnx_sha256(onnx_path), data)
    if cache.is_file():
        try:
            old = json.loads(cache.read_text())
        except (OSError, ValueError):
            old = None
        if old and old.get("key") == key:
            if write and (not _same_file(old.get("onnx"), onnx_path) or old.get("onnx_stat") != _stat(onnx_path)):
                old = {**old, "onnx": str(onnx_path), "onnx_stat": _stat(onnx_path)}  # same content, touched
                write_json(cache, old)
            return old
    rec = {"key": key, **score_heldout(onnx_path, data, threads)}
    if write:
        write_json(cache, rec)
    return rec


def read_heldout(cache: Path, onnx_path: str | Path | None, test_ids: str | None = None) -> dict[str, Any] | None:
    """The cached result for `onnx_path`, without hashing or loading data (for frontier.json, written after every
    trial): valid when it names this file, the file's size and mtime are unchanged, and (given) the test rows'
    id hash matches. None otherwise."""
    if onnx_path is None or not cache.is_file():
        return None
    try:
        rec = json.loads(cache.read_text())
        path = Path(onnx_path)
        if not _same_file(rec.get("onnx"), path) or rec.get("onnx_stat") != _stat(path):
            return None
    except (OSError, ValueError):
        return None
    if test_ids is not None and rec.get("test_ids_sha256") != test_ids:
        return None
    return rec


def heldout_block(rec: dict[str, Any]) -> dict[str, Any]:
    """What frontier.json shows under "test": metric values, rows and how they were measured."""
    out: dict[str, Any] = {**rec["metrics"], "rows": rec["rows"], "method": rec["method"]}
    for k in ("oracle_threshold_on_test", "eval_at_threshold"):
        if k in rec:
            out[k] = rec[k]
    return out


def heldout_data(cfg: JobConfig, study=None):
    """The job's splits, tokenized as the trials were (the tokenizer saved beside an exported ONNX file)."""
    folders = [cfg.run_dir / "teacher_onnx"]
    if study is not None:
        folders += [Path(t.user_attrs["onnx"]).parent for t in _to_score(study)[1]]
    for folder in folders:
        if is_pruned(folder):  # its own vocabulary (data_for_model gives its splits), not the one the others share
            continue
        if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
            return prepare_task_data(cfg, load_tokenizer(str(folder)))
    raise FileNotFoundError(f"no exported model with a tokenizer in {cfg.run_dir} (teacher_onnx/ or a trial's "
                            "onnx/); run `compress search` first")


def _to_score(study) -> tuple[Any, list[Any]]:
    """(baseline trial or None, [baseline, frontier trials...]) that have a deployed ONNX file."""
    base = baseline_trial(study)
    out = ([base] if base is not None else []) + [t for t in frontier(study) if base is None or t.number != base.number]
    return base, [t for t in out if t.user_attrs.get("onnx") and Path(t.user_attrs["onnx"]).is_file()]


def evaluate_heldout(cfg: JobConfig, study, data=None) -> dict[str, Any]:
    """Score the teacher, the baseline and every frontier trial on the test split; {} when there is none.

    Each on its deployed ONNX file (the trial's `onnx`: fp32, or the searched precision), with ONNX Runtime at
    search.latency.threads. Cached per file in trials/<n>/test.json and teacher_onnx/test.json, keyed by the
    file's content hash and the split keys, so a rerun (or `compress report`) recomputes only what is missing.
    After `compress promote`, each promoted file too (RUN/promoted/<n>/test.json), under "promoted".
    Returns {"teacher": record or None, "trials": {number: record}[, "promoted": {number: record}]}. Never
    touches trial values or the frontier.
    """
    if not cfg.data.has_test:
        return {}
    if data is None:
        data = heldout_data(cfg, study)
    if data.test is None:  # the config says there is one; the loaders found no rows
        raise ValueError(f"the job's config has a test split but no test rows were loaded for {cfg.run_dir}")
    threads = cfg.search.latency.threads
    out: dict[str, Any] = {"teacher": None, "trials": {}}
    teacher_onnx = cfg.run_dir / "teacher_onnx" / "model.onnx"
    if teacher_onnx.is_file():
        out["teacher"] = cached_score(teacher_onnx, teacher_onnx.parent / CACHE_NAME, data, threads)
    _, trials = _to_score(study)
    for t in trials:
        onnx_path = Path(t.user_attrs["onnx"])
        # A pruned vocabulary reads the splits as its own tokenizer gives them (compress.distill.vocab).
        out["trials"][t.number] = cached_score(onnx_path, Path(t.user_attrs["dir"]) / CACHE_NAME,
                                               data_for_model(cfg, data, onnx_path.parent), threads)
    promo = study.user_attrs.get("promotion") or {}
    for p in promo.get("points") or []:  # the promoted files (RUN/promoted/<n>/): what frontier.json reports then
        if p.get("onnx") and Path(p["onnx"]).is_file():
            out.setdefault("promoted", {})[p["trial"]] = cached_score(
                p["onnx"], Path(p["dir"]) / CACHE_NAME, data_for_model(cfg, data, Path(p["onnx"]).parent), threads)
    return out
