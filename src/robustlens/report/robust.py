"""Problem 4 (e)(f): the same attacks on a standard and an adversarially robust model, then a large-ε attack
and inversions side by side (:func:`robustlens.robust.compare.compare_models`, what `robustlens compare` runs)."""

from __future__ import annotations

import torch
from PIL import Image

from robustlens.errors import UserError
from robustlens.models import DEFAULT_ROBUST_MODEL, Classifier
from robustlens.models.layers import default_inversion_layers, layer_names
from robustlens.plots import amplified
from robustlens.report.attacks import attack_blocks, run_attack
from robustlens.report.blocks import Note, Section, Table, Text, figures, safe_file_name, strip_history
from robustlens.report.context import ReportContext


def robust_pair(ctx: ReportContext) -> tuple[Classifier, Classifier] | str:
    """(standard, robust) models for 4(e)(f), or a sentence saying why there is no robust model. The standard
    model is the robust one's counterpart (:func:`robustlens.models.counterparts.standard_for`: torchvision's
    ImageNet weights of the same architecture for a published checkpoint, ``X_standard`` for ``X_robust``),
    else the report's main model."""
    from robustlens.models.counterparts import standard_for

    name = ctx.robust_name or DEFAULT_ROBUST_MODEL
    try:
        robust = ctx.model(name, ctx.robust_weights)
    except UserError as e:
        return (f"No robust model is available ({e}). Train or fetch one (see `robustlens models`), or pass "
                f"--robust-model NAME [--robust-weights PATH]; this section is left out rather than faked.")
    counterpart = standard_for(name)
    if counterpart is None:
        return ctx.main_model(), robust
    try:
        return ctx.model(*counterpart), robust
    except UserError as e:
        return f"The robust model {name} is here but its standard counterpart {counterpart[0]} is not ({e})."


def _robust_targets(ctx: ReportContext, model: Classifier) -> tuple[int, ...]:
    """Tiger cat and two more ImageNet classes (``robust_targets``, as Problem 4(e) asks) when the model has
    ImageNet's 1000 classes; otherwise the two classes the model finds least likely for the image (the hardest
    targets)."""
    if model.num_classes == 1000:
        return tuple(ctx.settings.robust_targets)
    with torch.no_grad():
        logits = model(ctx.input_for(model))[0]
    return tuple(int(i) for i in logits.argsort()[:2].tolist())


def robust_setup(ctx: ReportContext, s: Section) -> tuple[Classifier, Classifier, tuple[int, ...]] | None:
    """(standard, robust, targets) for 4(e)(f), or None after marking the section unavailable."""
    key = "robust_setup"
    if key not in ctx.shared:
        pair = robust_pair(ctx)
        ctx.shared[key] = pair if isinstance(pair, str) else (*pair, _robust_targets(ctx, pair[0]))
    setup = ctx.shared[key]
    if isinstance(setup, str):
        s.status = "unavailable"
        s.add(Note(setup))
        return None
    standard, robust, _ = setup
    s.settings.update({"standard model": f"{standard.name} ({standard.weights})",
                       "robust model": f"{robust.name} ({robust.weights})",
                       "image": ctx.image_label, "seed": ctx.settings.seed})
    return setup


def wnid_of(model: Classifier, label: int) -> str:
    """The ImageNet wnid of ``model``'s class ``label`` (how `robustlens compare` names a target in any model)."""
    from robustlens.models.labels import imagenet_classes

    wnids = getattr(model, "class_wnids", None)
    return wnids[label] if wnids is not None else imagenet_classes()[label].wnid


def _attack_both(ctx: ReportContext, standard: Classifier, robust: Classifier, targets) -> tuple[dict, list, dict]:
    """The same attack on both models: (data per model, table rows, result rows per kind)."""
    from robustlens.robust.compare import target_for

    st = ctx.settings
    data: dict = {}
    table: list = []
    rows_by_kind: dict = {}
    for kind, model in (("standard", standard), ("robust", robust)):
        labels = [target_for(model, wnid_of(standard, t)) for t in targets] if model is robust else targets
        res = run_attack(model, ctx.input_for(model), targets=labels, norm=st.robust_norm, eps=st.robust_eps,
                         steps=st.robust_attack_steps, seed=st.seed)
        _, rows = attack_blocks(ctx, model, res, f"p4e_{kind}")
        rows_by_kind[kind] = rows
        data[kind] = {"model": model.describe(), "attack": strip_history(res.to_dict()), "rows": rows}
        for r in rows:
            table.append([kind, model.name, f"{r['target_name']} ({r['target']})", r["success"],
                          r["after"][0]["name"], r["after"][0]["prob"], r["linf_255"], r["l2"], r["psnr_db"],
                          r["ssim"]])
    return data, table, rows_by_kind


