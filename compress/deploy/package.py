"""`compress export` and `compress package`: deployable variants of a trial, and a BentoML model to serve.

`export_variants(cfg, trial)` makes the fp32, optimised, dynamic and static int8 ONNX variants of one trial and
re-measures each (metric on the eval set, latency with the search's protocol, size). `package(cfg, ...)` stores one
variant of one trial (chosen by number or by a scenario, see compress.search.scenarios) in the local BentoML model
store: model.onnx, config.json, tokenizer files and compress.json (task, labels, lengths, the no-answer threshold
learnt on the eval set, and the measured figures with their methods; with a held-out test split, the packaged
file's test metrics too, see compress.search.heldout). No pickled object is written.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..artifacts import config_hash
from ..config import JobConfig
from ..data.features import prepare_task_data
from ..model.teacher import load_tokenizer
from ..search.pareto import study_records
from ..search.heldout import CACHE_NAME, cached_score, heldout_block
from ..search.objectives import latency
from ..search.results import promoted_record, write_outputs
from ..search.scenarios import pick
from ..search.storage import open_study
from .model_card import write_model_card
from .variants import calibration_feeds, canonical_precision, measure_variants

__all__ = ["DEFAULT_MODEL_NAME", "PackageError", "describe", "export_variants", "package", "resolve_trial"]

DEFAULT_MODEL_NAME = "compress-model"  # what serve/service.py and bentofile.yaml serve unless told otherwise


class PackageError(ValueError):
    """The trial or scenario cannot be packaged; the message says why and what to pick instead."""


def resolve_trial(cfg: JobConfig, trial: int | None = None, scenario: str | None = None,
                  within: float = 1.0) -> dict[str, Any]:
    """The trial record to package: by number, or the frontier point a scenario picks."""
    if (trial is None) == (scenario is None):
        raise PackageError("give exactly one of --trial N or --pick SCENARIO")
    study = open_study(cfg, create=False)
    fpath, _ = write_outputs(cfg, study)
    if scenario is not None:
        rec = pick(json.loads(fpath.read_text()), scenario, within)
        rec = {**rec, "scenario": scenario}
    else:
        found = [r for r in study_records(study) if r["number"] == trial]
        if not found:
            raise PackageError(f"trial {trial} is not in study {study.study_name!r}; `compress status "
                               f"{cfg.run_dir}` lists the trials")
        rec = found[0]
        # After `compress promote`, a promoted trial is its retrained model (RUN/promoted/<n>/): the one the frontier
        # and the report show, not the search's low-budget one.
        promo = study.user_attrs.get("promotion") or {}
        point = next((q for q in promo.get("points") or [] if q["trial"] == trial), None)
        if point is not None:
            rec = promoted_record(rec, point, study.user_attrs.get("objectives") or [])
    if rec["state"] not in ("complete", "stopped") or not rec.get("dir"):
        raise PackageError(f"trial {rec['number']} is {rec['state']} ({rec.get('reason') or 'no result'}); "
                           "pick a completed trial")
    if not Path(rec["dir"], "onnx", "model.onnx").is_file():
        raise PackageError(f"trial {rec['number']} has no ONNX export in {rec['dir']}/onnx; pick another trial")
    return rec


def _data(cfg: JobConfig, trial_dir: Path):
    return prepare_task_data(cfg, load_tokenizer(str(trial_dir / "onnx")))


def export_variants(cfg: JobConfig, rec: dict[str, Any], precisions, progress: bool = True,
                    data=None) -> list[dict[str, Any]]:
    """Make and re-measure the variants of one trial; rows also land in trials/<n>/variants.json. int8-static
    calibrates on the job's training split, as search.calibration says."""
    trial_dir = Path(rec["dir"])
    data = data if data is not None else _data(cfg, trial_dir)
    cal = cfg.search.calibration
    calibration = calibration_feeds(data.train, cal.rows, cal.batch_size, cal.method, cal.seed) \
        if "int8-static" in {canonical_precision(p) for p in precisions} else None
    rows = measure_variants(trial_dir, data, lambda p: latency(p, data.eval, cfg), precisions,
                            threads=cfg.search.latency.threads, atol=cfg.search.export_atol, progress=progress,
                            calibration=calibration)
    for row in rows:  # each exported folder carries its model card
        write_model_card(row["dir"], cfg, {
            "run": cfg.name, "trial": rec["number"], "precision": row["precision"], "metric": cfg.task.primary_metric,
            "metrics": row["metrics"], "metric_method": row["metric_method"], "params": rec.get("params"),
            "size_mb": row["size_mb"], "latency_ms": row["latency_ms"], "latency_p90_ms": row["latency_p90_ms"],
            "latency_method": row["latency_method"], "variant_method": row["method"], "spec": rec.get("spec"),
            "labels": [data.id2label[i] for i in sorted(data.id2label)] if data.id2label else [],
            "na_threshold": row["metrics"].get("na_threshold") if data.version_2 else None}, trial_dir)
    return rows


