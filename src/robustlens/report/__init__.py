"""The whole problem set as one report: every part run live, written as PNGs, ``report.json`` and one
self-contained ``report.html`` (see :mod:`robustlens.report.html`).

Each part (:data:`PARTS`, registered with :func:`part`) is a function ``(ctx, section)`` that calls the same
public API the individual commands call (``classify``, ``attack``, ``invert``, ``dream``, ``visualize``,
``compare_models``, the reference gradient checks) with the settings it states, so the report's numbers are those the commands give for the same settings and seed.
A section records its ``settings``, wall time (``seconds``), the ``blocks`` the page shows and the ``data``
(numbers) it measured. A part that cannot run (no robust model yet) says so plainly (``status:
"unavailable"``); a part that fails is recorded as ``status: "error"`` and the others still run.
"""

from __future__ import annotations

import math
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from robustlens.errors import UserError
from robustlens.images import example_image, load_pil, save_image
from robustlens.models import DEFAULT_MODEL, Classifier, create_model
from robustlens.models.classify import Prediction, topk
from robustlens.models.layers import last_linear, layer_names, resolve_layer
from robustlens.models.preprocess import preprocess
from robustlens.optim import speed
from robustlens.plots import amplified, plot_topk

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
TARANTULA, TIGER_CAT = 76, 282
DEFAULT_ROBUST_MODEL = "imagenette_resnet_robust"

# Three layers (early, middle, late) per known architecture for the inversions; others: see default_layers.
_INVERSION_LAYERS = {
    "efficientnet_lite": ("_blocks.2", "_blocks.7", "_conv_head"),
    "imagenette_resnet": ("layer2", "layer3", "layer4"),
    "resnet": ("layer1", "layer3", "layer4"),
}


@dataclass(frozen=True)
class ReportSettings:
    """Every knob of the report. ``ReportSettings()`` is the full report (what ``robustlens demo`` runs,
    sized to finish in under 10 minutes on a 2-core CPU); :meth:`quick_settings` is a smoke version that
    checks the whole pipeline in about a minute (the pictures are rough).

    ε in [0, 1] pixel units. Empty layer/unit names mean "chosen from the model" (see :func:`default_layers`).
    """

    seed: int = 0
    targets: tuple[int, ...] = (TARANTULA, TIGER_CAT)
    norm: str = "linf"
    eps: float = 4 / 255
    attack_steps: int = 40
    inversion_layers: tuple[str, ...] = ()
    inversion_steps: int = 100
    robust_norm: str = "l2"
    robust_eps: float = 1.0
    robust_attack_steps: int = 60
    robust_big_eps: float = 10.0
    robust_big_steps: int = 100
    robust_inversion_steps: int = 200
    dream_layer: str = ""
    dream_steps: int = 10
    dream_octaves: int = 3
    visualize_unit: str = ""
    visualize_steps: int = 96
    visualize_size: int = 160
    digits_epochs: int = 8
    quick: bool = False

    @classmethod
    def quick_settings(cls, **overrides) -> "ReportSettings":
        """A few steps of everything: checks the pipeline end to end in well under a minute."""
        base = dict(attack_steps=3, inversion_steps=3, robust_attack_steps=3, robust_big_steps=3,
                    robust_inversion_steps=3,
                    dream_steps=2, dream_octaves=1, visualize_steps=3, visualize_size=64, digits_epochs=1,
                    quick=True)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        d["inversion_layers"] = list(self.inversion_layers)
        return d


# --- small helpers shared with the app ---------------------------------------------------------------------

def prediction_words(preds: list[Prediction], who: str) -> str:
    """``"<who> sees a tabby (281) with probability 0.412; next: tiger cat (0.201), ..."``."""
    best, rest = preds[0], preds[1:]
    tail = ", ".join(f"{p.name} ({p.prob:.3f})" for p in rest)
    return (f"{who} sees {best.name} ({best.index}) with probability {best.prob:.3f} (logit {best.logit:.2f})"
            + (f"; next: {tail}." if tail else "."))


def default_layers(model: Classifier, k: int = 3) -> tuple[str, ...]:
    """``k`` layers from early to late for inversions: a known choice per architecture, else ``k`` evenly
    spaced top-level blocks (named modules with one dot at most whose output is a feature map)."""
    for prefix, names in _INVERSION_LAYERS.items():
        if model.name.startswith(prefix) and all(n in layer_names(model) for n in names):
            return names[:k]
    from robustlens.models.layers import layer_table

    rows = [r for r in layer_table(model) if r["output_shape"] and len(r["output_shape"]) == 4
            and r["name"].count(".") <= 1 and r["type"] not in ("ReLU", "ReLU6", "SiLU", "ZeroPad2d", "Identity")]
    if len(rows) < k:
        raise UserError(f"{model.name}: cannot choose {k} layers to invert; name them with --layer")
    picks = [rows[round(i * (len(rows) - 1) / (k - 1))]["name"] for i in range(k)] if k > 1 else [rows[-1]["name"]]
    return tuple(picks)


