"""Deployable variants of an exported student: ONNX fp32, ONNX Runtime graph-optimised, dynamic and static int8.

`make_variant(fp32_dir, out_dir, precision)` writes a folder that loads with Optimum's ORTModelFor* (model.onnx,
config.json, tokenizer). `measure_variants(...)` then re-measures each variant's task metric on the eval set
(never assumed from the fp32 model), its latency with the search's protocol and its size on disk. Precisions:
fp32, optimized, int8-dynamic (alias int8, its name before static int8 existed; folder onnx-int8) and int8-static.

- **optimized**: ONNX Runtime's transformer optimizer (`onnxruntime.transformers.optimizer.optimize_model`,
  model_type "bert", opt_level 0 so the file stays portable across CPUs; ONNX Runtime applies its own
  graph optimisations at load). Heads and hidden size are read from each layer's graph (num_heads=0,
  hidden_size=0), so head-pruned layers with different head counts each fuse into an Attention node. The
  fused-operator counts are recorded; outputs must match fp32 within `atol`.
- **int8-dynamic** (int8): dynamic quantisation (`onnxruntime.quantization.quantize_dynamic`: int8 weights,
  activations quantised per call) of the optimised graph, so attention becomes QAttention. Its outputs differ from
  fp32 by design; the difference is recorded and the metric on the eval set is what tells whether it is usable.
- **int8-static**: QDQ static quantisation (`quantize_static`) calibrated on training rows (`calibration_feeds`:
  a seeded sample of the training split, batched and trimmed as training batches are; never eval rows), with
  MinMax (default), Entropy or Percentile ranges. Weights int8, symmetric, per output channel; activations uint8,
  per tensor, with ranges fixed at calibration. Why these choices (measured on all-MiniLM-L6 with a classifier
  head, ONNX Runtime 1.31 on an AVX2 CPU):
  - Source graph: the fp32 export, not the optimised one. The fused Attention node has no QDQ form, so on the
    optimised graph Q/K/V stay fp32 and the file ran no faster than fp32; on the export every weight MatMul
    becomes MatMulIntegerToFloat at load, as fast as int8-dynamic. The fused graph would also need
    `quant_pre_process` (its contrib ops have no ONNX shape inference, and quantize_static fails untyped); the
    export needs none: ONNX shape inference, which quantize_static runs, types it, and symbolic shape inference
    stops on it ("Incomplete symbolic shape inference"), so no pre-processing is run.
  - uint8 activations: what ONNX Runtime recommends for x86 CPUs; with int8 activations half the MatMuls were
    left unfused and the model ran slower than fp32.
  - Quantised: the inputs of weight MatMul/Gemm nodes and the embedding tables (Gather). Kept float: MatMul
    outputs (quantising them took the error from 0.16 to 0.34 relative L2 on the [CLS] vector), the attention
    products of two activations (QK^T, probs·V: their range varies most from input to input), and the
    residual adds and LayerNorms, which read the float LayerNorm output instead of its quantised copy (0.16 to
    0.12; dynamic int8 gives 0.21). reduce_range off, as for int8-dynamic (it was worse on AVX2 here).
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

__all__ = ["ALIASES", "CALIBRATION_METHODS", "PRECISIONS", "Calibration", "Variant", "VariantError",
           "calibration_feeds", "canonical_precision", "make_variant", "compare_onnx", "measure_variants"]

PRECISIONS = ("fp32", "optimized", "int8-dynamic", "int8-static")
ALIASES = {"int8": "int8-dynamic"}  # the name before int8-static: configs, trial records and onnx-int8 folders use it
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# trials/<n>/<folder>; int8-dynamic keeps the folder it had as "int8", so existing trials resolve to their files
_FOLDERS = {"fp32": "onnx", "optimized": "onnx-optimized", "int8-dynamic": "onnx-int8",
            "int8-static": "onnx-int8-static"}
log = logging.getLogger(__name__)


class VariantError(ValueError):
    """A variant cannot be made, or its outputs stray from the fp32 model's beyond the tolerance."""


