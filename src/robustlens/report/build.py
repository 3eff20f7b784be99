"""Running the report: the sections in page order (:data:`PARTS`), one run of them (:func:`build_report`),
and writing ``report.json`` and ``report.html``."""

from __future__ import annotations

import json
import math
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from robustlens._version import version
from robustlens.errors import UserError
from robustlens.images import load_pil
from robustlens.models import DEFAULT_MODEL, DEFAULT_ROBUST_MODEL, Classifier
from robustlens.models.layers import resolve_layer
from robustlens.optim import speed
from robustlens.report.attacks import section_problem4_attacks, section_problem4_difference
from robustlens.report.blocks import Section
from robustlens.report.context import ReportContext, ReportSettings
from robustlens.report.dream import section_dream
from robustlens.report.explain import section_explain
from robustlens.report.inversion import section_problem4_inversion
from robustlens.report.problem2 import section_problem2
from robustlens.report.reference import section_problem1, section_problem3
from robustlens.report.robust import section_problem4_compare, section_problem4_robust
from robustlens.report.synthesis import section_synthesis
from robustlens.report.visualize import section_visualize

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
TITLE = "robustlens report — DeepDream and adversarial attacks, the whole problem set"


@dataclass(frozen=True)
class Part:
    """One section of the report: ``run(ctx, section)`` fills the section (settings, blocks, data)."""

    id: str
    title: str
    problem: str
    run: Callable[[ReportContext, Section], None]

    def new_section(self) -> Section:
        return Section(self.id, self.title, self.problem)


PARTS: list[Part] = [
    Part("problem1", "Problem 1 — convolution and pooling from scratch", "1", section_problem1),
    Part("problem2", "Problem 2 — ResNet-50 features and the pretrained classifier", "2", section_problem2),
    Part("problem3", "Problem 3 — backpropagation through the layers, gradient checks and SGD", "3",
         section_problem3),
    Part("problem4_attacks", "Problem 4 (a)(b) — targeted adversarial attacks", "4(a)(b)", section_problem4_attacks),
    Part("problem4_difference", "Problem 4 (c) — how different do the images look?", "4(c)",
         section_problem4_difference),
    Part("problem4_inversion", "Problem 4 (d) — feature inversion at three layers", "4(d)",
         section_problem4_inversion),
    Part("problem4_robust", "Problem 4 (e)(f) — the same attacks on an adversarially robust model", "4(e)(f)",
         section_problem4_robust),
    Part("problem4_compare", "Problem 4 (e)(f) — standard vs robust side by side: large-ε attack and inversions",
         "4(e)(f)", section_problem4_compare),
    Part("explain", "What the model looks at — attribution maps, standard vs robust", "extra", section_explain),
    Part("synthesis", "Image synthesis with a robust classifier — standard vs robust", "extra", section_synthesis),
    Part("dream", "DeepDream", "extra", section_dream),
    Part("visualize", "Feature visualisation", "extra", section_visualize),
]
"""The report's sections in page order (tests and callers may run a subset with ``build_report(parts=...)``)."""


def example_label(name: str) -> str:
    """How the report names one of scikit-image's sample photos."""
    return f"{name} (scikit-image sample photo, CC0)"


def _image_input(image: str | Path | Image.Image | None) -> tuple[Image.Image, str]:
    if image is None:
        from robustlens.assets import CORGI_LABEL, corgi_image

        return corgi_image(), CORGI_LABEL
    if isinstance(image, Image.Image):
        return image.convert("RGB"), "image given in code"
    return load_pil(image), str(image)


def _check_inputs(ctx: ReportContext) -> Classifier:
    """Build the main model and check the layers and targets: a bad one is a UserError before any writing."""
    main = ctx.main_model()
    for layer in ctx.settings.inversion_layers:
        resolve_layer(main, layer)
    for t in ctx.settings.targets:
        if not 0 <= t < main.num_classes:
            raise UserError(f"target class {t} is not a class of {main.name} (0..{main.num_classes - 1})")
    return main