def _file(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --- the run context -----------------------------------------------------------------------------------------

@dataclass
class ReportContext:
    """What every section reads: the image, the models (built once, on demand), the output folder."""

    out: Path
    image: Image.Image
    image_label: str
    model_name: str
    weights: str | None
    robust_name: str | None
    robust_weights: str | None
    settings: ReportSettings
    device: torch.device
    log: Callable[[str], None]
    models: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)

    def model(self, name: str, weights: str | None = None, *, seed: int | None = None) -> Classifier:
        key = (name, weights, seed)
        if key not in self.models:
            kw = {} if seed is None else {"seed": seed}
            self.models[key] = create_model(name, weights, **kw).to(self.device)
        return self.models[key]

    def main_model(self) -> Classifier:
        return self.model(self.model_name, self.weights)

    def input_for(self, model: Classifier) -> torch.Tensor:
        """The report's image preprocessed for ``model``: (1, C, S, S) in [0, 1], contiguous, exactly as the
        commands read it (`load_inputs` stacks; a permuted tensor would run other convolution kernels)."""
        return torch.stack([preprocess(self.image, model.config)]).to(self.device)

    def figure(self, name: str) -> Path:
        return self.out / _file(name)


@dataclass(frozen=True)
class Part:
    """One section of the report: ``run(ctx, section)`` fills the section dict (settings, blocks, data)."""

    id: str
    title: str
    problem: str
    run: Callable[[ReportContext, dict], None]

    def new_section(self) -> dict:
        return {"id": self.id, "title": self.title, "problem": self.problem, "status": "ok", "settings": {},
                "seconds": 0.0, "blocks": [], "data": {}}


PARTS: list[Part] = []


def part(id_: str, title: str, problem: str):
    """Decorator adding ``run(ctx, section)`` to :data:`PARTS` (the report's sections, in page order)."""

    def wrap(run: Callable[[ReportContext, dict], None]):
        PARTS.append(Part(id_, title, problem, run))
        return run

    return wrap


def _text(text: str) -> dict:
    return {"kind": "text", "text": text}


def _note(text: str) -> dict:
    return {"kind": "note", "text": text}


def _figs(items: list[tuple[str, str]], caption: str = "", small: bool = False) -> dict:
    block = {"kind": "figures", "items": [{"file": f, "caption": c, **({"small": True} if small else {})}
                                          for f, c in items]}
    if caption:
        block["caption"] = caption
    return block


def _table(columns: list[str], rows: list[list], caption: str = "") -> dict:
    block = {"kind": "table", "columns": columns, "rows": rows}
    if caption:
        block["caption"] = caption
    return block


def _eqs(lines: list[str], caption: str = "") -> dict:
    block = {"kind": "equations", "lines": lines}
    if caption:
        block["caption"] = caption
    return block


def _save(ctx: ReportContext, x: torch.Tensor, name: str) -> str:
    return save_image(x.detach().cpu(), ctx.figure(name)).name


def _topk_plot(ctx: ReportContext, preds: list[Prediction], name: str, *, value: str = "prob", title: str = "",
               highlight: int | None = None) -> str:
    return plot_topk(preds, ctx.figure(name), value=value, title=title, highlight=highlight).name


# --- Problems 1 and 3: the reference layers ----------------------------------------------------------------

FORWARD_EQUATIONS = [
    "y[b, o, i, j] = bias[o] + Σ_{c} Σ_{u, v} w[o, c, u, v] · x[b, c, i·s + u·d − p, j·s + v·d − p]   (x = 0 outside)",
    "N_{out} = ⌊(N + 2p − d·(k − 1) − 1) / s⌋ + 1;   'same' padding: s = 1, p = d·(k − 1)/2 (odd k)",
    "max pooling:  y[b, c, i, j] = max_{(u, v) ∈ window} x[b, c, i·s + u·d − p, j·s + v·d − p]   (x = −∞ outside)",
    "average pooling:  y[b, c, i, j] = (1/|W|) Σ_{(u, v) ∈ window} x[b, c, i·s + u − p, j·s + v − p]",
    "global max pooling:  y[b, c] = max_{i, j} x[b, c, i, j];   global average pooling:  y[b, c] = (1/HW) Σ_{i, j} x[b, c, i, j]",
    "stable softmax:  p_{k} = exp(z_{k} − max_{j} z_{j}) / Σ_{i} exp(z_{i} − max_{j} z_{j})",
]

BACKWARD_EQUATIONS = [
    "δ = ∂C/∂y (the upstream gradient, same shape as y)",
    "convolution:  ∂C/∂w[o, c, u, v] = Σ_{b, i, j} δ[b, o, i, j] · x[b, c, i·s + u·d − p, j·s + v·d − p]",
    "∂C/∂bias[o] = Σ_{b, i, j} δ[b, o, i, j]",
    "∂C/∂x[b, c, m, n] = Σ_{o, u, v} w[o, c, u, v] · δ[b, o, i, j]  over all (i, j) with i·s + u·d − p = m, j·s + v·d − p = n",
    "   (stride 1: a full correlation of δ with the 180°-rotated kernel)",
    "max pooling:  ∂C/∂x = δ routed to the arg-max of each window (first maximum on ties), 0 elsewhere",
    "average pooling:  ∂C/∂x[m, n] = Σ_{windows ∋ (m, n)} δ[i, j] / |W|",
    "linear y = x Wᵀ + b:  ∂C/∂x = δ W,  ∂C/∂W = δᵀ x,  ∂C/∂b = Σ_{b} δ;   ReLU:  ∂C/∂x = δ · 1[x > 0]",
    "softmax cross-entropy C = −log p_{y}:  ∂C/∂z = p − onehot(y)",
    "SGD:  W ← W − η · ∂C/∂W",
]


def _gradcheck(ctx: ReportContext) -> dict:
    if "gradcheck" not in ctx.shared:
        from robustlens.reference.gradcheck import run_checks

        ctx.shared["gradcheck"] = run_checks(seed=ctx.settings.seed)
    return ctx.shared["gradcheck"]