def canonical_precision(precision: str) -> str:
    """The variant a precision name makes (an alias resolved); a VariantError naming the choices for any other."""
    if precision in PRECISIONS:
        return precision
    if precision in ALIASES:
        return ALIASES[precision]
    raise VariantError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)} "
                       f"({', '.join(f'{a} = {p}' for a, p in ALIASES.items())})")


@dataclass(frozen=True)
class Calibration:
    """What static int8 calibrates on: batches of training rows, and how their activation ranges are read."""

    batches: tuple[dict[str, np.ndarray], ...]  # model inputs, int64 (B, T), T the batch's longest row
    method: str = "minmax"  # one of CALIBRATION_METHODS
    source: str = "training split"  # where the rows come from, recorded with the variant

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise VariantError(f"calibration method={self.method!r}: use one of {', '.join(CALIBRATION_METHODS)}")
        if not self.batches:
            raise VariantError("calibration has no batches; give it at least one batch of training rows")

    @property
    def rows(self) -> int:
        return sum(len(b["input_ids"]) for b in self.batches)


def calibration_feeds(split, rows: int = 256, batch_size: int = 16, method: str = "minmax",
                      seed: int = 0) -> Calibration:
    """At most `rows` rows of `split` (the training split), drawn with `seed`, in batches of `batch_size` trimmed to
    their longest row as training batches are (Split.batch)."""
    if rows < 1 or batch_size < 1:
        raise VariantError(f"calibration rows={rows}, batch_size={batch_size}: both must be at least 1")
    n = min(rows, len(split))
    if n == 0:
        raise VariantError(f"the {split.name} split is empty; static int8 needs training rows to calibrate on")
    # NOTE: a sample, not the first rows: a split in source order may be sorted (by label, by length).
    idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    batches = tuple({k: v.numpy().astype(np.int64) for k, v in split.batch(idx[i:i + batch_size], labels=False).items()}
                    for i in range(0, n, batch_size))
    return Calibration(batches, method, f"{split.name} split: {n:,} of {len(split):,} rows, drawn with seed {seed}, "
                                        f"batches of {batch_size} trimmed to their longest row")


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


