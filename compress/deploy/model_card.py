"""A Hugging Face model card (README.md with YAML metadata) for a packaged model or an exported variant.

Built with huggingface_hub's ModelCardData (the metadata and `model-index` with the eval and held-out test
results) and a body a person reads before shipping the model: the task and labels, the teacher, the data and
its splits, how the student was made (architecture, distillation settings, precision, vocabulary), every metric
with how it was measured, the latency with its interval and the machine it was timed on, and what the model is
for and where it stops being trustworthy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import JobConfig, to_dict
from ..env import environment

__all__ = ["model_card", "write_model_card"]

PIPELINE = {"classification": "text-classification", "pair_classification": "text-classification",
            "regression": "text-classification", "qa": "question-answering"}
HEADLINE = ("f1", "exact", "accuracy", "pearson", "mcc")  # the metrics listed in the model-index


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _sources(sources) -> list[str]:
    out = []
    for s in sources:
        bits = [s.path] + ([f"articles {s.articles}"] if s.articles else []) + \
            ([f"{s.limit:,} rows (seed {s.sample_seed})" if s.sample_seed is not None else f"first {s.limit:,} rows"]
             if s.limit else [])
        out.append(", ".join(str(b) for b in bits))
    return out


def model_card(cfg: JobConfig, meta: dict[str, Any], teacher: dict[str, Any] | None = None,
               distill: dict[str, Any] | None = None) -> str:
    """The README.md text for the model described by `meta` (compress.json's content); `distill` is the student's
    own distillation settings (its metrics.json "distill_config"; the job's distill: section when absent)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    task = cfg.task.type
    metric = meta.get("metric")
    numeric = {k: v for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    test = meta.get("test") or {}

    def results_of(values: dict[str, Any], split: str, label: str) -> list[Any]:
        return [EvalResult(task_type=PIPELINE[task], dataset_type="custom", dataset_name=cfg.name, dataset_split=split,
                           metric_type=k, metric_value=float(v), metric_name=f"{k} ({label})")
                for k, v in values.items() if k in (metric, *HEADLINE) and isinstance(v, (int, float))]

    results = results_of(numeric, "eval", "eval") + results_of(test, "test", "held-out test")
    name = f"{cfg.name}-trial{meta.get('trial')}-{meta.get('precision')}"
    data = ModelCardData(
        model_name=name, library_name="onnx", pipeline_tag=PIPELINE[task], base_model=None,
        tags=["compress", "distillation", "onnx", str(meta.get("precision")), task],
        metrics=sorted({r.metric_type for r in results}) or None, eval_results=results or None)
    lat = meta.get("latency_method") or {}
    shape = "the eval set's own lengths" if lat.get("seq_len") == "eval-lengths" else f"length {lat.get('seq_len')}"
    kd = distill or to_dict(cfg.distill)
    kd_text = ", ".join(f"{k} {v}" for k, v in kd.items() if (k.startswith("alpha") or k == "temperature") and v)
    if (kd.get("augment") or {}).get("factor"):
        kd_text += f", augmentation x{kd['augment']['factor']:g} (teacher-labelled)"
    conf = meta.get("latency_confirmed")
    env = environment()
    spec = meta.get("spec") or {}
    layers = spec.get("layers") or f"chosen by layer_selection {spec.get('layer_selection', 'even')}"
    teacher = teacher or {}
    labels = meta.get("labels") or []
    lines = [
        f"# {name}", "",
        f"A student compressed by `compress` from the teacher `{cfg.teacher.model}` for {task.replace('_', ' ')}, "
        f"exported to ONNX ({meta.get('precision')}). Run `{cfg.name}`, trial {meta.get('trial')}"
        + (f", picked by the scenario `{meta['scenario']}`" if meta.get("scenario") else "") + ".", "",
        "## Task", "",
        f"- task: {task}" + (f"; text columns: {', '.join(cfg.task.text_columns)}" if task != "qa" else ""),
        *([f"- labels (id order): {', '.join(labels)}"] if labels else []),
        *([f"- SQuAD 2.0: abstains when the no-answer odds exceed {meta['na_threshold']:.4g} (chosen on the eval "
           "split)"] if meta.get("na_threshold") is not None else []),
        f"- input: up to {cfg.data.max_seq_length} tokens" + (f", contexts in windows with stride {cfg.data.doc_stride}"
                                                             if task == "qa" else ""), "",
        "## Teacher and data", "",
        f"- teacher: `{cfg.teacher.model}`" + (f", {teacher.get('metric')} {_fmt(teacher.get('value'))} on the eval "
                                                 "split" if teacher.get("value") is not None else ""),
        f"- training data: {'; '.join(_sources(cfg.data.train))}",
        f"- eval data (selection): {'; '.join(_sources(cfg.data.eval)) or 'carved from train (data.split)'}",
        f"- held-out test data: {'; '.join(_sources(cfg.data.test)) or ('carved from train' if cfg.data.has_test else 'none')}",
        "",
        "## How it was compressed", "",
        f"- architecture: {spec.get('num_layers', '-')} layers (teacher layers {layers}), "
        f"heads {spec.get('heads') or 'all'}, FFN {spec.get('intermediate_size') or 'all'}, width "
        f"{spec.get('hidden_size') or 'as the teacher'}; {meta.get('params') or 0:,} parameters, "
        f"{_fmt(meta.get('size_mb'), '.1f')} MB",
        f"- distillation: {kd_text}",
        f"- precision: {meta.get('precision')} ({(meta.get('variant_method') or {}).get('tool', 'export_onnx')})",
        *([f"- vocabulary: pruned ({spec.get('vocab_pruning')})"] if spec.get("vocab_pruning") else []), "",
        "## Metrics", "",
        "| metric | eval | held-out test |", "|---|---|---|",
        *[f"| {k} | {_fmt(v, 'g' if 'total' in k else '.4f')} | {_fmt(test.get(k), 'g' if 'total' in k else '.4f')} |"
          for k, v in numeric.items()], "",
        f"Eval: {meta.get('metric_method') or '-'}. Test: {test.get('method') or 'no held-out split'}.", "",
        "## Latency", "",
        f"- {_fmt(meta.get('latency_ms'), '.3f')} ms median per call (p90 {_fmt(meta.get('latency_p90_ms'), '.3f')}), "
        f"ONNX Runtime, batch {lat.get('batch_size')}, "
        f"{shape}, "
        f"{lat.get('threads')} threads",
        *([f"- confirmed with the teacher: {conf['latency_ms']:.3f} ms [{conf['latency_ci95_ms'][0]:.3f}, "
           f"{conf['latency_ci95_ms'][1]:.3f}] (95% interval), {conf['latency_ratio']:.3f}x the teacher's latency "
           f"[{conf['latency_ratio_ci95'][0]:.3f}, {conf['latency_ratio_ci95'][1]:.3f}]"] if conf else []),
        f"- machine: {env['cpu']}, {env['cores']} cores; onnxruntime {env['versions'].get('onnxruntime')}", "",
        "## Intended use and limits", "",
        f"- For {task.replace('_', ' ')} on text like the training data above; the metrics hold for data drawn "
        "like the eval and test splits, not for other domains or languages.",
        f"- Inputs longer than {cfg.data.max_seq_length} tokens are truncated"
        + (" (QA contexts are read in windows)" if task == "qa" else "") + ".",
        "- Before shipping, read the error analysis in the run's report (`compress report`) and time the model on "
        "the machine you deploy to: the latency above is this machine's.",
        *(["- Integer quantisation changes outputs slightly; its metric above is measured on this file."]
          if "int8" in str(meta.get("precision")) else []),
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    return str(card)


def write_model_card(folder: str | Path, cfg: JobConfig, meta: dict[str, Any], trial_dir: str | Path | None = None,
                     teacher: dict[str, Any] | None = None) -> Path:
    """folder/README.md; the trial's student folder (trial_dir/model) supplies its distillation settings."""
    distill = None
    if trial_dir is not None and (m := Path(trial_dir) / "model" / "metrics.json").is_file():
        try:
            distill = json.loads(m.read_text()).get("distill_config")
        except (OSError, ValueError):
            distill = None
    path = Path(folder) / "README.md"
    path.write_text(model_card(cfg, meta, teacher, distill))
    return path