def run_part(ctx: ReportContext, part: Part) -> Section:
    """Run one part; a UserError marks it ``unavailable``, any other exception ``error`` (traceback logged)."""
    s = part.new_section()
    t = time.perf_counter()
    try:
        part.run(ctx, s)
    except UserError as e:
        s.fail("unavailable", str(e))
    except Exception as e:  # one broken part must not lose the others; the traceback goes to the log
        ctx.log(traceback.format_exc())
        s.fail("error", f"{type(e).__name__}: {e}")
    s.seconds = time.perf_counter() - t
    return s


def build_report(
    out: str | Path,
    *,
    image: str | Path | Image.Image | None = None,
    image_label: str | None = None,
    model: str = DEFAULT_MODEL,
    weights: str | None = None,
    robust_model: str | None = None,
    robust_weights: str | None = None,
    settings: ReportSettings | None = None,
    device: str | torch.device = "cpu",
    parts: list[Part] | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> dict:
    """Run every section and write ``report.json``, ``report.html`` and the PNGs into ``out``.

    ``image``: a path, a Pillow image, or None for the bundled Corgi photo (``image_label`` names it).
    ``model``/``weights``: the pretrained model of Problems 2 and 4 (default the bundled EfficientNet-Lite0).
    ``robust_model``: the robust model of 4(e)(f) (default ``robustlens.models.DEFAULT_ROBUST_MODEL``). Returns the report
    dict (also in ``report.json``); ``report["html"]`` is the HTML file's path.
    """
    import robustlens.report.html as report_html

    settings = settings or ReportSettings()
    pil, label = _image_input(image)  # bad input fails before anything is written
    label = image_label or label
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    ctx = ReportContext(out=out, image=pil, image_label=label, model_name=model, weights=weights,
                        robust_name=robust_model, robust_weights=robust_weights, settings=settings,
                        device=torch.device(device), log=log)
    main = _check_inputs(ctx)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = []
    parts = PARTS if parts is None else parts
    for i, p in enumerate(parts, 1):
        s = run_part(ctx, p)
        done.append(s)
        log(f"[{i}/{len(parts)}] {s.title}: {s.status} ({s.seconds:.1f} s)")
    report = _report_dict(ctx, main, done, time.perf_counter() - t0)
    (out / REPORT_JSON).write_text(to_json(report), encoding="utf-8")
    html_path = out / REPORT_HTML
    html_path.write_text(report_html.render(report, out), encoding="utf-8")
    report["html"] = str(html_path)
    return report


def _report_dict(ctx: ReportContext, main: Classifier, sections: list[Section], total: float) -> dict:
    """The report as ``report.json`` holds it: a summary, the settings, the model and every section."""
    settings = ctx.settings
    summary = {
        "image": ctx.image_label, "model": f"{main.name} ({main.weights})",
        "robust model": ctx.robust_name or f"{DEFAULT_ROBUST_MODEL} (default)",
        "settings": "quick (smoke test: few steps)" if settings.quick else "full",
        "seed": settings.seed, "total time": f"{total:.1f} s",
        "device": f"{ctx.device} ({torch.get_num_threads()} threads)",
        "speed settings": ", ".join(f"{k}={v}" for k, v in speed.current().to_dict().items()),
        "versions": f"robustlens {version()}, torch {torch.__version__}, Python {platform.python_version()}",
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    statuses = [s.status for s in sections]
    status = "ok" if all(x == "ok" for x in statuses) else ("error" if "error" in statuses else "partial")
    return {"meta": {"title": TITLE, "summary": summary}, "settings": settings.to_dict(), "image": ctx.image_label,
            "model": main.describe(), "sections": [s.to_dict() for s in sections], "status": status,
            "seconds": total}


def _clean(v: Any) -> Any:
    """``v`` as strict JSON values: tensors as lists, NaN and ±∞ as None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _clean(v.tolist())
    return v


def to_json(obj: Any) -> str:
    """Strict, indented JSON (no NaN) of a report dict."""
    return json.dumps(_clean(obj), indent=2) + "\n"