@part("problem1", "Problem 1 — convolution and pooling from scratch", "1")
def section_problem1(ctx: ReportContext, s: dict) -> None:
    from robustlens.reference.one_vs_many import one_vs_many_demo

    s["settings"].update({"implementation": "robustlens.reference (NumPy, float64)", "seed": ctx.settings.seed})
    s["blocks"].append(_eqs(FORWARD_EQUATIONS, "Forward passes (layout as in torch: x (B, C, H, W), w (C_out, C_in, kh, kw);"
                                               " stride s, padding p, dilation d):"))
    checks = _gradcheck(ctx)
    rows = [[r["layer"], r["shape"], r["args"], r["forward_rel_err_vs_torch"]]
            for r in checks["checks"] if r["layer"] != "sgd_step"]
    s["blocks"].append(_text(f"Forward passes against torch.nn.functional (torch {checks['torch_version']}), "
                             f"relative error max|ours − torch| / max|torch| on random float64 inputs (seed "
                             f"{checks['seed']}):"))
    s["blocks"].append(_table(["layer", "shapes", "arguments", "forward rel. error vs torch"], rows))
    demo = one_vs_many_demo()
    s["blocks"].append(_text("1(b) One cat or many: a plus-shaped “cat” detector (3×3 convolution, bias −4, ReLU) "
                             "on 8×8 scenes with 0–4 cats, then global max vs global average pooling. Max pooling "
                             "answers “is there a cat?” (1 for any number of cats); average pooling measures how "
                             "much cat there is (cats / 64)."))
    s["blocks"].append(_table(["cats", "cat pixels", "global max pool", "global average pool"],
                              [[r["cats"], r["cat_pixels"], r["global_max"], r["global_avg"]] for r in demo]))
    s["data"] = {"forward_max_rel_err_vs_torch": max((r[3] for r in rows if r[3] is not None), default=None),
                 "one_vs_many": demo}


# --- Problem 2: features and classification ----------------------------------------------------------------

@part("problem2", "Problem 2 — ResNet-50 features and the pretrained classifier", "2")
def section_problem2(ctx: ReportContext, s: dict) -> None:
    st = ctx.settings
    model = ctx.main_model()
    s["settings"].update({"random-init model": f"resnet50, weights none, seed {st.seed}",
                  "pretrained model": f"{model.name} ({model.weights})", "image": ctx.image_label})
    rnet = ctx.model("resnet50", "none", seed=st.seed)
    name, fc = last_linear(rnet)
    x_r = ctx.input_for(rnet)
    feats: dict[str, torch.Tensor] = {}
    handle = fc.register_forward_pre_hook(lambda _m, inp: feats.__setitem__("x", inp[0].detach()))
    try:
        with torch.no_grad():
            logits_r = rnet(x_r)
    finally:
        handle.remove()
    f = feats["x"][0]
    preds_r = topk(rnet, logits_r)[0]
    s["blocks"].append(_text(
        f"The last layer of ResNet-50 is {name} = Linear({fc.in_features} → {fc.out_features}): it takes "
        f"{fc.in_features} input features (the global-average-pooled output of layer4). For this image the "
        f"randomly initialised network (seed {st.seed}) gives a feature vector of shape {tuple(f.shape)} "
        f"(mean {float(f.mean()):.4f}, max {float(f.max()):.4f}, {int((f > 0).sum())} non-zero)."))
    fig_r = _topk_plot(ctx, preds_r, "p2_random_resnet50_top5_probs.png",
                       title="random-init ResNet-50: top-5 probabilities")
    s["blocks"].append(_figs([(fig_r, "random-init ResNet-50: top-5 probabilities")]))
    s["blocks"].append(_text(prediction_words(preds_r, "The random-init ResNet-50") + " These classes mean "
                             "nothing: with random weights the logits are arbitrary (and can be large, so the "
                             "softmax may even look confident)."))

    x = ctx.input_for(model)
    with torch.no_grad():
        preds = topk(model, model(x))[0]
    fig_in = _save(ctx, x[0], "input.png")
    fig_l = _topk_plot(ctx, preds, "p2_pretrained_top5_logits.png", value="logit",
                       title=f"{model.name}: top-5 logits")
    fig_p = _topk_plot(ctx, preds, "p2_pretrained_top5_probs.png", title=f"{model.name}: top-5 probabilities")
    s["blocks"].append(_figs([(fig_in, f"input: {ctx.image_label}, {x.shape[-1]}×{x.shape[-2]} after "
                                       f"{model.name}'s preprocessing"),
                              (fig_l, "pretrained: top-5 logits"), (fig_p, "pretrained: top-5 probabilities")]))
    s["blocks"].append(_text(prediction_words(preds, f"The pretrained {model.name}")))
    s["data"] = {"last_layer": {"name": name, "in_features": fc.in_features, "out_features": fc.out_features},
                 "feature_shape": list(f.shape), "random_init_topk": [p.to_dict() for p in preds_r],
                 "pretrained_topk": [p.to_dict() for p in preds], "pretrained_model": model.describe()}
    ctx.shared["clean_top1"] = preds[0]


