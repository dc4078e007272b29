"""Deployable variants of an exported student: ONNX fp32, ONNX Runtime graph-optimised, and dynamic int8.

`make_variant(fp32_dir, out_dir, precision)` writes a folder that loads with Optimum's ORTModelFor* (model.onnx,
config.json, tokenizer). `measure_variants(...)` then re-measures each variant's task metric on the eval set
(never assumed from the fp32 model), its latency with the search's protocol and its size on disk.

- **optimized**: ONNX Runtime's transformer optimizer (`onnxruntime.transformers.optimizer.optimize_model`,
  model_type "bert", opt_level 0 so the file stays portable across CPUs; ONNX Runtime applies its own
  graph optimisations at load). Heads and hidden size are read from each layer's graph (num_heads=0,
  hidden_size=0), so head-pruned layers with different head counts each fuse into an Attention node. The
  fused-operator counts are recorded; outputs must match fp32 within `atol`.
- **int8**: dynamic quantisation (`onnxruntime.quantization.quantize_dynamic`: int8 weights, activations
  quantised per call) of the optimised graph, so attention becomes QAttention. Its outputs differ from fp32
  by design; the difference is recorded and the metric on the eval set is what tells whether it is usable.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ..artifacts import write_json
from ..model.inference import onnx_session, predict_onnx, score_outputs
from .export import max_abs_diff, random_batch
from .measure import onnx_size

__all__ = ["PRECISIONS", "Variant", "VariantError", "make_variant", "compare_onnx", "measure_variants"]

PRECISIONS = ("fp32", "optimized", "int8")
log = logging.getLogger(__name__)


class VariantError(ValueError):
    """A variant cannot be made, or its outputs stray from the fp32 model's beyond the tolerance."""


@dataclass(frozen=True)
class Variant:
    precision: str
    dir: Path
    path: Path  # dir/model.onnx
    size_bytes: int
    max_abs_diff: dict[str, float]  # per output, against the fp32 ONNX model on validation batches
    method: dict[str, Any] = field(default_factory=dict)  # tool, settings, fused operators
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["dir"], d["path"] = str(self.dir), str(self.path)
        return d


def _copy_side_files(src: Path, dst: Path) -> None:
    """config.json, tokenizer files and anything else that is not the ONNX graph or its data."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx") and f.suffix != ".onnx":
            shutil.copy2(f, dst / f.name)


def _num_layers(src: Path) -> int | None:
    cfg = src / "config.json"
    return int(json.loads(cfg.read_text())["num_hidden_layers"]) if cfg.is_file() else None


def _validation_feeds(src: Path) -> list[dict[str, np.ndarray]]:
    config = json.loads((src / "config.json").read_text()) if (src / "config.json").is_file() else {}
    vocab, max_len = int(config.get("vocab_size", 30522)), int(config.get("max_position_embeddings", 512))
    return [random_batch(2, min(16, max_len), vocab, 0), random_batch(3, min(37, max_len), vocab, 1)]


def compare_onnx(reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Worst |candidate - reference| per output over the feeds (ONNX Runtime, CPU)."""
    ref = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
    names = [o.name for o in ref.get_outputs()]
    if [o.name for o in cand.get_outputs()] != names:
        raise VariantError(f"{candidate} has outputs {[o.name for o in cand.get_outputs()]}, the fp32 model {names}")
    worst: dict[str, float] = {}
    for feed in feeds:
        a = ref.run(None, {i.name: feed[i.name] for i in ref.get_inputs()})
        b = cand.run(None, {i.name: feed[i.name] for i in cand.get_inputs()})
        for name, x, y in zip(names, a, b):
            if x.shape != y.shape:
                raise VariantError(f"{candidate}: output {name!r} has shape {y.shape}, the fp32 model {x.shape}")
            worst[name] = max(worst.get(name, 0.0), max_abs_diff(y, x))
    return worst


