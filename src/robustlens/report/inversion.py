"""Problem 4 (d): feature inversion from noise at three layers of the pretrained model."""

from __future__ import annotations

import torch

from robustlens.models import Classifier
from robustlens.models.layers import default_inversion_layers
from robustlens.report.blocks import Block, Section, Table, Text, figures, safe_file_name, strip_history
from robustlens.report.context import ReportContext


def run_inversion(model: Classifier, x: torch.Tensor, *, layers, steps: int, seed: int):
    """The report's inversion: :func:`robustlens.recipes.inversion.invert` with the CLI's defaults otherwise.
    ``x``: (1, C, S, S) in [0, 1]; all layers in one batch."""
    from robustlens.recipes.inversion import invert

    return invert(model, x, layers=list(layers), steps=steps, seed=seed, progress=False)


def inversion_blocks(ctx: ReportContext, res, prefix: str) -> tuple[list[Block], dict]:
    """Original and one reconstruction per layer in a row, and a table of feature distances."""
    items = [(ctx.save(res.reference[0], f"{prefix}_original.png"), "original")]
    d = res.to_dict()
    for i, row in enumerate(d["layers"]):
        f = ctx.save(res.images[i], f"{prefix}_{safe_file_name(row['layer'])}.png")
        items.append((f, f"reconstruction from {row['layer']} (feature distance {row['distance']:.3f})"))
    table = Table(["layer", "relative feature distance at the noise start", "after", "removed"],
                  [[r["layer"], r["start_distance"], r["distance"], r["drop"]] for r in d["layers"]])
    return [figures(items), table], strip_history(d)


def section_problem4_inversion(ctx: ReportContext, s: Section) -> None:
    """4(d): reconstructions from noise at the settings' layers (default: three chosen from the model)."""
    st = ctx.settings
    model = ctx.main_model()
    layers = st.inversion_layers or default_inversion_layers(model)
    s.settings.update({"model": f"{model.name} ({model.weights})", "layers": ", ".join(layers),
                       "steps": st.inversion_steps, "seed": st.seed, "start": "noise"})
    res = run_inversion(model, ctx.input_for(model), layers=layers, steps=st.inversion_steps, seed=st.seed)
    blocks, data = inversion_blocks(ctx, res, "p4d")
    s.add(Text(
        "Starting from noise, each reconstruction minimises ‖φ_L(x) − φ_L(x₀)‖² at one layer L: it shows what the "
        "layer keeps of the image. Early layers keep nearly everything; late layers keep what matters for the "
        "class and lose the exact layout and colours."), *blocks)
    s.data = data