@part("problem3", "Problem 3 — backpropagation through the layers, gradient checks and SGD", "3")
def section_problem3(ctx: ReportContext, s: dict) -> None:
    st = ctx.settings
    s["settings"].update({"seed": st.seed, "finite-difference step": "1e-6 (central)", "digits CNN epochs": st.digits_epochs})
    s["blocks"].append(_eqs(BACKWARD_EQUATIONS, "Backward passes (δ = ∂C/∂y):"))
    checks = _gradcheck(ctx)

    def worst(r, keys):
        vals = [r.get(k) for k in keys if r.get(k) is not None]
        return max(vals) if vals else None

    rows = [[r["layer"], r["shape"], r["args"],
             worst(r, ("dx_rel_err_vs_torch", "dw_rel_err_vs_torch", "db_rel_err_vs_torch", "update_rel_err_vs_torch")),
             worst(r, ("dx_rel_err_vs_fd", "dw_rel_err_vs_fd", "db_rel_err_vs_fd", "update_rel_err_vs_formula")),
             r["passed"]] for r in checks["checks"]]
    s["blocks"].append(_text(
        f"Live gradient check (seed {checks['seed']}, {checks['seconds']:.1f} s): hand-derived gradients against "
        f"torch autograd (tolerance {checks['tolerance_vs_torch']:.0e}) and central finite differences "
        f"(tolerance {checks['tolerance_vs_fd']:.0e}). Largest error vs torch "
        f"{_num(checks['max_error_vs_torch'])}, vs finite differences {_num(checks['max_error_vs_fd'])}: "
        f"{'all checks passed' if checks['passed'] else 'SOME CHECKS FAILED'}."))
    s["blocks"].append(_table(["layer", "shapes", "arguments", "grad rel. error vs torch",
                               "grad rel. error vs finite diff.", "passed"], rows))
    s["data"] = {"gradcheck": checks}
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        s["blocks"].append(_note("The tiny digits CNN trained with these layers needs scikit-learn "
                                 "(pip install scikit-learn); not run."))
        return
    from robustlens.reference.digits import train_digits_cnn

    digits = train_digits_cnn(seed=st.seed, epochs=st.digits_epochs)
    s["data"]["digits_cnn"] = digits
    s["blocks"].append(_text(
        f"A tiny CNN made only of these layers (Conv 3×3 → ReLU → MaxPool 2 → Linear), trained with plain SGD for "
        f"{digits['epochs']} epochs on scikit-learn's 8×8 digits ({digits['n_train']} train / {digits['n_test']} "
        f"test images, seed {digits['seed']}): test accuracy {digits['test_accuracy']:.3f}, train accuracy "
        f"{digits['train_accuracy']:.3f}, last-epoch loss {digits['final_loss']:.3f} ({digits['seconds']:.1f} s)."))


def _num(v) -> str:
    return "–" if v is None else f"{v:.1e}"


# --- Problem 4: attacks, visual difference, inversion, robust models ------------------------------------------

def run_attack(model: Classifier, x: torch.Tensor, *, targets, norm: str, eps: float, steps: int, seed: int):
    """The report's attack: :func:`robustlens.recipes.attacks.attack` with the CLI's defaults for everything not given."""
    from robustlens.recipes.attacks import attack

    return attack(model, x, target=list(targets), norm=norm, eps=eps, steps=steps, seed=seed, progress=False)


def _attack_blocks(ctx: ReportContext, model: Classifier, res, prefix: str) -> tuple[list[dict], list[dict]]:
    """Figures per target (original, adversarial, amplified perturbation, top-5 before/after) and data rows."""
    blocks, rows = [], []
    orig = _save(ctx, res.original[0], f"{prefix}_original.png")
    before = _topk_plot(ctx, res.before[0], f"{prefix}_top5_before.png",
                        title=f"{model.name}: before the attack")
    blocks.append(_figs([(orig, "original"), (before, "top-5 probabilities before the attack")], small=False))
    d = res.to_dict()
    for i, row in enumerate(d["results"]):
        t = row["target"]
        tname = model.class_name(t)
        tag = f"{prefix}_{t:03d}_{_file(tname)}"
        adv = _save(ctx, res.adversarial[i], f"{tag}_adversarial.png")
        amp_img, factor = amplified(res.perturbation[i])
        amp = _save(ctx, amp_img, f"{tag}_perturbation_x{factor:.0f}.png")
        after = _topk_plot(ctx, res.after[i], f"{tag}_top5_after.png", highlight=t,
                           title=f"after the attack towards {tname}")
        top1 = res.after[i][0]
        if res.before[i][0].index == t:
            outcome = (f"the model already says {tname} for the clean image (p = {top1.prob:.3f}), so the attack "
                       f"has nothing to do and returns the image unchanged (the problem set's photo is a corgi: "
                       f"try --image with one)")
        else:
            outcome = (f"the attack {'succeeded' if row['success'] else 'did not succeed'}; the model now says "
                       f"{top1.name} ({top1.index}) with probability {top1.prob:.3f}")
        blocks.append(_text(
            f"Target {tname} ({t}): {outcome}. Perturbation norms: L∞ = {row['linf']:.5f} "
            f"({row['linf_255']:.2f}/255), L2 = {row['l2']:.4f}."))
        blocks.append(_figs([(orig, "original"), (adv, f"adversarial (target {tname})"),
                             (amp, f"perturbation × {factor:.1f} (grey = unchanged)"),
                             (after, "top-5 probabilities after")]))
        rows.append({**row, "target_name": tname, "amplification": factor,
                     "files": {"adversarial": adv, "perturbation": amp, "top5_after": after}})
    return blocks, rows


