"""Optimal subarchitecture extraction, after de Wynter (2020, arXiv:2010.08512) as used for Bort
(de Wynter and Perry, 2020, arXiv:2010.10499): rank candidate architectures by a W-coefficient that trades
parameter size p, inference time i and a surrogate error e against the maximum point (here, the teacher).

Procedure (`run_fptas`, in compress/search/fptas_run.py):
1. Enumerate the grid of (depth, heads, hidden, intermediate) from the config's `fptas:` section, keeping
   hidden divisible by heads and every size within the teacher's.
2. Build each candidate from the teacher's weights (layers spread evenly; narrower hidden sizes keep the
   teacher's strongest hidden units, see compress.model.student) and train it for a fixed number of steps on the
   surrogate error: the KL divergence between its output distribution (task logits; start and end for QA) and
   the maximum point's, temperature 1 (the same gradient as their cross-entropy).
3. Measure e: the cross-entropy H(teacher, candidate) on held-out eval rows; p: the analytic parameter count
   (equal to the built model's); i: ONNX Runtime latency of the exported candidate with the search's protocol.
4. Rank by the W-coefficient and hand the top k to full distillation.
5. Optionally (`fptas.calibrate`, `compress fptas --calibrate`) distill every candidate fully and check the
   ranking against what the candidates really score (`calibrate`): how well the surrogate error predicts the
   distilled metric, the exponent k of real relative error ~ (surrogate relative error)^k, and for each alpha of
   `fptas.calibration_alphas` the candidate W puts first, its real metric, whether it meets `search.constraints`
   and whether it lies on the distilled candidates' frontier (compress/search/fptas_calibration.py). Writes
   calibration.{md,png} beside the ranking (compress/search/fptas_output.py).

Each candidate's surrogate result and full distillation are stored in its folder with a hash of their inputs, so
a rerun after an interruption (or with another alpha) reuses them instead of training again.

The W-coefficient implemented here (`w_coefficient`, a pure function that can be replaced):

    W = (p_max / p) * (i_max / i) / (e / e_max) ** alpha

where p_max, i_max are the teacher's parameters and inference time and e_max = H(teacher, teacher), the
teacher's own entropy on the same rows (the lowest cross-entropy any model can reach against it), so
e / e_max >= 1 measures how far a candidate is from the maximum point. Larger W is better: W grows as a
candidate gets smaller, faster, or closer to the teacher.

NOTE: the paper's exact definition of the W-coefficient could not be checked here (no access to the paper
offline); this is our own scalarisation with the properties the papers describe (relative to the maximum
point; rewards small p and i, penalises error). Every output of `compress fptas` says so. alpha sets the
exchange rate: with alpha = 1, halving the parameters and halving the latency (4x) outweighs a relative error
up to 4x larger. Surrogate errors after a short training run are compressed versions of the real ones (on SST-2,
see benchmarks/results/fptas-sst2.md), so alpha = 1 on the surrogate weighs real error less than 1:1; run the
calibration to see which alpha picks what on your task.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..model.student import StudentSpec

__all__ = ["W_DEFINITION", "Candidate", "candidate_grid", "surrogate_error", "w_coefficient"]

W_DEFINITION = ("W = (p_max / p) * (i_max / i) / (e / e_max) ** alpha; e = H(teacher, candidate) on held-out rows, "
                "e_max = H(teacher, teacher). Our definition: the paper's exact formula could not be checked offline.")


def w_coefficient(p: float, i: float, e: float, p_max: float, i_max: float, e_max: float, alpha: float = 1.0) -> float:
    """Larger is better: smaller p, faster i and lower surrogate error e, each relative to the maximum point."""
    if min(p, i, e, p_max, i_max, e_max) <= 0 or not all(map(math.isfinite, (p, i, e, p_max, i_max, e_max))):
        raise ValueError(f"w_coefficient needs positive finite values; got p={p}, i={i}, e={e}, p_max={p_max}, "
                         f"i_max={i_max}, e_max={e_max}")
    return (p_max / p) * (i_max / i) / (e / e_max) ** alpha


def surrogate_error(teacher_logits: dict[str, np.ndarray], student_logits: dict[str, np.ndarray]) -> float:
    """Mean cross-entropy H(softmax(teacher), softmax(student)) over rows, averaged over the outputs (start and
    end for QA). Padding positions carry -1e4 logits on both sides and so no probability."""
    total = []
    for name, t in teacher_logits.items():
        s = student_logits[name].astype(np.float64)
        t = t.astype(np.float64)
        if t.ndim == 1 or t.shape[-1] == 1:  # regression: squared error against the teacher's value
            total.append(float(np.mean((s.reshape(-1) - t.reshape(-1)) ** 2)) + 1e-12)
            continue
        pt = np.exp(t - t.max(axis=-1, keepdims=True))
        pt /= pt.sum(axis=-1, keepdims=True)
        log_ps = s - s.max(axis=-1, keepdims=True)
        log_ps -= np.log(np.exp(log_ps).sum(axis=-1, keepdims=True))
        total.append(float(-(pt * log_ps).sum(axis=-1).mean()))
    return float(np.mean(total))


@dataclass(frozen=True)
class Candidate:
    depth: int
    heads: int
    hidden: int
    intermediate: int

    def spec(self, teacher_config):
        # hidden_size set: BERT semantics, the heads split the width evenly (see compress.model.student)
        return StudentSpec(num_layers=self.depth, heads=self.heads, intermediate_size=self.intermediate,
                           hidden_size=self.hidden)

    def name(self) -> str:
        return f"L{self.depth}-A{self.heads}-H{self.hidden}-I{self.intermediate}"


def candidate_grid(fc, teacher_config) -> list[Candidate]:
    """Every (depth, heads, hidden, intermediate) of the grid that the teacher can supply."""
    t = teacher_config
    out = []
    for d, a, h, i in itertools.product(fc.depths, fc.heads, fc.hidden_sizes, fc.intermediate_sizes):
        if h % a or d > t.num_hidden_layers or h > t.hidden_size or i > t.intermediate_size or a > t.num_attention_heads:
            continue
        out.append(Candidate(d, a, h, i))
    if not out:
        raise ValueError(f"the fptas grid {fc} has no candidate the teacher can supply (depth <= "
                         f"{t.num_hidden_layers}, heads <= {t.num_attention_heads}, hidden <= {t.hidden_size} and "
                         f"divisible by heads, intermediate <= {t.intermediate_size})")
    return out

