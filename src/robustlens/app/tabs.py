"""The app's Explain and Synthesize tabs: attribution maps of the image (:mod:`robustlens.explain`) and image
synthesis with the robust model beside its standard counterpart (:mod:`robustlens.recipes.synthesis`). The
handlers (``run_explain``, ``run_synthesis``) take plain values, so tests call them without a browser."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image

from robustlens.app.common import (
    LIMITS,
    ModelBank,
    _guard,
    _input,
    _pil,
    class_choices,
    load_upload,
    parse_choice,
    whole,
)
from robustlens.errors import UserError
from robustlens.models import Classifier
from robustlens.models.preprocess import to_batch

TOP1 = "top-1 (the model's own class)"
SYN_TASKS = ("inpaint", "superres", "translate", "sketch")
EXPLAIN_STEPS = 32    # Integrated Gradients steps and SmoothGrad draws in the app


def _class_of(model: Classifier, choice, *, required: bool = False) -> int | None:
    """A class of ``model`` from a dropdown entry ("282 tiger cat"), or None for :data:`TOP1`/empty."""
    text = str(choice or "").strip()
    if not text or text == TOP1:
        if required:
            raise UserError("pick a class for this task")
        return None
    t = parse_choice(text)
    if not 0 <= t < model.num_classes:
        raise UserError(f"class {t} is not a class of {model.name} (0..{model.num_classes - 1}); pick from the list")
    return t


def _figure_image(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB").copy()


def run_explain(bank: ModelBank, image, kind: str, method: str, target, seed: int = 0):
    """Attribution maps of ``method`` (a name or ``all``) for ``target`` on the ``kind`` model: (figure, summary)."""
    from robustlens.explain import attribute, edge_alignment
    from robustlens.explain.methods import parse_methods
    from robustlens.explain.visual import plot_grid

    model = bank.get(kind)
    methods = parse_methods(str(method or ""))
    if not methods:
        raise UserError("pick an attribution method")
    t, seed = _class_of(model, target), whole("seed", seed, 0, 2**31 - 1)
    x = _input(model, image)
    maps = {}
    for m in methods:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        a = attribute(m, model, x, t, steps=EXPLAIN_STEPS, samples=EXPLAIN_STEPS, generator=gen)
        maps[m] = a.maps[0]
        explained = int(a.targets[0])
    align = edge_alignment(model, x, explained)
    with tempfile.TemporaryDirectory() as d:
        fig = _figure_image(plot_grid([(bank.label(kind), x[0], maps)], Path(d) / "explain.png",
                                      title=f"{model.name}: {model.class_name(explained)} ({explained})"))
    summary = (f"**{model.name}** explains **{model.class_name(explained)}** ({explained}) with "
               f"{', '.join(methods)}. Input gradient vs the image: |cos(x − x̄, ∇f)| = {float(align['cosine'][0]):.3f}, "
               f"Spearman with the Sobel edges = {float(align['spearman'][0]):.3f} (robust models' gradients look more "
               f"like the image; see docs/explain.md). Columns: |map|, signed map, overlay.")
    return fig, summary


def synthesis_pair(bank: ModelBank) -> tuple[Classifier, Classifier]:
    """(standard, robust) for synthesis: the robust model and its standard counterpart
    (:func:`robustlens.models.counterparts.standard_for`), else the bank's standard model; same size and classes."""
    from robustlens.models.counterparts import check_same_space, standard_for

    robust = bank.get("robust")
    counterpart = standard_for(bank.robust[0])
    standard = bank.models.get(*counterpart) if counterpart else bank.get("standard")
    check_same_space(standard, robust)
    return standard, robust


def _mask(editor, config, device) -> torch.Tensor | None:
    """(1,1,S,S) hole mask from the strokes drawn in the editor (any layer pixel with alpha > 0), preprocessed
    like the image; None when nothing is drawn."""
    layers = [im for im in (editor or {}).get("layers") or [] if im is not None]
    if not layers:
        return None
    w, h = layers[0].size
    hole = np.zeros((h, w), dtype=bool)
    for im in layers:
        hole |= np.asarray(im.convert("RGBA").getchannel("A").resize((w, h))) > 0
    if not hole.any():
        return None
    alpha = Image.fromarray(hole.astype(np.uint8) * 255)
    m = (to_batch([alpha], config, device).mean(1, keepdim=True) > 0.5).float()
    return m if bool(m.any()) else None


def _on_white(im: Image.Image) -> Image.Image:
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")


def _task_inputs(task: str, robust: Classifier, image, editor, cls: int | None) -> tuple[dict, str]:
    """The recipe's keyword arguments for ``task`` and a note on what was used."""
    from robustlens.images import check_size
    from robustlens.recipes.synthesis import downsample
    from robustlens.recipes.synthesis.objectives import centre_hole, line_drawing

    config, device = robust.config, next(robust.parameters()).device
    editor = editor if isinstance(editor, dict) else {}
    drawn = editor.get("composite") if editor.get("background") is not None or editor.get("layers") else None
    if task == "sketch" and drawn is not None:
        check_size(drawn.size, "the drawing")
        return {"sketches": to_batch([_on_white(drawn)], config, device), "targets": [cls]}, "your drawing"
    background = editor.get("background")
    if task == "inpaint" and background is not None:
        x = to_batch([load_upload(_on_white(background))], config, device)
    else:
        x = _input(robust, image)
    size = int(x.shape[-1])
    if task == "sketch":
        return {"sketches": line_drawing(x), "targets": [cls]}, "a line drawing of the image (nothing drawn)"
    if task == "translate":
        return {"images": x, "targets": [cls]}, "the image"
    if task == "superres":
        factor = 4 if size % 4 == 0 else 1
        return {"low_res": downsample(x, factor), "labels": None if cls is None else [cls]}, f"the image ÷{factor}"
    mask = _mask(editor, config, device)
    note = "your strokes as the hole" if mask is not None else "a centre box as the hole (nothing drawn)"
    return {"images": x, "masks": centre_hole(size).to(device) if mask is None else mask,
            "labels": None if cls is None else [cls]}, note