@part("problem4_attacks", "Problem 4 (a)(b) — targeted adversarial attacks", "4(a)(b)")
def section_problem4_attacks(ctx: ReportContext, s: dict) -> None:
    st = ctx.settings
    model = ctx.main_model()
    settings = {"model": f"{model.name} ({model.weights})",
                "targets": ", ".join(f"{model.class_name(t)} ({t})" for t in st.targets),
                "norm": st.norm, "eps": f"{st.eps:.6g} ({st.eps * 255:.3g}/255)", "steps": st.attack_steps,
                "seed": st.seed, "image": ctx.image_label}
    s["settings"].update(settings)
    x = ctx.input_for(model)
    res = run_attack(model, x, targets=st.targets, norm=st.norm, eps=st.eps, steps=st.attack_steps, seed=st.seed)
    d = res.to_dict()
    s["settings"].update({"step_size": f"{d['settings']['step_size']:.6g}", "loss": d["settings"]["loss"],
                          "early_stop": d["settings"]["early_stop"], "quantize": d["settings"]["quantize"],
                          "attack time": f"{d['seconds']:.1f} s"})
    s["blocks"].append(_text(
        f"Projected gradient descent on −log p(target | x) inside the {st.norm} ball of radius "
        f"{st.eps * 255:.3g}/255 around the image, {st.attack_steps} steps; the result is rounded to 8-bit pixels "
        f"inside the ball and success is checked on the rounded image (what a saved PNG holds)."))
    blocks, rows = _attack_blocks(ctx, model, res, "p4")
    s["blocks"] += blocks
    s["data"] = {"attack": {k: v for k, v in d.items() if k != "history"}, "rows": rows}
    ctx.shared["attack"] = (res, rows)


@part("problem4_difference", "Problem 4 (c) — how different do the images look?", "4(c)")
def section_problem4_difference(ctx: ReportContext, s: dict) -> None:
    st = ctx.settings
    s["settings"].update({"measured on": "the attacks of 4(a)(b), 8-bit images", "SSIM": "11×11 Gaussian window, σ 1.5"})
    if "attack" not in ctx.shared:
        s["status"] = "unavailable"
        s["blocks"].append(_note("The attacks of 4(a)(b) did not run, so there is nothing to measure."))
        return
    _, rows = ctx.shared["attack"]
    table = [[f"{r['target_name']} ({r['target']})", r["success"], r["linf"], r["linf_255"], r["l2"],
              "∞ (identical)" if r["psnr_db"] is None else r["psnr_db"], r["ssim"]] for r in rows]
    s["blocks"].append(_table(["target", "success", "L∞", "L∞ × 255", "L2", "PSNR (dB)", "SSIM"], table))
    worst_psnr = min((r["psnr_db"] for r in rows if r["psnr_db"] is not None), default=None)
    min_ssim = min(r["ssim"] for r in rows)
    fooled = [r for r in rows if r["success"] and r["linf"] > 0]
    s["blocks"].append(_text(
        f"No pixel moved by more than {max(r['linf_255'] for r in rows):.2g}/255 (ε = {st.eps * 255:.3g}/255). "
        + (f"A PSNR of {worst_psnr:.1f} dB or more and " if worst_psnr is not None else "")
        + f"an SSIM of {min_ssim:.3f} or more (1 = identical) mean the adversarial images are, to a person, the "
        f"same picture: side by side above they cannot be told apart"
        + (f", while the model's answer changed to the target for {len(fooled)} of {len(rows)} targets."
           if fooled else ".")))
    s["data"] = {"rows": [{"target": r["target"], "linf": r["linf"], "linf_255": r["linf_255"], "l2": r["l2"],
                           "psnr_db": r["psnr_db"], "ssim": r["ssim"], "success": r["success"]} for r in rows]}


def run_inversion(model: Classifier, x: torch.Tensor, *, layers, steps: int, seed: int):
    """The report's inversion: :func:`robustlens.recipes.inversion.invert` with the CLI's defaults otherwise."""
    from robustlens.recipes.inversion import invert

    return invert(model, x, layers=list(layers), steps=steps, seed=seed, progress=False)


def _inversion_blocks(ctx: ReportContext, res, prefix: str) -> tuple[list[dict], dict]:
    """Original and one reconstruction per layer in a row, and a table of feature distances."""
    items = [(_save(ctx, res.reference[0], f"{prefix}_original.png"), "original")]
    d = res.to_dict()
    for i, row in enumerate(d["layers"]):
        f = _save(ctx, res.images[i], f"{prefix}_{_file(row['layer'])}.png")
        items.append((f, f"reconstruction from {row['layer']} (feature distance {row['distance']:.3f})"))
    table = _table(["layer", "relative feature distance at the noise start", "after", "removed"],
                   [[r["layer"], r["start_distance"], r["distance"], r["drop"]] for r in d["layers"]])
    return [_figs(items), table], _strip_history(d)


@part("problem4_inversion", "Problem 4 (d) — feature inversion at three layers", "4(d)")
def section_problem4_inversion(ctx: ReportContext, s: dict) -> None:
    st = ctx.settings
    model = ctx.main_model()
    layers = st.inversion_layers or default_layers(model)
    s["settings"].update({"model": f"{model.name} ({model.weights})", "layers": ", ".join(layers),
                  "steps": st.inversion_steps, "seed": st.seed, "start": "noise"})
    x = ctx.input_for(model)
    res = run_inversion(model, x, layers=layers, steps=st.inversion_steps, seed=st.seed)
    blocks, data = _inversion_blocks(ctx, res, "p4d")
    s["blocks"].append(_text(
        "Starting from noise, each reconstruction minimises ‖φ_L(x) − φ_L(x₀)‖² at one layer L: it shows what the "
        "layer keeps of the image. Early layers keep nearly everything; late layers keep what matters for the "
        "class and lose the exact layout and colours."))
    s["blocks"] += blocks
    s["data"] = data


def _strip_history(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "history"}