class _CalibrationReader:
    """Calibration batches for quantize_static, fed one at a time (a CalibrationDataReader by its methods)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _float_residuals(model: onnx.ModelProto) -> int:
    """Point every reader of a quantised LayerNorm output other than MatMul/Gemm (the residual add, the next
    LayerNorm, the [CLS] Gather) back at the float tensor; how many inputs were changed.

    QDQ gives all readers of a quantised tensor its quantised copy; dynamic int8 quantises only what a MatMul
    reads, and so does this. ONNX Runtime still fuses each Q -> DQ -> MatMul into MatMulIntegerToFloat.
    """
    made_by = {o: n for n in model.graph.node for o in n.output}
    float_of = {}  # DequantizeLinear output -> the LayerNorm output it stands for
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in made_by:
            continue
        q = made_by[n.input[0]]
        if q.op_type == "QuantizeLinear" and q.input[0] in made_by and \
                made_by[q.input[0]].op_type == "LayerNormalization":
            float_of[n.output[0]] = q.input[0]
    changed = 0
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm"):
            continue
        for i, name in enumerate(n.input):
            if name in float_of:
                n.input[i] = float_of[name]
                changed += 1
    return changed


def _quantize_static(src_onnx: Path, dst_onnx: Path, calibration: Calibration) -> dict[str, Any]:
    import contextlib
    import io

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # NOTE: lazy

    model = onnx.load(str(src_onnx))
    weights = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input]
    missing = sorted({n for n in inputs if n not in calibration.batches[0]})
    if missing:
        raise VariantError(f"the calibration batches lack the model inputs {missing} of {src_onnx}; build them with "
                           "calibration_feeds(data.train)")
    # the attention products of two activations (QK^T, probs·V): kept float, see the module docstring
    two_activations = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration.method]
    reader = _CalibrationReader([{k: b[k] for k in inputs} for b in calibration.batches])
    # NOTE: CalibStridedMinMax=1 hands the calibrator one batch at a time: memory stays one batch's activations,
    # and the histogram methods (entropy, percentile) need batches of one shape, which trimmed batches are not.
    # The histogram calibrators print a line per batch to stdout; it is swallowed.
    with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(src_onnx), str(dst_onnx), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm", "Gather"], per_channel=True, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=two_activations, calibrate_method=method,
                        extra_options={"CalibStridedMinMax": 1,
                                       "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]})
    quantized = onnx.load(str(dst_onnx))
    float_inputs = _float_residuals(quantized)
    onnx.save(quantized, str(dst_onnx))
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "source": "the fp32 export",
            "pre_processing": "none (the export's standard ops are typed by ONNX shape inference)",
            "calibration": {"method": calibration.method, "rows": calibration.rows,
                            "batches": len(calibration.batches), "source": calibration.source},
            "weight_type": "int8", "weights": "symmetric, per output channel", "per_channel": True,
            "activation_type": "uint8", "activations": "asymmetric, per tensor, ranges fixed by calibration",
            "reduce_range": False, "op_types_quantized": ["MatMul", "Gemm", "Gather"],
            "kept_float": {"matmul_outputs": True, "activation_by_activation_matmuls": len(two_activations),
                           "layernorm_readers_other_than_matmul": float_inputs}}


def make_variant(fp32_dir: str | Path, out_dir: str | Path, precision: str, atol: float = 1e-3,
                 calibration: Calibration | None = None) -> Variant:
    """Write the `precision` variant of the ONNX model in fp32_dir (a folder from export_onnx) to out_dir.

    int8-static needs `calibration`: training rows to read activation ranges from (calibration_feeds(data.train)).
    """
    start = time.perf_counter()
    src, out = Path(fp32_dir), Path(out_dir)
    precision = canonical_precision(precision)
    if not (src / "model.onnx").is_file():
        raise VariantError(f"{src} has no model.onnx; export the trial first (compress.deploy.export.export_onnx)")
    if precision == "int8-static" and calibration is None:
        raise VariantError("precision='int8-static' needs calibration data: pass calibration=calibration_feeds("
                           "data.train, rows, batch_size, method) (training rows, never eval rows)")
    if precision == "int8-static" and (src / "config.json").is_file():
        vocab = int(json.loads((src / "config.json").read_text())["vocab_size"])
        top = max(int(b["input_ids"].max()) for b in calibration.batches)
        if top >= vocab:  # e.g. rows tokenised for the teacher, the model's vocabulary pruned
            raise VariantError(f"calibration token id {top} is outside the model's vocabulary ({vocab} tokens, "
                               f"{src / 'config.json'}): featurise the training rows with the model's own tokenizer")
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
        if precision == "int8-static":
            method = _quantize_static(src / "model.onnx", tmp / "static.onnx", calibration)
            (tmp / "static.onnx").replace(out / "model.onnx")
        else:
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
    """trials/<n>/onnx for fp32 (the search's export), trials/<n>/onnx-<precision> for the others (int8-dynamic and
    its alias int8: onnx-int8)."""
    return trial_dir / _FOLDERS[canonical_precision(precision)]


def measure_variants(trial_dir: str | Path, data, latency_fn, precisions=PRECISIONS, threads: int = 2,
                     atol: float = 1e-3, progress: bool = False,
                     calibration: Calibration | None = None) -> list[dict[str, Any]]:
    """Make each variant of a trial's fp32 export, then re-measure metric (eval set), latency and size.

    `latency_fn(onnx_path)` runs the latency protocol (the search's, so figures compare). int8-static calibrates on
    `calibration`, by default calibration_feeds(data.train). Writes trial_dir/variants.json (rows of other
    precisions measured before are kept) and returns the new rows, named by canonical precision.
    """
    trial_dir = Path(trial_dir)
    precisions = list(dict.fromkeys(canonical_precision(p) for p in precisions))  # int8 and int8-dynamic: once
    if "int8-static" in precisions and calibration is None:
        calibration = calibration_feeds(data.train)
    rows = []
    for precision in precisions:
        v = make_variant(variant_dir(trial_dir, "fp32"), variant_dir(trial_dir, precision), precision, atol,
                         calibration)
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
    merged = [{**r, "precision": canonical_precision(r["precision"])} for r in kept  # rows written as "int8" too
              if canonical_precision(r["precision"]) not in precisions] + rows
    merged.sort(key=lambda r: PRECISIONS.index(r["precision"]))
    write_json(path, {"variants": merged})
    return rows
