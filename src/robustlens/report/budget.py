"""What a report will cost before it runs: one forward+backward pass of each model timed on this machine, the
settings' optimisation steps counted as image passes per section, and the settings scaled down to fit a
time budget (what ``robustlens demo --budget`` prints and applies)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from robustlens.models import Classifier
from robustlens.report.context import SYNTHESIS_PUBLISHED_MEAN, ReportSettings

SYNTHESIS_TASKS = 4  # inpainting, super-resolution, translation, sketch (generation only with fitted seeds)
FIXED_S = 20.0  # Problems 1-3 (NumPy layers, the digits CNN) and the figures: seconds, roughly, on a 2-core CPU


def pass_seconds(model: Classifier, device: torch.device, *, repeats: int = 2) -> float:
    """Seconds of one forward+backward pass of one image at the model's input size (best of ``repeats``, after
    a warm-up pass), gradients w.r.t. the input only."""
    size = model.config.input_size
    model = model.to(device).eval().requires_grad_(False)
    best = float("inf")
    for i in range(repeats + 1):
        x = torch.rand(1, model.config.channels, size, size, device=device, requires_grad=True)
        t = time.perf_counter()
        model(x).logsumexp(1).sum().backward()
        if i:
            best = min(best, time.perf_counter() - t)
    return best


def image_passes(st: ReportSettings, *, n_layers: int = 3) -> dict[str, tuple[int, str]]:
    """Image passes per section and which model makes them (``main`` or ``pair``: the standard and the robust
    model, each)."""
    synthesis = st.synthesis_steps or SYNTHESIS_PUBLISHED_MEAN
    viz = round(st.visualize_steps * 4 * (st.visualize_size / 224) ** 2)  # 4 random transforms per step
    return {
        "4(a)(b) attacks": (st.attack_steps * len(st.targets), "main"),
        "4(d) inversion": (st.inversion_steps * n_layers, "main"),
        "4(e) robust attacks": (st.robust_attack_steps * len(st.robust_targets), "pair"),
        "4(e)(f) large-ε attack and inversions": (st.robust_big_steps + st.robust_inversion_steps * n_layers, "pair"),
        "attribution maps": (st.explain_steps + st.explain_samples + 2, "pair"),
        "synthesis": (synthesis * SYNTHESIS_TASKS, "pair"),
        "DeepDream": (st.dream_steps * st.dream_octaves * 2, "main"),
        "feature visualisation": (viz, "main"),
    }


@dataclass(frozen=True)
class Cost:
    """A report's estimated cost: seconds per section, the per-pass times it used, and the step factor."""

    seconds: dict[str, float]
    main_pass_s: float
    pair_pass_s: float
    factor: float = 1.0

    @property
    def total(self) -> float:
        return sum(self.seconds.values()) + FIXED_S

    def to_dict(self) -> dict:
        return {"seconds": {k: round(v, 1) for k, v in self.seconds.items()}, "total_s": round(self.total, 1),
                "main_pass_s": round(self.main_pass_s, 4), "pair_pass_s": round(self.pair_pass_s, 4),
                "factor": round(self.factor, 3)}


def estimate(st: ReportSettings, main_pass_s: float, pair_pass_s: float, factor: float = 1.0) -> Cost:
    """The cost of ``st`` given one pass of the main model and one of the standard + robust pair (seconds)."""
    per = {"main": main_pass_s, "pair": pair_pass_s}
    return Cost({k: n * per[who] for k, (n, who) in image_passes(st).items()}, main_pass_s, pair_pass_s, factor)


def fit(st: ReportSettings, main_pass_s: float, pair_pass_s: float, budget_s: float) -> tuple[ReportSettings, Cost]:
    """``st`` with its steps scaled so the estimate fits ``budget_s`` (unchanged when it already does), and the
    estimate of what is returned."""
    full = estimate(st, main_pass_s, pair_pass_s)
    if full.total <= budget_s:
        return st, full
    factor = 1.0
    scaled, cost = st, full
    for _ in range(20):  # the minimum of 2 steps per optimisation makes the cost not quite linear in the factor
        factor *= max(0.05, (budget_s - FIXED_S) / max(1e-9, cost.total - FIXED_S))
        scaled = st.scaled(factor)
        cost = estimate(scaled, main_pass_s, pair_pass_s, factor)
        if cost.total <= budget_s * 1.02 or factor < 1e-3:
            break
    return scaled, cost
