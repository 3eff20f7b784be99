"""Problem 4 (a)–(c): targeted attacks on the pretrained model, and how different the images look."""

from __future__ import annotations

import torch

from robustlens.models import Classifier
from robustlens.plots import amplified
from robustlens.report.blocks import Block, Note, Section, Table, Text, figures, safe_file_name
from robustlens.report.context import ReportContext


def run_attack(model: Classifier, x: torch.Tensor, *, targets, norm: str, eps: float, steps: int, seed: int):
    """The report's attack: :func:`robustlens.recipes.attacks.attack` with the CLI's defaults for everything not
    given. ``x``: (1, C, S, S) in [0, 1]; one result row per target."""
    from robustlens.recipes.attacks import attack

    return attack(model, x, target=list(targets), norm=norm, eps=eps, steps=steps, seed=seed, progress=False)


def attack_blocks(ctx: ReportContext, model: Classifier, res, prefix: str) -> tuple[list[Block], list[dict]]:
    """Figures per target (original, adversarial, amplified perturbation, top-5 before/after) and data rows."""
    blocks: list[Block] = []
    rows = []
    orig = ctx.save(res.original[0], f"{prefix}_original.png")
    before = ctx.topk_plot(res.before[0], f"{prefix}_top5_before.png", title=f"{model.name}: before the attack")
    blocks.append(figures([(orig, "original"), (before, "top-5 probabilities before the attack")]))
    for i, row in enumerate(res.to_dict()["results"]):
        t = row["target"]
        tname = model.class_name(t)
        tag = f"{prefix}_{t:03d}_{safe_file_name(tname)}"
        adv = ctx.save(res.adversarial[i], f"{tag}_adversarial.png")
        amp_img, factor = amplified(res.perturbation[i])
        amp = ctx.save(amp_img, f"{tag}_perturbation_x{factor:.0f}.png")
        after = ctx.topk_plot(res.after[i], f"{tag}_top5_after.png", highlight=t,
                              title=f"after the attack towards {tname}")
        top1 = res.after[i][0]
        blocks.append(Text(
            f"Target {tname} ({t}): the attack {'succeeded' if row['success'] else 'did not succeed'}; the model "
            f"now says {top1.name} ({top1.index}) with probability {top1.prob:.3f}. Perturbation norms: "
            f"L∞ = {row['linf']:.5f} ({row['linf_255']:.2f}/255), L2 = {row['l2']:.4f}."))
        blocks.append(figures([(orig, "original"), (adv, f"adversarial (target {tname})"),
                               (amp, f"perturbation × {factor:.1f} (grey = unchanged)"),
                               (after, "top-5 probabilities after")]))
        rows.append({**row, "target_name": tname, "amplification": factor,
                     "files": {"adversarial": adv, "perturbation": amp, "top5_after": after}})
    return blocks, rows


def section_problem4_attacks(ctx: ReportContext, s: Section) -> None:
    """4(a)(b): one batched targeted attack towards every target of the settings."""
    st = ctx.settings
    model = ctx.main_model()
    s.settings.update({"model": f"{model.name} ({model.weights})",
                       "targets": ", ".join(f"{model.class_name(t)} ({t})" for t in st.targets),
                       "norm": st.norm, "eps": f"{st.eps:.6g} ({st.eps * 255:.3g}/255)", "steps": st.attack_steps,
                       "seed": st.seed, "image": ctx.image_label})
    res = run_attack(model, ctx.input_for(model), targets=st.targets, norm=st.norm, eps=st.eps,
                     steps=st.attack_steps, seed=st.seed)
    d = res.to_dict()
    s.settings.update({"step_size": f"{d['settings']['step_size']:.6g}", "loss": d["settings"]["loss"],
                       "early_stop": d["settings"]["early_stop"], "quantize": d["settings"]["quantize"],
                       "attack time": f"{d['seconds']:.1f} s"})
    s.add(Text(
        f"Projected gradient descent on −log p(target | x) inside the {st.norm} ball of radius "
        f"{st.eps * 255:.3g}/255 around the image, {st.attack_steps} steps; the result is rounded to 8-bit pixels "
        f"inside the ball and success is checked on the rounded image (what a saved PNG holds)."))
    blocks, rows = attack_blocks(ctx, model, res, "p4")
    s.add(*blocks)
    s.data = {"attack": {k: v for k, v in d.items() if k != "history"}, "rows": rows}
    ctx.shared["attack"] = (res, rows)


def section_problem4_difference(ctx: ReportContext, s: Section) -> None:
    """4(c): L∞, L2, PSNR and SSIM of the 8-bit adversarial images of 4(a)(b)."""
    st = ctx.settings
    s.settings.update({"measured on": "the attacks of 4(a)(b), 8-bit images", "SSIM": "11×11 Gaussian window, σ 1.5"})
    if "attack" not in ctx.shared:
        s.status = "unavailable"
        s.add(Note("The attacks of 4(a)(b) did not run, so there is nothing to measure."))
        return
    _, rows = ctx.shared["attack"]
    table = [[f"{r['target_name']} ({r['target']})", r["success"], r["linf"], r["linf_255"], r["l2"],
              "∞ (identical)" if r["psnr_db"] is None else r["psnr_db"], r["ssim"]] for r in rows]
    s.add(Table(["target", "success", "L∞", "L∞ × 255", "L2", "PSNR (dB)", "SSIM"], table))
    worst_psnr = min((r["psnr_db"] for r in rows if r["psnr_db"] is not None), default=None)
    min_ssim = min(r["ssim"] for r in rows)
    fooled = [r for r in rows if r["success"] and r["linf"] > 0]
    s.add(Text(
        f"No pixel moved by more than {max(r['linf_255'] for r in rows):.2g}/255 (ε = {st.eps * 255:.3g}/255). "
        + (f"A PSNR of {worst_psnr:.1f} dB or more and " if worst_psnr is not None else "")
        + f"an SSIM of {min_ssim:.3f} or more (1 = identical) mean the adversarial images are, to a person, the "
        f"same picture: side by side above they cannot be told apart"
        + (f", while the model's answer changed to the target for {len(fooled)} of {len(rows)} targets."
           if fooled else ".")))
    s.data = {"rows": [{"target": r["target"], "linf": r["linf"], "linf_255": r["linf_255"], "l2": r["l2"],
                        "psnr_db": r["psnr_db"], "ssim": r["ssim"], "success": r["success"]} for r in rows]}
