"""What `compress fptas` writes for people: ranking.md, calibration.md and the calibration plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["calibration_markdown", "calibration_png", "ranking_markdown"]


def calibration_markdown(cal: dict[str, Any]) -> str:
    m = cal["metric"]
    lines = ["# FPTAS calibration", "",
             f"Every candidate distilled fully; teacher {m} {cal['teacher_value']:.4f}. Surrogate relative error "
             "s = e / e_max; real relative error r = (100 - points) / (100 - teacher points).", "",
             f"- Spearman's rho, s against r: {cal['spearman_error']:.3f}; surrogate error against distilled {m}: "
             f"{cal['spearman_error_metric']:.3f}.",
             f"- Fit log r = k log s + c: k = {cal['k']:.3f}, c = {cal['c']:.3f}, R^2 = {cal['r2']:.3f}. So alpha = "
             f"{cal['alpha_for_real_1to1']:.2f} on the surrogate trades real relative error 1:1 with relative size and "
             "speed.",
             f"- Smallest alpha whose first candidate meets {cal['constraints'] or 'the constraints (none set)'} and is "
             f"on the distilled frontier: {cal['alpha_meeting_constraints']}.", "",
             f"| alpha | W's first | {m} | parameters | latency ms | meets constraints | on frontier | "
             f"a perfect surrogate's first ({m}) | rho(W, W with real error) |", "|---|---|---|---|---|---|---|---|---|"]
    for p in cal["per_alpha"]:
        lines.append(f"| {p['alpha']:g} | {p['top']} | {p['value']:.4f} | {p['params']:,} | {p['latency_ms']:.3f} | "
                     f"{'yes' if p['meets_constraints'] else 'no'} | {'yes' if p['on_frontier'] else 'no'} | "
                     f"{p['ideal_top']} ({p['ideal_value']:.4f}) | {p['spearman_w']:.3f} |")
    lines += ["", f"| candidate | surrogate error | s | distilled {m} | r | parameters | latency ms | on frontier |",
              "|---|---|---|---|---|---|---|---|"]
    for it in sorted(cal["candidates"], key=lambda it: -it["value"]):
        lines.append(f"| {it['candidate']} | {it['surrogate_error']:.4f} | {it['s']:.3f} | {it['value']:.4f} | "
                     f"{it['r']:.3f} | {it['params']:,} | {it['latency_ms']:.3f} | "
                     f"{'yes' if it['candidate'] in cal['frontier'] else ''} |")
    return "\n".join(lines) + "\n"


def calibration_png(cal: dict[str, Any], path: Path) -> None:
    """Left: distilled metric against the surrogate relative error. Right: what W's first candidate scores per alpha."""
    # NOTE: matplotlib is imported here, not at the top: it is heavy and only the calibration needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = cal["metric"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [it["s"] for it in cal["candidates"]]
    ys = [it["value"] for it in cal["candidates"]]
    sizes = [20 + 60 * it["params"] / max(i["params"] for i in cal["candidates"]) for it in cal["candidates"]]
    colors = ["tab:red" if it["candidate"] in cal["frontier"] else "tab:blue" for it in cal["candidates"]]
    a1.scatter(xs, ys, s=sizes, c=colors, alpha=0.8)
    for it in cal["candidates"]:
        a1.annotate(it["candidate"], (it["s"], it["value"]), fontsize=6, alpha=0.7)
    a1.axhline(cal["teacher_value"], ls="--", c="purple", lw=1, label="teacher")
    a1.set_xlabel("surrogate relative error e / e_max")
    a1.set_ylabel(f"distilled {m}")
    a1.set_title(f"rho = {cal['spearman_error_metric']:.2f} (red: frontier; size: parameters)", fontsize=9)
    a1.legend(fontsize=8)
    al = [p["alpha"] for p in cal["per_alpha"]]
    a2.plot(al, [p["value"] for p in cal["per_alpha"]], "o-", label="W's first candidate")
    a2.plot(al, [p["ideal_value"] for p in cal["per_alpha"]], "s--", alpha=0.6, label="a perfect surrogate's first")
    a2.axhline(cal["teacher_value"], ls="--", c="purple", lw=1)
    a2.set_xscale("log")
    a2.set_xticks(al, [f"{a:g}" for a in al])
    a2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    a2.set_xlabel("alpha")
    a2.set_ylabel(f"distilled {m}")
    a2.set_title("the first-ranked candidate, fully distilled", fontsize=9)
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ranking_markdown(result: dict[str, Any], metric: str) -> str:
    mp = result["maximum_point"]
    lines = ["# FPTAS ranking", "", f"W-coefficient: {result['definition']}", "",
             f"Maximum point (teacher): {mp['params']:,.0f} parameters, {mp['inference_ms']:.2f} ms, "
             f"surrogate error {mp['surrogate_error']:.4f}. Each candidate trained {result['steps']} steps on the "
             f"surrogate error; error measured on {result['eval_rows']} held-out rows.", "",
             "| rank | W | parameters | inference ms | error | rel. error | architecture (depth, heads, hidden, FFN) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["ranking"]:
        lines.append(f"| {r['rank']} | {r['W']:.3f} | {r['params']:,} | {r['inference_ms']:.3f} | "
                     f"{r['surrogate_error']:.4f} | {r['relative_error']:.3f} | "
                     f"{r['depth']}, {r['heads']}, {r['hidden']}, {r['intermediate']} |")
    if result["distilled"]:
        cons = ", ".join(result.get("constraints") or []) or "none set"
        lines += ["", f"Distilled fully (constraints: {cons}):", "",
                  f"| candidate | rank | {metric} | parameters | latency ms | constraints |", "|---|---|---|---|---|---|"]
        for d in sorted(result["distilled"], key=lambda d: d["rank"]):
            lines.append(f"| {d['candidate']} | {d['rank']} | {d['value']:.4f} | {d['params']:,} | "
                         f"{d['latency_ms']:.3f} | {'misses ' + ', '.join(d['misses']) if d.get('misses') else 'met'} |")
        first = min(result["distilled"], key=lambda d: d["rank"])
        if first.get("misses") and first["rank"] == 1:
            lines += ["", f"The first candidate misses {', '.join(first['misses'])} once distilled: alpha "
                      f"{result['alpha']:g} weighs size and speed over error for this task. Raise fptas.alpha, or run "
                      "with --calibrate to see which alpha puts a candidate that meets the constraints first."]
    return "\n".join(lines) + "\n"

