"""What the model looks at (issue #15): attribution maps of the report's image on the standard and the robust
model of 4(e)(f) (:func:`robustlens.report.robust.robust_pair`), and how much each input gradient looks like the
image (:func:`robustlens.explain.edge_alignment`)."""

from __future__ import annotations

from pathlib import Path

import torch

from robustlens.explain import METHODS, attribute, edge_alignment, robust_vs_standard
from robustlens.explain.visual import clip_normalise, overlay, reduce_channels
from robustlens.models import Classifier
from robustlens.report.blocks import Section, Table, Text, figures
from robustlens.report.context import ReportContext
from robustlens.report.robust import robust_setup, wnid_of

METHOD_NAMES = {"saliency": "saliency", "gradxinput": "gradient × input", "smoothgrad": "SmoothGrad",
                "ig": "Integrated Gradients", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++",
                "guided_backprop": "Guided Backprop"}


def same_class(standard: Classifier, robust: Classifier, x_robust: torch.Tensor) -> tuple[int, int]:
    """(label in ``standard``, label in ``robust``) of the class the robust model finds most likely for its input
    ``x_robust`` (1,C,S,S). The standard label is the same class in its own label space (the same index when
    both have the same classes, else the same ImageNet wnid), or -1 when it has no such class."""
    from robustlens.errors import UserError
    from robustlens.robust.compare import target_for

    with torch.no_grad():
        t_rob = int(robust(x_robust).argmax(1)[0])
    wnids = (getattr(standard, "class_wnids", None), getattr(robust, "class_wnids", None))
    if standard.num_classes == robust.num_classes and wnids[0] == wnids[1]:
        return t_rob, t_rob
    if wnids[1] is None and robust.num_classes != 1000:
        return -1, t_rob  # not ImageNet classes: nothing to match them with
    try:
        return target_for(standard, wnid_of(robust, t_rob)), t_rob
    except UserError:
        return -1, t_rob


def _plot(rows: list[tuple[str, torch.Tensor, dict[str, torch.Tensor]]], path: Path, title: str) -> Path:
    """One row per model: the image, then each method's map (|map| summed over channels, clipped at its 99th
    percentile; class-activation maps over the image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustlens.plots import save_figure

    cols = 1 + max(len(m) for _, _, m in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.1 * cols, 2.3 * len(rows)), squeeze=False)
    for r, (label, image, maps) in enumerate(rows):
        axes[r, 0].imshow(image.cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, 0].set_ylabel(label, fontsize=8)
        for c, (method, m) in enumerate(maps.items(), start=1):
            heat = clip_normalise(reduce_channels(m[None], "abs"))[0]
            if m.shape[0] == 1:
                axes[r, c].imshow(overlay(image, heat))
            else:
                axes[r, c].imshow(heat.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(METHOD_NAMES.get(method, method), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100)


def _maps(ctx: ReportContext, model: Classifier, x: torch.Tensor, target: int | None) -> tuple[dict, dict]:
    """Every method's map of ``x`` (1,C,S,S) for ``target`` (None: the model's top-1): ({method: (C,S,S) map},
    {method: JSON info})."""
    st = ctx.settings
    maps, info = {}, {}
    for method in st.explain_methods:
        gen = torch.Generator(device=x.device).manual_seed(st.seed)
        a = attribute(method, model, x, target, steps=st.explain_steps, samples=st.explain_samples, generator=gen)
        maps[method] = a.maps[0].detach()
        info[method] = a.to_dict()
    return maps, info


def section_explain(ctx: ReportContext, s: Section) -> None:
    """Attribution maps (the methods of ``settings.explain_methods``) of one class on both models, and the
    alignment of each input gradient with the image."""
    from robustlens.errors import UserError

    st = ctx.settings
    for m in st.explain_methods:
        if m not in METHODS:
            raise UserError(f"unknown attribution method {m!r}; use some of {', '.join(METHODS)}")
    setup = robust_setup(ctx, s)
    if setup is None:
        return
    standard, robust, _ = setup
    xs = {"standard": ctx.input_for(standard), "robust": ctx.input_for(robust)}
    t_std, t_rob = same_class(standard, robust, xs["robust"])
    targets = {"standard": t_std, "robust": t_rob}
    cname = robust.class_name(t_rob)
    s.settings.update({"class": f"{cname} (the robust model's top-1)", "methods": ", ".join(st.explain_methods),
                       "Integrated Gradients steps": st.explain_steps, "SmoothGrad samples": st.explain_samples})
    rows: list = []
    data: dict[str, dict] = {}
    table: list = []
    for kind, model in (("standard", standard), ("robust", robust)):
        t = targets[kind] if targets[kind] >= 0 else None  # None: the model's own top-1
        maps, info = _maps(ctx, model, xs[kind], t)
        explained = int(next(iter(info.values()))["targets"][0])
        align = {k: float(v[0]) for k, v in edge_alignment(model, xs[kind], explained).items() if k != "maps"}
        rows.append((f"{kind}\n{model.name}\n→ {model.class_name(explained)}", xs[kind][0], maps))
        ig = info.get("ig", {}).get("completeness_error")
        table.append([kind, model.name, f"{model.class_name(explained)} ({explained})", align["cosine"],
                      align["spearman"], align["ssim"], None if ig is None else ig[0]])
        data[kind] = {"model": model.describe(), "target": explained, "methods": info, "alignment": align}
    fig = _plot(rows, ctx.figure("explain_maps.png"), f"what the model looks at: {cname}").name
    s.add(Text(
        f"Attribution maps of the class {cname} (the robust model's top-1; the same ImageNet class for the standard "
        f"model where it has it) for the standard and the robust model: the input gradient (saliency), SmoothGrad "
        f"({st.explain_samples} noisy copies), Integrated Gradients ({st.explain_steps} steps from a black image) and "
        f"Grad-CAM at the last convolutional block. The robust model's gradients are expected to look like the "
        f"image (perceptually aligned gradients), the standard model's like high-frequency noise."),
          figures([(fig, "one row per model; pixel maps: |map| summed over colour channels, clipped at the 99th "
                         "percentile; Grad-CAM over the image")]))
    s.add(Table(["model", "name", "class explained", "|cos(x − x̄, ∇f)|", "Spearman(|saliency|, Sobel edges)",
                 "SSIM(|saliency|, edges)", "IG completeness error"], table,
                caption="how much the input gradient looks like the image (Etmann et al. 2019: the cosine; "
                        "docs/explain.md)"))
    if xs["standard"].shape == xs["robust"].shape and t_std == t_rob and standard.num_classes == robust.num_classes:
        cmp = robust_vs_standard([("standard", standard), ("robust", robust)], xs["robust"], t_rob,
                                 figure=ctx.figure("explain_alignment.png"))
        s.add(figures([(cmp["figure"], "|saliency| beside the image's Sobel edges")], small=True))
    cos = {k: data[k]["alignment"]["cosine"] for k in data}
    s.add(Text(f"Gradient–image alignment |cos| on this image: standard {cos['standard']:.3f}, robust "
               f"{cos['robust']:.3f} (on 100 Imagenette images the 64 px robust model was 5.3× better aligned, "
               f"on 91 of 100: docs/explain.md). One image is one sample, not a measurement."))
    s.data = {"class": t_rob, "models": data}