def robust_pair(ctx: ReportContext) -> tuple[Classifier, Classifier] | str:
    """(standard, robust) models for 4(e)(f), or a sentence saying why there is no robust model."""
    name = ctx.robust_name or DEFAULT_ROBUST_MODEL
    try:
        robust = ctx.model(name, ctx.robust_weights)
    except UserError as e:
        return (f"No robust model is available ({e}). Train or fetch one (see `robustlens models`), or pass "
                f"--robust-model NAME [--robust-weights PATH]; this section is left out rather than faked.")
    from robustlens.models._registry import registered

    counterpart = name.removesuffix("_robust") + "_standard" if name.endswith("_robust") else None
    if counterpart is not None and registered(counterpart) is not None:
        try:
            standard = ctx.model(counterpart)
        except UserError as e:
            return f"The robust model {name} is here but its standard counterpart {counterpart} is not ({e})."
    else:
        standard = ctx.main_model()
    return standard, robust


def _robust_targets(ctx: ReportContext, model: Classifier) -> tuple[int, ...]:
    """The report's targets when the model has ImageNet's 1000 classes; otherwise the two classes the
    model finds least likely for the image (the hardest targets)."""
    if model.num_classes == 1000:
        return tuple(ctx.settings.targets)
    with torch.no_grad():
        logits = model(ctx.input_for(model))[0]
    return tuple(int(i) for i in logits.argsort()[:2].tolist())


def _robust_setup(ctx: ReportContext, s: dict):
    """(standard, robust, targets) for 4(e)(f), or None after marking the section unavailable."""
    key = "robust_setup"
    if key not in ctx.shared:
        pair = robust_pair(ctx)
        ctx.shared[key] = pair if isinstance(pair, str) else (*pair, _robust_targets(ctx, pair[0]))
    setup = ctx.shared[key]
    if isinstance(setup, str):
        s["status"] = "unavailable"
        s["blocks"].append(_note(setup))
        return None
    standard, robust, targets = setup
    s["settings"].update({"standard model": f"{standard.name} ({standard.weights})",
                          "robust model": f"{robust.name} ({robust.weights})",
                          "image": ctx.image_label, "seed": ctx.settings.seed})
    return setup


@part("problem4_robust", "Problem 4 (e)(f) — the same attacks on an adversarially robust model", "4(e)(f)")
def section_problem4_robust(ctx: ReportContext, s: dict) -> None:
    st = ctx.settings
    setup = _robust_setup(ctx, s)
    if setup is None:
        return
    standard, robust, targets = setup
    s["settings"].update({"targets": ", ".join(f"{standard.class_name(t)} ({t})" for t in targets),
                          "norm": st.robust_norm, "eps": f"{st.robust_eps:.6g}", "steps": st.robust_attack_steps})
    if standard.num_classes != 1000:
        names = ", ".join(standard.class_name(i) for i in range(standard.num_classes))
        s["blocks"].append(_text(
            f"These models have {standard.num_classes} classes ({names}), so Tarantula and Tiger cat cannot be "
            f"targets: the targets are the two classes the standard model finds least likely for this image."))
    s["blocks"].append(_text(
        f"Exactly the same targeted attack ({st.robust_norm}, ε = {st.robust_eps:g}, {st.robust_attack_steps} steps, "
        f"seed {st.seed}; the robust model was trained against attacks of this kind) on both models."))
    data = {"targets": list(targets), "models": {}}
    table, rows_by_kind = [], {}
    for kind, model in (("standard", standard), ("robust", robust)):
        from robustlens.robust.compare import target_for

        labels = [target_for(model, _wnid(standard, t)) for t in targets] if model is robust else targets
        res = run_attack(model, ctx.input_for(model), targets=labels, norm=st.robust_norm, eps=st.robust_eps,
                         steps=st.robust_attack_steps, seed=st.seed)
        _, rows = _attack_blocks(ctx, model, res, f"p4e_{kind}")
        rows_by_kind[kind] = rows
        data["models"][kind] = {"model": model.describe(), "attack": _strip_history(res.to_dict()), "rows": rows}
        for r in rows:
            table.append([kind, model.name, f"{r['target_name']} ({r['target']})", r["success"],
                          r["after"][0]["name"], r["after"][0]["prob"], r["linf_255"], r["l2"], r["psnr_db"],
                          r["ssim"]])
    s["blocks"].append(_table(["model", "name", "target", "success", "top-1 after", "p(top-1)", "L∞ × 255", "L2",
                               "PSNR (dB)", "SSIM"], table))
    for r_std, r_rob in zip(rows_by_kind["standard"], rows_by_kind["robust"]):
        s["blocks"].append(_figs(
            [(r_std["files"]["adversarial"], f"standard: adversarial → {r_std['target_name']}"),
             (r_std["files"]["perturbation"], f"standard: perturbation × {r_std['amplification']:.1f}"),
             (r_rob["files"]["adversarial"], f"robust: adversarial → {r_rob['target_name']}"),
             (r_rob["files"]["perturbation"], f"robust: perturbation × {r_rob['amplification']:.1f}")],
            caption=f"Target {r_std['target_name']}: standard (left) vs robust (right).", small=True))
    fooled = {k: sum(r["success"] for r in rows) for k, rows in rows_by_kind.items()}
    s["blocks"].append(_text(f"The attack reached its target on {fooled['standard']} of {len(targets)} targets for "
                             f"the standard model and {fooled['robust']} of {len(targets)} for the robust one."))
    s["data"] = data


