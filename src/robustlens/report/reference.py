"""Problems 1 and 3: the from-scratch NumPy layers (:mod:`robustlens.reference`): their equations, the live
forward and gradient checks against torch and finite differences, the one-cat-vs-many demo and the tiny
digits CNN trained with them."""

from __future__ import annotations

import importlib.util

from robustlens.report.blocks import Equations, Note, Section, Table, Text, sci
from robustlens.report.context import ReportContext

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


_GRAD_VS_TORCH = ("dx_rel_err_vs_torch", "dw_rel_err_vs_torch", "db_rel_err_vs_torch", "update_rel_err_vs_torch")
_GRAD_VS_FD = ("dx_rel_err_vs_fd", "dw_rel_err_vs_fd", "db_rel_err_vs_fd", "update_rel_err_vs_formula")


def gradcheck(ctx: ReportContext) -> dict:
    """The reference gradient checks (run once per report; Problems 1 and 3 both show them)."""
    if "gradcheck" not in ctx.shared:
        from robustlens.reference.gradcheck import run_checks

        ctx.shared["gradcheck"] = run_checks(seed=ctx.settings.seed)
    return ctx.shared["gradcheck"]


def section_problem1(ctx: ReportContext, s: Section) -> None:
    """Forward equations, forward errors vs torch, and 1(b) global max vs average pooling."""
    from robustlens.reference.one_vs_many import one_vs_many_demo

    s.settings.update({"implementation": "robustlens.reference (NumPy, float64)", "seed": ctx.settings.seed})
    s.add(Equations(FORWARD_EQUATIONS, "Forward passes (layout as in torch: x (B, C, H, W), w (C_out, C_in, kh, "
                                       "kw); stride s, padding p, dilation d):"))
    checks = gradcheck(ctx)
    rows = [[r["layer"], r["shape"], r["args"], r["forward_rel_err_vs_torch"]]
            for r in checks["checks"] if r["layer"] != "sgd_step"]
    s.add(Text(f"Forward passes against torch.nn.functional (torch {checks['torch_version']}), relative error "
               f"max|ours − torch| / max|torch| on random float64 inputs (seed {checks['seed']}):"),
          Table(["layer", "shapes", "arguments", "forward rel. error vs torch"], rows))
    demo = one_vs_many_demo()
    s.add(Text("1(b) One cat or many: a plus-shaped “cat” detector (3×3 convolution, bias −4, ReLU) on 8×8 scenes "
               "with 0–4 cats, then global max vs global average pooling. Max pooling answers “is there a cat?” (1 "
               "for any number of cats); average pooling measures how much cat there is (cats / 64)."),
          Table(["cats", "cat pixels", "global max pool", "global average pool"],
                [[r["cats"], r["cat_pixels"], r["global_max"], r["global_avg"]] for r in demo]))
    s.data = {"forward_max_rel_err_vs_torch": max((r[3] for r in rows if r[3] is not None), default=None),
              "one_vs_many": demo}


def _worst(row: dict, keys: tuple[str, ...]) -> float | None:
    vals: list[float] = [row[k] for k in keys if row.get(k) is not None]
    return max(vals) if vals else None


def section_problem3(ctx: ReportContext, s: Section) -> None:
    """Backward equations, the live gradient checks, and the digits CNN trained with plain SGD."""
    st = ctx.settings
    s.settings.update({"seed": st.seed, "finite-difference step": "1e-6 (central)",
                       "digits CNN epochs": st.digits_epochs})
    s.add(Equations(BACKWARD_EQUATIONS, "Backward passes (δ = ∂C/∂y):"))
    checks = gradcheck(ctx)
    rows = [[r["layer"], r["shape"], r["args"], _worst(r, _GRAD_VS_TORCH), _worst(r, _GRAD_VS_FD), r["passed"]]
            for r in checks["checks"]]
    s.add(Text(
        f"Live gradient check (seed {checks['seed']}, {checks['seconds']:.1f} s): hand-derived gradients against "
        f"torch autograd (tolerance {checks['tolerance_vs_torch']:.0e}) and central finite differences "
        f"(tolerance {checks['tolerance_vs_fd']:.0e}). Largest error vs torch "
        f"{sci(checks['max_error_vs_torch'])}, vs finite differences {sci(checks['max_error_vs_fd'])}: "
        f"{'all checks passed' if checks['passed'] else 'SOME CHECKS FAILED'}."),
          Table(["layer", "shapes", "arguments", "grad rel. error vs torch", "grad rel. error vs finite diff.",
                 "passed"], rows))
    s.data = {"gradcheck": checks}
    if importlib.util.find_spec("sklearn") is None:
        s.add(Note("The tiny digits CNN trained with these layers needs scikit-learn (pip install scikit-learn); "
                   "not run."))
        return
    from robustlens.reference.digits import train_digits_cnn

    digits = train_digits_cnn(seed=st.seed, epochs=st.digits_epochs)
    s.data["digits_cnn"] = digits
    s.add(Text(
        f"A tiny CNN made only of these layers (Conv 3×3 → ReLU → MaxPool 2 → Linear), trained with plain SGD for "
        f"{digits['epochs']} epochs on scikit-learn's 8×8 digits ({digits['n_train']} train / {digits['n_test']} "
        f"test images, seed {digits['seed']}): test accuracy {digits['test_accuracy']:.3f}, train accuracy "
        f"{digits['train_accuracy']:.3f}, last-epoch loss {digits['final_loss']:.3f} ({digits['seconds']:.1f} s)."))
