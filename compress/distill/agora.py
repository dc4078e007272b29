"""Agora fine-tuning (de Wynter, 2020, arXiv:2010.07990): close the gap between a small student and its
teacher by letting the teacher label new examples made from the ones the student gets wrong.

Given a student spec, the teacher, the training and validation splits, a set Θ of hyperparameter sets
(learning rate, weight decay, warm-up proportion, seed: `agora.thetas`) and a transformation ν
(compress.data.augment: word deletion, word swap, nearest-neighbour substitution in the teacher's embedding space),
each iteration:

1. trains one student per surviving θ, each from the same starting weights (the teacher's, by the spec), on
   the current training set, with the job's loss (`distill:` alpha_ce/alpha_task/temperature; the teacher's
   logits are the soft targets of every row, old and new);
2. evaluates each on the validation split and prunes Θ to the best `keep` share (at least one set);
3. takes the examples the best student gets wrong (`mistakes_from`: the validation split as in the paper, or
   the training split), makes `per_error` new examples from each with ν (and `replay` more passes of ν over the
   same errors), labels them with the teacher (classification: its argmax; regression: its value; QA: the answer
   span is kept exact and the teacher's start/end distributions are the soft targets), keeps the labels
   balanced (each label, or rounded value for regression, or answer/no-answer for QA, capped at the count of
   the rarest one present), and adds them to the training set;

until the best student is within `epsilon` points of the teacher on validation, or the budget ends
(`max_iterations`, `max_train_rows`, `max_seconds`), or no new example can be made. "Wrong" for regression
compares rounded values, as the Bort paper does; for QA it is an exact-match failure.

Output: the best student of the last iteration (a save_pretrained folder), the convergent θ, and a
per-iteration table (training rows, Θ kept, each θ's validation metric, the teacher's) in agora.json.

NOTE: the paper was not available offline; this follows its published description as summarised above. Where
the description leaves a choice open (which split supplies the errors, how balance is kept, what replay
repeats), the choice is a config key and is recorded in agora.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import JobConfig, ThetaConfig, to_dict
from ..data.augment import Nu
from ..data.features import TaskData
from ..model.inference import evaluate_model, predict_logits
from ..model.metrics import compute_exact, points
from ..model.student import build_student, param_count
from .augment import concat_splits, encode_split
from .devices import placed, resolve_device
from .jobs import save_run
from .loop import train

__all__ = ["AgoraResult", "balance", "prune_thetas", "run_agora", "stop_reason", "wrong_examples"]


@dataclass
class AgoraResult:
    out: Path
    theta: ThetaConfig
    table: list[dict[str, Any]]
    stopped: str
    metrics: dict[str, Any]


def prune_thetas(scores: dict[int, float], keep: float) -> list[int]:
    """Indices of the best ceil(keep * |Θ|) sets (at least one), best first; ties keep the earlier set."""
    n = max(1, math.ceil(keep * len(scores)))
    return sorted(scores, key=lambda i: (-scores[i], i))[:n]


def stop_reason(best_points: float, teacher_points: float, epsilon: float, iteration: int, max_iterations: int,
                rows: int, max_rows: int | None, elapsed: float, max_seconds: float | None) -> str | None:
    """Why Agora stops after this iteration, or None to go on."""
    if teacher_points - best_points <= epsilon:
        return f"within epsilon: {best_points:.2f} is {teacher_points - best_points:.2f} points from the teacher's " \
               f"{teacher_points:.2f} (epsilon {epsilon:g})"
    if iteration >= max_iterations:
        return f"budget: {max_iterations} iterations"
    if max_rows is not None and rows >= max_rows:
        return f"budget: {rows} training rows (max_train_rows {max_rows})"
    if max_seconds is not None and elapsed >= max_seconds:
        return f"budget: {elapsed:.0f} s (max_seconds {max_seconds:g})"
    return None


def balance(examples: list[Any], keys: list[Any], rng: np.random.Generator) -> list[Any]:
    """Keep every key (label) equally often: each capped at the count of the rarest key present."""
    groups: dict[Any, list[Any]] = {}
    for ex, k in zip(examples, keys):
        groups.setdefault(k, []).append(ex)
    if not groups:
        return []
    cap = min(len(v) for v in groups.values())
    out = []
    for k in sorted(groups, key=str):
        v = groups[k]
        pick = rng.permutation(len(v))[:cap]
        out += [v[i] for i in sorted(pick)]
    return out


def wrong_examples(task_type: str, examples: list[Any], predictions: list[Any]) -> list[Any]:
    """Examples the student gets wrong: classification by label, regression by rounded value, QA by exact match
    of the final answer (no answer counts as the empty string)."""
    if task_type == "qa":
        by_id = {p.qid: p for p in predictions}
        out = []
        for ex in examples:
            p = by_id.get(ex.qid)
            if p is None:
                continue
            answer = p.answer(0.0)
            gold = [t for t, _ in ex.answers] or [""]
            if not max(compute_exact(g, answer) for g in gold):
                out.append(ex)
        return out
    if task_type == "regression":
        return [ex for ex, p in zip(examples, predictions) if round(float(p)) != round(float(ex.label))]
    return [ex for ex, p in zip(examples, predictions) if int(p) != int(ex.label)]


def _make_new(ctx, nu, wrong: list[Any], ac, rng: np.random.Generator):
    """ν over the errors, teacher labels, balance; returns (split of new rows, teacher outputs on them)."""
    made = []
    for _ in range(1 + ac.replay):
        for ex in wrong:
            for _ in range(ac.per_error):
                new = nu.example(ex, rng)
                if new is not None:
                    made.append(new)
    if not made:
        return None, None
    task = ctx.cfg.task.type
    split = encode_split(ctx, "agora", made)
    with placed(ctx.teacher, resolve_device(ctx.cfg.distill.train.device, "distill.train.device")):
        out = predict_logits(ctx.teacher, split, task_type=task)
    if task == "qa":
        # Answer spans are kept exact; balance answerable against unanswerable questions.
        keys = [bool(ex.answers) for ex in made]
        keep = set(id(e) for e in balance(made, keys, rng))
    else:
        if task == "regression":
            labels = out["logits"].reshape(-1).astype(float)
            keys = [round(v) for v in labels]
        else:
            labels = out["logits"].argmax(axis=-1)
            keys = [int(v) for v in labels]
        made = [dataclasses.replace(ex, label=(float(v) if task == "regression" else int(v)))
                for ex, v in zip(made, labels)]
        keep = set(id(e) for e in balance(made, keys, rng))
    kept = [i for i, ex in enumerate(made) if id(ex) in keep]
    if not kept:
        return None, None
    # Re-encode the kept rows (their labels are the teacher's now) and reuse the teacher's outputs on them
    # rather than running the teacher a second time: features of the kept rows, in order.
    chosen = encode_split(ctx, "agora", [made[i] for i in kept])
    rows = (np.isin(split.arrays["example_index"], kept) if "example_index" in split.arrays
            else np.asarray(kept))
    if not np.array_equal(chosen.arrays["input_ids"], split.arrays["input_ids"][rows]):
        raise RuntimeError("agora: re-encoding the kept rows gave other features than the first encoding")
    return chosen, {k: np.asarray(v)[rows] for k, v in out.items()}


def run_agora(ctx, spec, out: Path, distill=None, progress: bool = True, lock_dir: Path | None = None) -> AgoraResult:
    """Agora for one student spec on the context's data; writes `out` (model, tokenizer, metrics.json, agora.json).

    `lock_dir`: every training step holds the measurement lock there (compress.distill.loop.train); None: no lock."""
    cfg: JobConfig = ctx.cfg
    ac = cfg.agora
    kd = distill or cfg.distill
    data = ctx.data
    metric = cfg.task.primary_metric
    teacher_value = float(ctx.teacher_metrics[metric])
    rng = np.random.default_rng(ac.seed)
    emb = ctx.teacher.get_input_embeddings().weight.detach().numpy()
    nu = Nu(ctx.tokenizer, emb, tuple(ac.transforms), ac.neighbours)
    train_split = data.train
    outputs = {k: np.asarray(v) for k, v in ctx.outputs.items()}
    alive = list(range(len(ac.thetas)))
    table: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    best_model = best_result = None
    best_theta = 0
    stopped = ""
    iteration = 0
    while True:
        iteration += 1
        current = TaskData(data.task, train_split, data.eval, data.num_labels, data.id2label, data.version_2,
                           data.n_best, data.max_answer_length)
        scores, results = {}, {}
        for i in alive:
            th = ac.thetas[i]
            n = len(train_split)
            total = kd.train.max_steps or max(1, math.ceil(kd.train.epochs * math.ceil(n / kd.train.batch_size)))
            tc = dataclasses.replace(kd.train, learning_rate=th.learning_rate, weight_decay=th.weight_decay,
                                     warmup_steps=int(round(th.warmup_proportion * total)), seed=th.seed,
                                     eval_every=0)
            model = build_student(ctx.teacher, spec, ctx.importance)
            res = train(model, current, tc, kd=kd, teacher_outputs=outputs, progress=progress,
                        desc=f"agora it{iteration} θ{i}", lock_dir=lock_dir)
            scores[i] = float(res.metrics[metric])
            results[i] = (model, res)
        alive = prune_thetas(scores, ac.keep)
        best_theta = alive[0]
        best_model, best_result = results[best_theta]
        del results
        best = scores[best_theta]
        row = {"iteration": iteration, "train_rows": len(train_split.examples), "train_features": len(train_split),
               "thetas_tried": {str(i): scores[i] for i in scores}, "thetas_kept": list(alive),
               "best_theta": best_theta, metric: best, "teacher": teacher_value,
               "gap_points": points(metric, teacher_value) - points(metric, best),
               "seconds": round(time.perf_counter() - t_start, 1)}
        reason = stop_reason(points(metric, best), points(metric, teacher_value), ac.epsilon, iteration,
                             ac.max_iterations, len(train_split.examples), ac.max_train_rows,
                             time.perf_counter() - t_start, ac.max_seconds)
        if reason is None:
            if ac.mistakes_from == "validation":
                wrong = wrong_examples(cfg.task.type, data.eval.examples, best_result.predictions)
            else:
                preds = evaluate_model(best_model, current, train_split)[1]
                wrong = wrong_examples(cfg.task.type, train_split.examples, preds)
            new_split, new_out = _make_new(ctx, nu, wrong, ac, rng)
            row["errors"] = len(wrong)
            row["new_rows"] = 0 if new_split is None else len(new_split.examples)
            if new_split is None:
                reason = "no new example could be made (no errors, or ν applies to none of them)"
            else:
                train_split = concat_splits(train_split, new_split)
                outputs = {k: np.concatenate([outputs[k], new_out[k]]) for k in outputs}
        table.append(row)
        if progress:
            print(f"agora iteration {iteration}: {row['train_rows']} rows, Θ kept {alive}, {metric} {best:.4f} "
                  f"(teacher {teacher_value:.4f}), {row.get('new_rows', 0)} new rows", flush=True)
        if reason is not None:
            stopped = reason
            break
    final = TaskData(data.task, train_split, data.eval, data.num_labels, data.id2label, data.version_2,
                     data.n_best, data.max_answer_length)
    head = "qa" if cfg.task.type == "qa" else "classification"
    extra = {"spec": spec.to_json(), "params": param_count(best_model.config, head, data.num_labels),
             "teacher": {"path": ctx.teacher_dir, "metric": teacher_value, "params": ctx.teacher_metrics.get("params")},
             "finetune": "agora", "theta": to_dict(ac.thetas[best_theta]), "agora_table": table,
             "agora_stopped": stopped, "agora_config": to_dict(ac), "distill_config": to_dict(kd),
             "wall_seconds": round(time.perf_counter() - t_start, 2), "version_2": data.version_2}
    save_run(out, best_model, ctx.tokenizer, final, best_result, extra)
    (out / "agora.json").write_text(json.dumps({"theta": to_dict(ac.thetas[best_theta]), "stopped": stopped,
                                                "table": table, "config": to_dict(ac)}, indent=2, default=str))
    return AgoraResult(out, ac.thetas[best_theta], table, stopped, best_result.metrics)
