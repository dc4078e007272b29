"""The compact summary `compress validate` prints: the splits, the teacher, then every note, warning and error."""

from __future__ import annotations

from typing import Any

from ..config import JobConfig
from .findings import SPLITS, Report
from .lengths import MAX_TOKENIZED_ROWS, SAMPLE_SEED

__all__ = ["format_report"]


def _split_summary(task_type: str, entry: dict[str, Any]) -> str:
    if task_type == "qa":
        if "questions" not in entry:
            return ""
        lost = entry.get("answers_lost")
        return (f"{entry['articles']} articles, {entry['unanswerable_share']:.0%} unanswerable"
                + (f", {lost} answers lost" if lost is not None else ""))
    if task_type == "regression":
        return f"mean {entry['label_mean']:.3g} sd {entry['label_std']:.3g}" if "label_mean" in entry else ""
    text = " · ".join(f"{k} {v}" for k, v in entry.get("labels", {}).items())
    return text if len(text) <= 34 else text[:31] + "..."


def format_report(report: Report, cfg: JobConfig | None) -> str:
    """The compact summary `compress validate` prints."""
    lines: list[str] = []
    if cfg is not None and report.splits:
        d = cfg.data
        lines.append(f"data: {cfg.task.type}, max_seq_length {d.max_seq_length}"
                     + (f", doc_stride {d.doc_stride}" if cfg.task.type == "qa" else "")
                     + f", on_bad_row {d.on_bad_row}")
        what = {"qa": "articles / answers", "regression": "labels"}.get(cfg.task.type, "labels")
        summaries = {n: _split_summary(cfg.task.type, report.splits.get(n, {})) for n in SPLITS}
        width = max(len(what), *(len(v) for v in summaries.values())) + 2
        lines.append(f"  {'split':<6}{'rows':>8}{'bad':>6}  {what:<{width}}{'tokens p50/p90/p99/max':>22}{'> max':>8}")
        sampled = []
        for name in SPLITS:
            e = report.splits.get(name, {})
            if not e.get("rows"):
                lines.append(f"  {name:<6}{'-':>8}")
                continue
            tl = e.get("token_lengths")
            tokens = f"{tl['p50']}/{tl['p90']}/{tl['p99']}/{tl['max']}" if tl else "-"
            over = f"{tl['over_max_share']:.1%}" if tl else "-"
            if tl and tl["sampled"]:
                sampled.append(f"{name} {tl['rows_tokenized']:,} of {e['rows']:,}")
            bad = e.get("skipped_bad_rows", "-")
            lines.append(f"  {name:<6}{e['rows']:>8}{bad:>6}  {summaries[name]:<{width}}{tokens:>22}{over:>8}")
        if any("token_lengths" in report.splits.get(n, {}) for n in SPLITS):
            how = (f"a seeded sample (seed {SAMPLE_SEED}) of at most {MAX_TOKENIZED_ROWS:,} rows per split: "
                   + ", ".join(sampled)) if sampled else "every row"
            lines.append(f"  token lengths: the teacher's tokenizer, {how}; '> max' is the share longer than "
                         "max_seq_length" + (" (read in several windows)" if cfg.task.type == "qa" else " (truncated)"))
    t = report.teacher
    if "path" in t:
        head = t.get("head")
        if head == "unknown" or "head" not in t:
            head_text = "head not read (checked when the model loads)"
        elif head:
            head_text = f"{head} head" + (f" with {t['head_outputs']} outputs" if t.get("head_outputs") else "")
        else:
            head_text = "no head for the task"
        shape = (f"{t['num_hidden_layers']} layers, {t['num_attention_heads']} heads, hidden {t['hidden_size']}, "
                 f"FFN {t['intermediate_size']}, {t['max_position_embeddings']} positions, vocab {t['vocab_size']}"
                 if "num_hidden_layers" in t else t.get("model_type", "?"))
        lines.append(f"teacher: {t['path']} ({'this run' if t['source'] == 'run' else 'teacher.model'}): {shape}; "
                     f"{head_text}")
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"error: {e}" for e in report.errors]
    n_e, n_w = len(report.errors), len(report.warnings)
    counts = f"{n_e} error{'s' if n_e != 1 else ''}, {n_w} warning{'s' if n_w != 1 else ''}"
    lines.append(f"not ready: {counts}; fix the errors first" if n_e else f"ready: {counts}")
    return "\n".join(lines)