def package(cfg: JobConfig, trial: int | None = None, scenario: str | None = None, within: float = 1.0,
            precision: str | None = None, name: str = DEFAULT_MODEL_NAME, progress: bool = True) -> dict[str, Any]:
    """Store one trial's variant in the BentoML model store; returns {tag, meta, path}."""
    import bentoml  # NOTE: here, not at the top: heavy, and only packaging needs it (`compress export` does not)

    rec = resolve_trial(cfg, trial, scenario, within)
    precision = precision or rec.get("precision") or "fp32"
    canonical_precision(precision)  # a VariantError naming the choices, before any data is read
    data = _data(cfg, Path(rec["dir"]))
    [row] = export_variants(cfg, rec, [precision], progress=progress, data=data)
    metric = cfg.task.primary_metric
    na_threshold = row["metrics"].get("na_threshold") if data.version_2 else None
    labels = [data.id2label[i] for i in sorted(data.id2label)] if data.id2label else \
        [str(i) for i in range(data.num_labels)] if cfg.task.type != "qa" else []
    meta = {
        "run": cfg.name, "trial": rec["number"], "scenario": rec.get("scenario"), "baseline": rec.get("baseline"),
        "feasible": rec.get("feasible"), "precision": precision, "config_hash": config_hash(cfg),
        "task": {"type": cfg.task.type, "text_columns": list(cfg.task.text_columns)},
        "labels": labels, "version_2": data.version_2, "na_threshold": na_threshold,
        "data": {"max_seq_length": cfg.data.max_seq_length, "doc_stride": cfg.data.doc_stride,
                 "max_answer_length": data.max_answer_length, "n_best": data.n_best},
        "metric": metric, "metric_value": row["metrics"].get(metric), "metrics": row["metrics"],
        "metric_method": row["metric_method"], "params": rec.get("params"), "size_mb": row["size_mb"],
        "latency_ms": row["latency_ms"], "latency_p90_ms": row["latency_p90_ms"],
        "latency_method": row["latency_method"], "variant_method": row["method"],
        "spec": rec.get("spec"), "packaged": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "promoted": bool(rec.get("promoted")), "train_rows": rec.get("train_rows"), "source_dir": rec.get("dir"),
    }
    deployed_same = Path(rec.get("onnx") or "").resolve() == (Path(row["dir"]) / "model.onnx").resolve()
    if rec.get("latency_source") == "confirmed" and deployed_same:
        # The figure the frontier was chosen on: this very file, timed with the teacher by the confirmation pass.
        meta["latency_confirmed"] = {k: rec.get(k) for k in ("latency_ms", "latency_ci95_ms", "latency_ratio",
                                                              "latency_ratio_ci95")} | {
            "at": (rec.get("confirmation") or {}).get("at"), "rounds": (rec.get("confirmation") or {}).get("rounds"),
            "method": "compress.search.confirm: timed with the teacher and the other frontier candidates, "
                      "interleaved; median and bootstrap 95% interval over rounds"}
    if data.test is not None:  # the packaged file on the held-out split: from the trial's cache when it is that file

        test = cached_score(Path(row["dir"]) / "model.onnx", Path(rec["dir"]) / CACHE_NAME, data,
                            cfg.search.latency.threads, write=False)
        meta["test"] = heldout_block(test)
        meta["test_metric_value"] = test["metrics"].get(metric)
    flat = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) and v is not None}
    flat["task"] = cfg.task.type
    src = Path(row["dir"])
    with bentoml.models.create(name, labels={"run": cfg.name, "trial": str(rec["number"]), "precision": precision,
                                             "task": cfg.task.type}, metadata=flat) as bm:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, Path(bm.path) / f.name)
        (Path(bm.path) / "compress.json").write_text(json.dumps(meta, indent=2, default=str))
        write_model_card(bm.path, cfg, meta, rec["dir"])  # README.md: the Hugging Face model card
    return {"tag": str(bm.tag), "meta": meta, "path": str(bm.path)}


def describe(meta: dict[str, Any]) -> str:
    """One paragraph on a packaged model, for the command line."""
    lat = meta["latency_method"]
    seq = lat.get("seq_len")
    return (f"trial {meta['trial']} ({meta['precision']}): {meta['metric']} {meta['metric_value']:.4f} on the eval "
            f"set, {meta['params']:,} parameters, {meta['size_mb']:.1f} MB, {meta['latency_ms']:.2f} ms median "
            f"(ONNX Runtime, batch {lat.get('batch_size')}, {'eval-set lengths' if seq == 'eval-lengths' else seq}, "
            f"{lat.get('threads')} threads, single-model protocol)"
            + (f"; confirmed with the teacher: {c['latency_ms']:.2f} ms [{c['latency_ci95_ms'][0]:.2f}, "
               f"{c['latency_ci95_ms'][1]:.2f}], {c['latency_ratio']:.3f}x the teacher's latency "
               f"[{c['latency_ratio_ci95'][0]:.3f}, {c['latency_ratio_ci95'][1]:.3f}]"
               if (c := meta.get("latency_confirmed")) else "")
            + (f"; no-answer threshold {meta['na_threshold']:.3f}"
                                                 if meta.get("na_threshold") is not None else "")
            + (f"; {meta['metric']} {meta['test_metric_value']:.4f} on the held-out test set "
               f"({meta['test']['rows']} rows, never seen by the search)"
               if meta.get("test_metric_value") is not None else ""))