def _wnid(model: Classifier, label: int) -> str:
    """The ImageNet wnid of ``model``'s class ``label`` (how `robustlens compare` names a target in any model)."""
    from robustlens.models.labels import imagenet_classes

    wnids = getattr(model, "class_wnids", None)
    return wnids[label] if wnids is not None else imagenet_classes()[label].wnid


def run_comparison(models, image: Image.Image, *, target: str, norm: str, eps: float, steps: int, layers,
                   invert_steps: int, seed: int):
    """The report's side-by-side run: :func:`robustlens.robust.compare.compare_models` (what `robustlens compare`
    calls) with its defaults for everything not given."""
    from robustlens.robust.compare import compare_models

    return compare_models(models, image, target=target, norm=norm, eps=eps, steps=steps, layers=list(layers),
                          invert_steps=invert_steps, seed=seed)


@part("problem4_compare", "Problem 4 (e)(f) — standard vs robust side by side: large-ε attack and inversions",
      "4(e)(f)")
def section_problem4_compare(ctx: ReportContext, s: dict) -> None:
    from robustlens.robust.compare import plot_comparison

    st = ctx.settings
    setup = _robust_setup(ctx, s)
    if setup is None:
        return
    standard, robust, targets = setup
    target = _wnid(standard, targets[0])
    layers = default_layers(robust)
    if layers != default_layers(standard):
        raise UserError(f"{standard.name} and {robust.name} do not share the layers {', '.join(layers)}; "
                        "compare them with `robustlens compare --layer ...`")
    s["settings"].update({"target": f"{standard.class_name(targets[0])} ({target})", "norm": "l2",
                          "eps": st.robust_big_eps, "steps": st.robust_big_steps, "early stop": False,
                          "inversion layers": ", ".join(layers), "inversion steps": st.robust_inversion_steps})
    runs = run_comparison([standard, robust], ctx.image, target=target, norm="l2", eps=st.robust_big_eps,
                          steps=st.robust_big_steps, layers=layers, invert_steps=st.robust_inversion_steps,
                          seed=st.seed)
    fig = plot_comparison(runs, ctx.figure("p4f_compare.png"),
                          title=f"l2 ε={st.robust_big_eps:g}, {st.robust_big_steps} steps, target "
                                f"{standard.class_name(targets[0])}").name
    s["blocks"].append(_text(
        f"A large targeted attack (L2, ε = {st.robust_big_eps:g}, {st.robust_big_steps} steps, no early stop) towards "
        f"{standard.class_name(targets[0])}, and inversions from noise at {', '.join(layers)}, on both models; each "
        f"adversarial image is also shown to the other model. On a robust model the attack has to paint visible "
        f"features of the target and the deep-layer inversions still look like the image; on a standard model both "
        f"look like noise."))
    s["blocks"].append(_figs([(fig, "one row per model: input, adversarial image, perturbation, inversions")]))
    rows_of_figures, table, inv_rows = [], [], []
    for run in runs:
        items = []
        kind = "robust" if run.name == robust.name else "standard"
        a, after = run.attack, run.attack.after[0][0]
        items.append((_save(ctx, a.adversarial[0], f"p4f_{kind}_adversarial.png"), f"{kind}: adversarial"))
        amp, factor = amplified(a.perturbation[0])
        items.append((_save(ctx, amp, f"p4f_{kind}_perturbation.png"), f"{kind}: perturbation × {factor:.1f}"))
        other = next(iter(run.transfer.values()), {})
        table.append([kind, run.name, bool(a.success[0]), after.name, after.prob, float(a.l2[0]),
                      other.get("top1_name"), other.get("top1_prob")])
        for i, layer in enumerate(run.inversion.layers):
            inv_rows.append([kind, layer, float(run.inversion.start_distance[i]), float(run.inversion.distance[i])])
            items.append((_save(ctx, run.inversion.images[i], f"p4f_{kind}_inverted_{_file(layer)}.png"),
                          f"{kind}: inverted from {layer}"))
        rows_of_figures.append(_figs(items, small=True))
    s["blocks"].append(_table(["model", "name", "target reached", "top-1 after", "p(top-1)", "L2",
                               "the other model sees", "its p"], table))
    s["blocks"] += rows_of_figures
    s["blocks"].append(_table(["model", "layer", "feature distance at the noise start", "after"], inv_rows,
                              caption="inversions: relative feature distance"))
    s["data"] = {"target": target, "layers": list(layers), "models": [r.to_dict() for r in runs]}


# --- DeepDream and feature visualisation ---------------------------------------------------------------------

@part("dream", "DeepDream", "extra")
def section_dream(ctx: ReportContext, s: dict) -> None:
    from robustlens.recipes.dream import dream

    st = ctx.settings
    model = ctx.main_model()
    layer = st.dream_layer or default_layers(model)[1]
    s["settings"].update({"model": f"{model.name} ({model.weights})", "layer": layer,
                                                   "steps per octave": st.dream_steps, "octaves": st.dream_octaves,
                                                   "seed": st.seed})
    x = ctx.input_for(model)
    res = dream(model, x, layer, steps=st.dream_steps, octaves=st.dream_octaves, seed=st.seed, progress=False)
    d = _strip_history(res.to_dict())
    orig = _save(ctx, x[0], "dream_original.png")
    out = _save(ctx, res.image[0], f"dream_{_file(layer)}.png")
    s["settings"].update({"octave sizes": ", ".join(f"{h}×{w}" for h, w in res.octave_sizes),
                          "step size": res.settings["step_size"], "jitter": res.settings["jitter"]})
    s["blocks"].append(_text(
        f"Gradient ascent on the mean squared activation of layer {layer} over {st.dream_octaves} octave(s) with "
        f"random jitter: the image is pushed towards whatever that layer responds to. Mean squared activation "
        f"{_fmt(d['start_mean_square_activation'])} at the start, {_fmt(d['final_mean_square_activation'])} at "
        f"the end."))
    s["blocks"].append(_figs([(orig, "original"), (out, f"DeepDream at {layer}")]))
    s["data"] = d