def section_problem4_robust(ctx: ReportContext, s: Section) -> None:
    """4(e): the targeted attack of 4(a)(b), at the robust model's training norm, on both models."""
    st = ctx.settings
    setup = robust_setup(ctx, s)
    if setup is None:
        return
    standard, robust, targets = setup
    s.settings.update({"targets": ", ".join(f"{standard.class_name(t)} ({t})" for t in targets),
                       "norm": st.robust_norm, "eps": f"{st.robust_eps:.6g}", "steps": st.robust_attack_steps})
    if standard.num_classes != 1000:
        names = ", ".join(standard.class_name(i) for i in range(standard.num_classes))
        s.add(Text(
            f"These models have {standard.num_classes} classes ({names}), so Tarantula and Tiger cat cannot be "
            f"targets: the targets are the two classes the standard model finds least likely for this image."))
    s.add(Text(
        f"Exactly the same targeted attack ({st.robust_norm}, ε = {st.robust_eps:g}, {st.robust_attack_steps} steps, "
        f"seed {st.seed}; the robust model was trained against attacks of this kind) on both models."))
    models, table, rows_by_kind = _attack_both(ctx, standard, robust, targets)
    s.add(Table(["model", "name", "target", "success", "top-1 after", "p(top-1)", "L∞ × 255", "L2", "PSNR (dB)",
                 "SSIM"], table))
    for r_std, r_rob in zip(rows_by_kind["standard"], rows_by_kind["robust"]):
        s.add(figures(
            [(r_std["files"]["adversarial"], f"standard: adversarial → {r_std['target_name']}"),
             (r_std["files"]["perturbation"], f"standard: perturbation × {r_std['amplification']:.1f}"),
             (r_rob["files"]["adversarial"], f"robust: adversarial → {r_rob['target_name']}"),
             (r_rob["files"]["perturbation"], f"robust: perturbation × {r_rob['amplification']:.1f}")],
            caption=f"Target {r_std['target_name']}: standard (left) vs robust (right).", small=True))
    fooled = {k: sum(r["success"] for r in rows) for k, rows in rows_by_kind.items()}
    s.add(Text(f"The attack reached its target on {fooled['standard']} of {len(targets)} targets for the standard "
               f"model and {fooled['robust']} of {len(targets)} for the robust one."))
    s.data = {"targets": list(targets), "models": models}


def run_comparison(models, image: Image.Image, *, target: str, norm: str, eps: float, steps: int, layers,
                   invert_steps: int, seed: int):
    """The report's side-by-side run: :func:`robustlens.robust.compare.compare_models` (what `robustlens compare`
    calls) with its defaults for everything not given."""
    from robustlens.robust.compare import compare_models

    return compare_models(models, image, target=target, norm=norm, eps=eps, steps=steps, layers=list(layers),
                          invert_steps=invert_steps, seed=seed)


def _comparison_blocks(ctx: ReportContext, runs, robust_name: str) -> tuple[list, list, list]:
    """Per model: a row of figures (adversarial, perturbation, inversions), a table row, inversion rows."""
    rows_of_figures, table, inv_rows = [], [], []
    for run in runs:
        kind = "robust" if run.name == robust_name else "standard"
        a, after = run.attack, run.attack.after[0][0]
        items = [(ctx.save(a.adversarial[0], f"p4f_{kind}_adversarial.png"), f"{kind}: adversarial")]
        amp, factor = amplified(a.perturbation[0])
        items.append((ctx.save(amp, f"p4f_{kind}_perturbation.png"), f"{kind}: perturbation × {factor:.1f}"))
        other: dict = next(iter(run.transfer.values()), {})
        table.append([kind, run.name, bool(a.success[0]), after.name, after.prob, float(a.l2[0]),
                      other.get("top1_name"), other.get("top1_prob")])
        for i, layer in enumerate(run.inversion.layers):
            inv_rows.append([kind, layer, float(run.inversion.start_distance[i]), float(run.inversion.distance[i])])
            items.append((ctx.save(run.inversion.images[i], f"p4f_{kind}_inverted_{safe_file_name(layer)}.png"),
                          f"{kind}: inverted from {layer}"))
        rows_of_figures.append(figures(items, small=True))
    return rows_of_figures, table, inv_rows


def section_problem4_compare(ctx: ReportContext, s: Section) -> None:
    """4(e)(f): a large-ε L2 attack without early stop and inversions from noise, on both models."""
    from robustlens.robust.compare import plot_comparison

    st = ctx.settings
    setup = robust_setup(ctx, s)
    if setup is None:
        return
    standard, robust, targets = setup
    target = wnid_of(standard, targets[0])
    tname = standard.class_name(targets[0])
    layers = default_inversion_layers(standard)  # the architecture's choice (a published name is not an arch)
    if not set(layers) <= set(layer_names(robust)):
        raise UserError(f"{standard.name} and {robust.name} do not share the layers {', '.join(layers)}; "
                        "compare them with `robustlens compare --layer ...`")
    s.settings.update({"target": f"{tname} ({target})", "norm": "l2", "eps": st.robust_big_eps,
                       "steps": st.robust_big_steps, "early stop": False, "inversion layers": ", ".join(layers),
                       "inversion steps": st.robust_inversion_steps})
    runs = run_comparison([standard, robust], ctx.image, target=target, norm="l2", eps=st.robust_big_eps,
                          steps=st.robust_big_steps, layers=layers, invert_steps=st.robust_inversion_steps,
                          seed=st.seed)
    fig = plot_comparison(runs, ctx.figure("p4f_compare.png"),
                          title=f"l2 ε={st.robust_big_eps:g}, {st.robust_big_steps} steps, target {tname}").name
    s.add(Text(
        f"A large targeted attack (L2, ε = {st.robust_big_eps:g}, {st.robust_big_steps} steps, no early stop) towards "
        f"{tname}, and inversions from noise at {', '.join(layers)}, on both models; each adversarial image is also "
        f"shown to the other model. On a robust model the attack has to paint visible features of the target and "
        f"the deep-layer inversions still look like the image; on a standard model both look like noise."),
          figures([(fig, "one row per model: input, adversarial image, perturbation, inversions")]))
    rows_of_figures, table, inv_rows = _comparison_blocks(ctx, runs, robust.name)
    s.add(Table(["model", "name", "target reached", "top-1 after", "p(top-1)", "L2", "the other model sees", "its p"],
                table), *rows_of_figures,
          Table(["model", "layer", "feature distance at the noise start", "after"], inv_rows,
                caption="inversions: relative feature distance"))
    s.data = {"target": target, "layers": list(layers), "models": [r.to_dict() for r in runs]}
