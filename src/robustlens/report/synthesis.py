"""Image synthesis with a robust classifier (issue #14, Santurkar et al. 2019): the tasks that need no data
folder (inpainting, super-resolution, translation towards a class, sketch-to-image) on the report's image,
robust vs standard (:func:`robustlens.recipes.synthesis.figures.robust_vs_standard`); class-conditional
generation too when seed Gaussians can be had (``settings.synthesis_data``, or a fit already cached)."""

from __future__ import annotations

import torch

from robustlens.models import Classifier
from robustlens.models.counterparts import check_same_space
from robustlens.recipes.synthesis.objectives import centre_hole, line_drawing
from robustlens.report.blocks import Note, Section, Table, Text, figures
from robustlens.report.context import ReportContext
from robustlens.report.robust import robust_setup

TASK_TEXT = {
    "inpaint": "a centre box hidden (mean-filled), filled in to keep the model's class; pixels outside pasted back",
    "superres": "the image downsampled ×4 (area), nearest-upsampled, then pushed towards the model's class",
    "translate": "the image pushed towards another class",
    "sketch": "a Sobel line drawing of the image pushed towards the class the robust model sees in the image",
    "generate": "seeds from the class's Gaussian (fitted to training images) pushed towards the class",
}


def cached_seeds(model: Classifier):
    """Seed Gaussians fitted for ``model`` earlier (the newest file in the seeds cache whose classes and seed size
    fit it), or None."""
    from robustlens.recipes.synthesis.seeds import DOWNSAMPLE, ClassGaussians, cache_dir

    size = int(model.config.input_size)
    files = sorted(cache_dir().glob(f"{model.name}-*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files:
        try:
            seeds = ClassGaussians.load(path)
        except Exception:  # a broken cache file is no seed fit
            continue
        if seeds.side * DOWNSAMPLE == size and all(0 <= c < model.num_classes for c in seeds.classes):
            return seeds
    return None


def task_inputs(ctx: ReportContext, robust: Classifier, other: int) -> dict[str, dict]:
    """The inputs of each task (keyword arguments of its recipe; ``originals`` for the figure) for the report's
    image at the robust model's input size; ``other`` is the class to translate towards."""
    from robustlens.recipes.synthesis import downsample

    x = ctx.input_for(robust)                                                 # (1,3,S,S)
    size = int(x.shape[-1])
    with torch.no_grad():
        own = int(robust(x).argmax(1)[0])
    factor = 4 if size % 4 == 0 else 1
    return {"inpaint": {"images": x, "masks": centre_hole(size).to(x.device), "originals": x},
            "superres": {"low_res": downsample(x, factor), "originals": x},
            "translate": {"images": x, "targets": [other]},
            "sketch": {"sketches": line_drawing(x), "targets": [own]}}


def _rows(task: str, results: dict, class_name) -> list[list]:
    rows = []
    for kind, res in results.items():
        d = res.to_dict()
        for r in d["rows"]:
            target = class_name(r["target"]) if "target" in r else "–"
            rows.append([task, kind, target, class_name(r["predicted"]), r.get("target_prob"), r.get("success"),
                         r["l2"], d["settings"]["eps"], d["settings"]["steps"], res.seconds])
    return rows


def _generation(ctx: ReportContext, robust: Classifier):
    """(seeds, where they came from) for generation, or (None, why not)."""
    from robustlens.recipes.synthesis import class_gaussians

    data = ctx.settings.synthesis_data
    if data:
        return class_gaussians(robust, data, progress=False), f"fitted to {data}"
    seeds = cached_seeds(robust)
    if seeds is None:
        from robustlens.recipes.synthesis import shipped_seeds

        shipped = shipped_seeds(robust)
        if shipped is not None:
            return shipped, f"the package's seed statistics ({shipped.meta.get('data', '')})"
    if seeds is None:
        return None, ("Class-conditional generation needs seed Gaussians fitted to training images: give a data "
                      "folder (`robustlens report --synthesis-data folder:PATH`, or fit them once with "
                      "`robustlens synthesize generate --data folder:PATH`); left out here.")
    return seeds, f"cached fit ({seeds.meta.get('data', 'unknown data')})"


def section_synthesis(ctx: ReportContext, s: Section) -> None:
    """Inpainting, super-resolution, translation and sketch-to-image (and generation when seeds are at hand) on
    both models of 4(e)(f), the same inputs and settings for each."""
    from robustlens.recipes.synthesis.figures import robust_vs_standard

    st = ctx.settings
    setup = robust_setup(ctx, s)
    if setup is None:
        return
    standard, robust, targets = setup
    check_same_space(standard, robust)
    steps = st.synthesis_steps or None
    s.settings.update({"steps": steps or "published (inpaint 720, superres 40, translate 200, sketch 60, "
                                         "generate 60)", "ε, step": "published, × √(H·W)/224"})
    inputs = task_inputs(ctx, robust, targets[0])
    models = {"standard": standard, "robust": robust}
    table, data, items = [], {}, []
    seeds, origin = _generation(ctx, robust)
    if seeds is not None:
        n = 2 if st.quick else 8
        inputs["generate"] = {"seeds": seeds, "classes": list(seeds.classes[:n])}
    for task, inp in inputs.items():
        originals = inp.pop("originals", None)
        path = ctx.figure(f"synthesis_{task}.png")
        results = robust_vs_standard(task, models, path, originals=originals, steps=steps, seed=st.seed,
                                     progress=False, **inp)
        items.append((path.name, f"{task}: {TASK_TEXT[task]}"))
        table += _rows(task, results, robust.class_name)
        data[task] = {k: r.to_dict() for k, r in results.items()}
    s.add(Text(
        "Santurkar et al. (2019): one robust classifier plus targeted L2 PGD can inpaint, super-resolve, translate "
        "and turn sketches into images; a standard classifier given the same task, start and budget only adds "
        "noise. Each figure: the start (and the original) on top, then the standard and the robust model's "
        "result, titled with the model's own top-1 and p(target). The robust model here is small (see "
        "docs/synthesis.md for what it reaches on 100 images)."))
    s.add(figures(items, small=True))
    if seeds is None:
        s.add(Note(origin))
    else:
        s.settings["generation seeds"] = origin
    s.add(Table(["task", "model", "target", "top-1 after", "p(target)", "target reached", "L2 change", "ε",
                 "steps", "seconds"], table))
    s.data = {"tasks": data, "generation": origin}