def run_synthesis(bank: ModelBank, image, task: str, cls, editor, steps: int, seed: int = 0):
    """One synthesis task on the standard and the robust model, same inputs: (start, standard result, robust
    result, summary)."""
    from robustlens.recipes.synthesis import SynthesisResult
    from robustlens.recipes.synthesis.figures import RECIPES

    if task not in SYN_TASKS:
        raise UserError(f"task must be one of {', '.join(SYN_TASKS)}, got {task!r}")
    standard, robust = synthesis_pair(bank)
    c = _class_of(robust, cls, required=task in ("translate", "sketch"))
    steps, seed = whole("steps", steps, *LIMITS["syn_steps"]), whole("seed", seed, 0, 2**31 - 1)
    inputs, note = _task_inputs(task, robust, image, editor, c)
    recipe = cast("Callable[..., SynthesisResult]", RECIPES[task])
    results = {k: recipe(m, steps=steps, seed=seed, progress=True, **inputs)
               for k, m in (("standard", standard), ("robust", robust))}
    lines = [f"**{task}** from {note}; {steps} steps, L2 ε = {results['robust'].settings['eps']:.3g} "
             f"(published, scaled to {int(robust.config.input_size)} px), seed {seed}."]
    for k, r in results.items():
        d = r.to_dict()["rows"][0]
        name = (standard if k == "standard" else robust).class_name
        lines.append(f"- {k} ({(standard if k == 'standard' else robust).name}): top-1 **{name(d['predicted'])}**"
                     + (f", p({name(d['target'])}) = {d['target_prob']:.3f}" if "target" in d else "")
                     + f", L2 change {d['l2']:.2f}, {r.seconds:.1f} s")
    first = results["robust"]
    return _pil(first.starts[0]), _pil(results["standard"].images[0]), _pil(first.images[0]), "  \n".join(lines)


def add_explain_tab(gr, bank: ModelBank, image, kind, seed, choices: list[str]) -> None:
    """The Explain tab (inside the page's Tabs); the target list follows the model choice."""
    from robustlens.explain import METHODS

    with gr.Tab("Explain", elem_id="tab-explain"):
        with gr.Row():
            method = gr.Dropdown([*METHODS, "all"], value="saliency", label="Method", elem_id="explain-method")
            target = gr.Dropdown([TOP1, *choices], value=TOP1, label="Class to explain (type to search)",
                                 filterable=True, elem_id="explain-target")
        run = gr.Button("Explain", variant="primary", elem_id="run-explain")
        summary = gr.Markdown(elem_id="explain-summary")
        figure = gr.Image(label="Attribution maps", format="png", elem_id="explain-out", interactive=False)

    def update(k: str):
        try:
            return gr.update(choices=[TOP1, *class_choices(bank.get(k))], value=TOP1)
        except UserError as e:
            raise gr.Error(str(e)) from None

    def explain_fn(img, k, m, t, s, progress=gr.Progress(track_tqdm=True)):
        return _guard(run_explain)(bank, img, k, m, t, s)

    kind.change(update, [kind], [target])
    run.click(explain_fn, [image, kind, method, target, seed], [figure, summary])


def add_synthesize_tab(gr, bank: ModelBank, image, seed) -> None:
    """The Synthesize tab: a task, a class, a mask or sketch drawn in the editor; standard and robust results."""
    try:
        choices = class_choices(bank.get("robust"))
    except UserError:
        choices = []
    with gr.Tab("Synthesize", elem_id="tab-synthesize"):
        gr.Markdown("Santurkar et al. 2019: the robust model and its standard counterpart get the same task, start "
                    "and budget. Inpaint: draw the hole on an image in the editor (or use the image on the left; "
                    "nothing drawn = a centre box). Sketch: draw on a white canvas (nothing drawn = a line "
                    "drawing of the image).")
        with gr.Row():
            task = gr.Radio(list(SYN_TASKS), value="inpaint", label="Task", elem_id="syn-task")
            cls = gr.Dropdown([TOP1, *choices], value=TOP1, label="Class (translate, sketch: required)",
                              filterable=True, elem_id="syn-class")
            steps = gr.Slider(*LIMITS["syn_steps"], value=60, step=1,
                              label="Steps (published: inpaint 720, superres 40, translate 200, sketch 60)",
                              elem_id="syn-steps")
        editor = gr.ImageEditor(type="pil", sources=["upload", "clipboard"], label="Mask / sketch",
                                canvas_size=(256, 256), elem_id="syn-editor")
        run = gr.Button("Synthesize", variant="primary", elem_id="run-synthesize")
        summary = gr.Markdown(elem_id="syn-summary")
        with gr.Row():
            outs = [gr.Image(label=lab, format="png", elem_id=f"syn-{key}", interactive=False)
                    for key, lab in (("start", "Start"), ("standard", "Standard model"), ("robust", "Robust model"))]

    def synth_fn(img, t, c, ed, n, s, progress=gr.Progress(track_tqdm=True)):
        return _guard(run_synthesis)(bank, img, t, c, ed, n, s)

    run.click(synth_fn, [image, task, cls, editor, steps, seed], [*outs, summary])
