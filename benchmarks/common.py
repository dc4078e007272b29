"""Helpers shared by the benchmarks: where results go, and writing them with the machine they ran on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from compress.env import environment

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, payload: dict[str, Any], summary_md: str) -> tuple[Path, Path]:
    """benchmarks/results/<name>.json (machine-readable) and <name>.md (readable), both with the environment."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {"benchmark": name, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": env, **payload}
    j = RESULTS / f"{name}.json"
    j.write_text(json.dumps(payload, indent=2, default=str))
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    md = RESULTS / f"{name}.md"
    md.write_text(
        f"{summary_md}\n\nMachine: {env['cpu']}, {env['cores']} cores, Python {env['python']}; {versions}. "
        f"Finished {payload['finished']}. Machine-readable: `{j.name}`.\n"
    )
    return j, md


def teacher_and_context(cfg, fresh: bool = False):
    """The run's fine-tuned teacher (trained now unless already there) and the students' shared context."""
    import shutil

    from compress.distill.jobs import finetune_teacher, load_context

    if fresh and cfg.run_dir.exists():
        shutil.rmtree(cfg.run_dir)
    teacher_metrics = cfg.run_dir / "teacher" / "metrics.json"
    if not teacher_metrics.exists():
        finetune_teacher(cfg, force=True)
    return json.loads(teacher_metrics.read_text()), load_context(cfg)