@contextmanager
def _quiet_root_logger():
    """ONNX Runtime's optimizer and quantizer log through the root logger; only errors get through here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# NOTE: the optimizer and the quantizer are imported when a variant is made, not at the top: both pull in much of
# ONNX Runtime's Python tooling, which nothing else (the search, validate) needs.
def _optimize(src_onnx: Path, dst_onnx: Path) -> dict[str, Any]:
    from onnxruntime.transformers.optimizer import optimize_model

    # NOTE: with num_heads=0/hidden_size=0 the fusion reads both from each layer's Reshape and weight shapes,
    # which is what lets a layer keeping 1 head and one keeping 4 both fuse. It logs a line per layer whose
    # attention width differs from the model's hidden size; that is expected for pruned heads.
    with _quiet_root_logger():
        model = optimize_model(str(src_onnx), model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
                               use_gpu=False)
        fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        model.save_model_to_file(str(dst_onnx))
    return {"tool": "onnxruntime.transformers.optimizer.optimize_model", "model_type": "bert", "opt_level": 0,
            "num_heads": "per layer, from the graph", "fused_operators": fused}


def _quantize(src_onnx: Path, dst_onnx: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # NOTE: lazy, as above

    with _quiet_root_logger():  # "consider pre-processing" advice aimed at static CNN quantisation
        # DefaultTensorType: fused contrib ops (Attention, SkipLayerNormalization) have no ONNX shape inference;
        # their outputs are float32.
        quantize_dynamic(str(src_onnx), str(dst_onnx), weight_type=QuantType.QInt8, per_channel=False,
                         reduce_range=False, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8", "activations":
            "uint8, quantised dynamically per call", "per_channel": False, "reduce_range": False,
            "source": "the optimized graph"}


def make_variant(fp32_dir: str | Path, out_dir: str | Path, precision: str, atol: float = 1e-3) -> Variant:
    """Write the `precision` variant of the ONNX model in fp32_dir (a folder from export_onnx) to out_dir."""
    start = time.perf_counter()
    src, out = Path(fp32_dir), Path(out_dir)
    if precision not in PRECISIONS:
        raise VariantError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if not (src / "model.onnx").is_file():
        raise VariantError(f"{src} has no model.onnx; export the trial first (compress.deploy.export.export_onnx)")
    if precision == "fp32":
        if out.resolve() != src.resolve():
            _copy_side_files(src, out)
            shutil.copy2(src / "model.onnx", out / "model.onnx")
        return Variant("fp32", out, out / "model.onnx", onnx_size(out / "model.onnx"), {},
                       {"tool": "export_onnx (validated against PyTorch)"}, time.perf_counter() - start)
    if out.resolve() == src.resolve():
        raise VariantError(f"out_dir {str(out)!r} is the fp32 folder; write the {precision} variant elsewhere")
    _copy_side_files(src, out)
    tmp = Path(tempfile.mkdtemp(prefix="variant-", dir=out))
    try:
        method = _optimize(src / "model.onnx", tmp / "optimized.onnx")
        layers = _num_layers(src)
        fused_attention = method["fused_operators"].get("Attention", 0)
        if layers is not None and fused_attention != layers:
            log.warning("attention fusion fused %d of %d layers of %s; the rest run unfused", fused_attention,
                        layers, src)
        method["attention_layers_fused"] = f"{fused_attention}/{layers}"
        if precision == "optimized":
            (tmp / "optimized.onnx").replace(out / "model.onnx")
        else:
            method = {**_quantize(tmp / "optimized.onnx", out / "model.onnx"), "optimizer": method}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    method["onnxruntime"] = ort.__version__
    diffs = compare_onnx(src / "model.onnx", out / "model.onnx", _validation_feeds(src))
    if precision == "optimized":
        bad = {k: v for k, v in diffs.items() if not v <= atol}
        if bad:
            raise VariantError(f"the optimized model {out / 'model.onnx'} differs from fp32 by "
                               f"{max(bad.values()):.3g} on {sorted(bad)} (atol={atol:g}); serve the fp32 variant")
    return Variant(precision, out, out / "model.onnx", onnx_size(out / "model.onnx"), diffs, method,
                   time.perf_counter() - start)


def serving_threshold(metrics: dict[str, Any], preds: list[Any]) -> float:
    """The no-answer threshold a server should use: the one that gave best_exact on the eval set.

    The official script reports 0.0 when abstaining on every question is best (its starting point); a server
    needs a threshold that really abstains on all of them, so that case becomes just below the lowest
    null_odds seen. Otherwise the reported threshold reproduces best_exact (abstain when null_odds > it).
    """
    best = float(metrics["best_exact_thresh"])
    odds = [float(p.null_odds) for p in preds if np.isfinite(p.null_odds)]
    abstain_all = 100.0 * metrics.get("NoAns_total", 0) / max(1, metrics.get("total", 1))
    if odds and best == 0.0 and abs(metrics["best_exact"] - abstain_all) < 1e-9:
        return min(odds) - 1.0
    return best


def variant_dir(trial_dir: Path, precision: str) -> Path:
    """trials/<n>/onnx for fp32 (the search's export), trials/<n>/onnx-<precision> for the others."""
    return trial_dir / "onnx" if precision == "fp32" else trial_dir / f"onnx-{precision}"


def measure_variants(trial_dir: str | Path, data, latency_fn, precisions=PRECISIONS, threads: int = 2,
                     atol: float = 1e-3, progress: bool = False) -> list[dict[str, Any]]:
    """Make each variant of a trial's fp32 export, then re-measure metric (eval set), latency and size.

    `latency_fn(onnx_path)` runs the latency protocol (the search's, so figures compare). Writes
    trial_dir/variants.json (rows of other precisions measured before are kept) and returns the new rows.
    """
    trial_dir = Path(trial_dir)
    rows = []
    for precision in precisions:
        v = make_variant(variant_dir(trial_dir, "fp32"), variant_dir(trial_dir, precision), precision, atol)
        t0 = time.perf_counter()
        outputs = predict_onnx(onnx_session(v.path, threads), data.eval, data.task.type, progress=progress)
        metrics, preds = score_outputs(data, data.eval, outputs)
        if data.version_2:  # the same outputs, scored again at the threshold a server will use
            metrics, _ = score_outputs(data, data.eval, outputs, serving_threshold(metrics, preds))
        eval_s = time.perf_counter() - t0
        lat = latency_fn(v.path)
        rows.append({"precision": precision, "dir": str(v.dir), "size_mb": v.size_bytes / 1e6,
                     "metrics": {k: x for k, x in metrics.items() if isinstance(x, (int, float))},
                     "metric_method": f"ONNX Runtime on {v.path.name}, full eval split ({len(data.eval.examples)} "
                                      "rows), task metrics as in the search",
                     "latency_ms": lat["median_ms"], "latency_p90_ms": lat["p90_ms"], "latency_method": lat,
                     "max_abs_diff_vs_fp32": v.max_abs_diff, "method": v.method,
                     "seconds": {"make": round(v.seconds, 2), "evaluate": round(eval_s, 2)}})
    path = trial_dir / "variants.json"
    kept = json.loads(path.read_text())["variants"] if path.is_file() else []
    merged = [r for r in kept if r["precision"] not in precisions] + rows
    merged.sort(key=lambda r: PRECISIONS.index(r["precision"]))
    write_json(path, {"variants": merged})
    return rows