@part("visualize", "Feature visualisation", "extra")
def section_visualize(ctx: ReportContext, s: dict) -> None:
    from robustlens.recipes.visualize import visualize

    st = ctx.settings
    model = ctx.main_model()
    unit = st.visualize_unit or f"{default_layers(model)[1]}:0"
    s["settings"].update({"model": f"{model.name} ({model.weights})", "unit": unit, "parameterisation": "fft",
                  "steps": st.visualize_steps, "size": st.visualize_size, "seed": st.seed})
    res = visualize(model, unit, param="fft", steps=st.visualize_steps, size=st.visualize_size, seed=st.seed,
                    progress=False)
    f = _save(ctx, res.images[0], f"visualize_{_file(unit)}.png")
    d = _strip_history(res.to_dict())
    s["blocks"].append(_text(
        f"An image optimised from noise (FFT parameterisation, decorrelated colour, random jitter/scale/rotation) "
        f"to maximise the mean activation of channel {unit}: {_fmt(d['start_value'][0])} at the start, "
        f"{_fmt(d['value'][0])} at the end."))
    s["blocks"].append(_figs([(f, f"what {unit} responds to")]))
    s["data"] = d


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4g}"


# --- the whole report ----------------------------------------------------------------------------------------

def _image_input(image: str | Path | Image.Image | None) -> tuple[Image.Image, str]:
    if image is None:
        return example_image("chelsea"), example_label("chelsea")
    if isinstance(image, Image.Image):
        return image.convert("RGB"), "image given in code"
    return load_pil(image), str(image)


def example_label(name: str) -> str:
    return f"{name} (scikit-image sample photo, CC0)"


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

    ``image``: a path, a Pillow image, or None for scikit-image's ``chelsea`` (``image_label`` names it). ``model``/``weights``: the
    pretrained model of Problems 2 and 4 (default the bundled EfficientNet-Lite0). ``robust_model``: the robust
    model of 4(e)(f) (default ``imagenette_resnet_robust`` when its weights are there). Returns the report dict
    (also in ``report.json``); ``report["html"]`` is the HTML file's path.
    """
    from robustlens.report import html as report_html

    settings = settings or ReportSettings()
    pil, label = _image_input(image)  # bad input fails before anything is written
    label = image_label or label
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    ctx = ReportContext(out=out, image=pil, image_label=label, model_name=model, weights=weights,
                        robust_name=robust_model, robust_weights=robust_weights, settings=settings,
                        device=torch.device(device), log=log)
    main = ctx.main_model()  # an unknown model, weights file, layer or class is a UserError before any writing
    for layer in settings.inversion_layers:
        resolve_layer(main, layer)
    for t in settings.targets:
        if not 0 <= t < main.num_classes:
            raise UserError(f"target class {t} is not a class of {main.name} (0..{main.num_classes - 1})")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = []
    parts = PARTS if parts is None else parts
    for i, p in enumerate(parts, 1):
        s = p.new_section()
        t = time.perf_counter()
        try:
            p.run(ctx, s)
        except UserError as e:
            _failed(s, "unavailable", str(e))
        except Exception as e:  # one broken part must not lose the others; the traceback goes to the log
            log(traceback.format_exc())
            _failed(s, "error", f"{type(e).__name__}: {e}")
        s["seconds"] = time.perf_counter() - t
        done.append(s)
        log(f"[{i}/{len(parts)}] {s['title']}: {s['status']} ({s['seconds']:.1f} s)")
    total = time.perf_counter() - t0
    report = {
        "meta": {
            "title": "robustlens report — DeepDream and adversarial attacks, the whole problem set",
            "summary": {
                "image": label, "model": f"{main.name} ({main.weights})",
                "robust model": robust_model or f"{DEFAULT_ROBUST_MODEL} (default)",
                "settings": "quick (smoke test: few steps)" if settings.quick else "full",
                "seed": settings.seed, "total time": f"{total:.1f} s",
                "device": f"{ctx.device} ({torch.get_num_threads()} threads)",
                "speed settings": ", ".join(f"{k}={v}" for k, v in speed.current().to_dict().items()),
                "versions": f"robustlens {_version()}, torch {torch.__version__}, Python {platform.python_version()}",
                "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            },
        },
        "settings": settings.to_dict(),
        "image": label,
        "model": main.describe(),
        "sections": done,
        "status": "ok" if all(s["status"] == "ok" for s in done) else
                  ("error" if any(s["status"] == "error" for s in done) else "partial"),
        "seconds": total,
    }
    (out / REPORT_JSON).write_text(_json(report), encoding="utf-8")
    html_path = out / REPORT_HTML
    html_path.write_text(report_html.render(report, out), encoding="utf-8")
    report["html"] = str(html_path)
    return report


def _failed(s: dict, status: str, message: str) -> None:
    s["status"] = status
    s["blocks"] = [_note(("Not available: " if status == "unavailable" else "This part failed: ") + message)]
    s["data"]["error"] = message


def _json(obj) -> str:
    import json

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, torch.Tensor):
            return clean(v.tolist())
        return v

    return json.dumps(clean(obj), indent=2) + "\n"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("robustlens")
    except PackageNotFoundError:
        return "unknown"
