"""The interactive app (Gradio, fully offline): attack an uploaded or example image and watch the top-5 change;
tabs for feature inversion, DeepDream, attribution maps and image synthesis (the last two in
:mod:`robustlens.app.tabs`; what every tab shares is in :mod:`robustlens.app.common`).

Everything runs through the same API as the commands and the report (:func:`robustlens.recipes.attacks.attack`,
:func:`robustlens.recipes.inversion.invert`, :func:`robustlens.recipes.dream.dream`). Offline by construction: Gradio's
analytics are switched off before it is imported, its fonts are local, server-side rendering (which needs
Node) is off, and the server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from robustlens.app import common, tabs
from robustlens.app.common import (
    LIMITS,
    ModelBank,
    _guard,
    _input,
    _pil,
    class_choices,
    parse_choice,
    parse_eps,
    topk_dict,
    whole,
)
from robustlens.errors import UserError
from robustlens.models.layers import default_inversion_layers

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXAMPLES = ("corgi", "chelsea", "coffee", "astronaut")  # the bundled Corgi, then scikit-image samples
QUEUE_MAX = 64  # requests waiting beyond this are refused with a message instead of piling up


def run_attack(bank: ModelBank, image, kind: str, target: str, norm: str, eps: str, steps: int, seed: int = 0):
    """One targeted attack: (adversarial image, amplified perturbation, top-5 before, top-5 after, summary)."""
    from robustlens.plots import amplified
    from robustlens.recipes.attacks import attack

    model = bank.get(kind)
    t = parse_choice(target)
    if not 0 <= t < model.num_classes:
        raise UserError(f"target {t} is not a class of {model.name} (0..{model.num_classes - 1}); pick from the list")
    if norm not in ("linf", "l2"):
        raise UserError(f"norm must be linf or l2, got {norm!r}")
    e, steps, seed = parse_eps(eps), whole("steps", steps, *LIMITS["steps"]), whole("seed", seed, 0, 2**31 - 1)
    x = _input(model, image)
    res = attack(model, x, target=t, norm=norm, eps=e, steps=steps, seed=seed, progress=True)
    d = res.to_dict()["results"][0]
    amp, factor = amplified(res.perturbation[0])
    top1 = res.after[0][0]
    psnr = "∞" if d["psnr_db"] is None else f"{d['psnr_db']:.1f} dB"
    summary = (f"**{'Success' if d['success'] else 'Not reached'}**: {model.name} now says **{top1.name}** "
               f"(p = {top1.prob:.3f}); target {model.class_name(t)} ({t}).  \n"
               f"L∞ = {d['linf_255']:.2f}/255, L2 = {d['l2']:.3f}, PSNR = {psnr}, SSIM = {d['ssim']:.4f}; "
               f"{norm}, ε = {eps}, {int(steps)} steps, seed {int(seed)}, {res.seconds:.1f} s. "
               f"Perturbation shown × {factor:.1f} (grey = unchanged).")
    return _pil(res.adversarial[0]), _pil(amp), topk_dict(res.before[0]), topk_dict(res.after[0]), summary


def run_inversion(bank: ModelBank, image, kind: str, layers: str, steps: int, seed: int = 0):
    """Reconstructions from each named layer: a gallery of (image, caption)."""
    from robustlens.recipes.inversion import invert

    model = bank.get(kind)
    names = [n.strip() for n in str(layers).split(",") if n.strip()]
    if not names:
        names = list(default_inversion_layers(model))
    steps, seed = whole("steps", steps, *LIMITS["inv_steps"]), whole("seed", seed, 0, 2**31 - 1)
    res = invert(model, _input(model, image), layers=names, steps=steps, seed=seed, progress=True)
    rows = res.to_dict()["layers"]
    return [(_pil(res.reference[0]), "original")] + [
        (_pil(res.images[i]), f"{r['layer']} (feature distance {r['distance']:.3f})") for i, r in enumerate(rows)]


def run_dream(bank: ModelBank, image, kind: str, layer: str, steps: int, octaves: int, seed: int = 0):
    """DeepDream of the image at one layer."""
    from robustlens.recipes.dream import dream

    model = bank.get(kind)
    layer = str(layer).strip() or default_inversion_layers(model)[1]
    steps, octaves = whole("steps", steps, *LIMITS["dream_steps"]), whole("octaves", octaves, *LIMITS["octaves"])
    res = dream(model, _input(model, image), layer=layer, steps=steps, octaves=octaves,
                seed=whole("seed", seed, 0, 2**31 - 1), progress=True)
    img = res.image[0] if res.image.dim() == 4 else res.image
    return _pil(img)


def _examples_dir() -> Path:
    from robustlens.assets import corgi_image
    from robustlens.images import example_image

    folder = Path(tempfile.gettempdir()) / "robustlens-app-examples"
    folder.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLES:
        p = folder / f"{name}.png"
        if not p.exists():
            (corgi_image() if name == "corgi" else example_image(name)).save(p)
    return folder


def build_app(bank: ModelBank | None = None):
    """The Gradio Blocks app (not launched)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by Gradio at import and launch: no telemetry calls
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr


    bank = bank or ModelBank()
    kinds = [(bank.label("standard"), "standard"), (bank.label("robust"), "robust")]
    standard = bank.get("standard")
    choices = class_choices(standard)
    default_target = next((c for c in choices if c.startswith("282 ")), choices[0])
    folder = _examples_dir()
    examples = [[str(folder / f"{name}.png")] for name in EXAMPLES]

    def update_targets(kind: str):
        try:
            model = bank.get(kind)
        except UserError as e:
            raise gr.Error(str(e)) from None
        new = class_choices(model)
        return gr.update(choices=new, value=default_target if default_target in new else new[0])

    with gr.Blocks(title="robustlens", analytics_enabled=False) as app:
        gr.Markdown("## robustlens — see what an image classifier sees and how it is fooled\n"
                    "Upload an image (or pick an example), choose a model and a target class, and attack. "
                    "Everything runs locally.")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", image_mode=None, label="Image", elem_id="input-image",
                                 sources=["upload", "clipboard"])
                gr.Examples(examples, inputs=[image], label="Examples (Corgi: MIT licence; others: scikit-image, CC0)")
                kind = gr.Radio(kinds, value="standard", label="Model", elem_id="model-kind")
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
            with gr.Column(scale=2):
                with gr.Tab("Attack", elem_id="tab-attack"):
                    with gr.Row():
                        target = gr.Dropdown(choices, value=default_target, label="Target class (type to search)",
                                             filterable=True, elem_id="target")
                        norm = gr.Radio(["linf", "l2"], value="linf", label="Norm", elem_id="norm")
                        eps = gr.Textbox(value="4/255", label="ε (pixel units; 4/255 or 0.5)", elem_id="eps")
                        steps = gr.Slider(*LIMITS["steps"], value=20, step=1, label="Steps", elem_id="steps")
                    run = gr.Button("Attack", variant="primary", elem_id="run-attack")
                    summary = gr.Markdown(elem_id="attack-summary")
                    with gr.Row():
                        adv = gr.Image(label="Adversarial image", format="png", elem_id="adversarial",
                                       interactive=False)
                        pert = gr.Image(label="Perturbation (amplified)", format="png", elem_id="perturbation",
                                        interactive=False)
                    with gr.Row():
                        before = gr.Label(num_top_classes=5, label="Top-5 before", elem_id="top5-before")
                        after = gr.Label(num_top_classes=5, label="Top-5 after", elem_id="top5-after")
                with gr.Tab("Inversion", elem_id="tab-inversion"):
                    layers = gr.Textbox(value="", label="Layers, comma-separated (empty: three chosen layers)",
                                        elem_id="inv-layers")
                    inv_steps = gr.Slider(*LIMITS["inv_steps"], value=100, step=1, label="Steps", elem_id="inv-steps")
                    inv_run = gr.Button("Invert", variant="primary", elem_id="run-inversion")
                    gallery = gr.Gallery(label="Original and reconstructions", columns=4, elem_id="inv-gallery")
                with gr.Tab("DeepDream", elem_id="tab-dream"):
                    layer = gr.Textbox(value="", label="Layer (empty: a middle layer)", elem_id="dream-layer")
                    d_steps = gr.Slider(*LIMITS["dream_steps"], value=10, step=1, label="Steps per octave", elem_id="dream-steps")
                    octaves = gr.Slider(*LIMITS["octaves"], value=3, step=1, label="Octaves", elem_id="dream-octaves")
                    d_run = gr.Button("Dream", variant="primary", elem_id="run-dream")
                    dreamt = gr.Image(label="DeepDream", format="png", elem_id="dream-out", interactive=False)
                tabs.add_explain_tab(gr, bank, image, kind, seed, choices)
                tabs.add_synthesize_tab(gr, bank, image, seed)

        kind.change(update_targets, [kind], [target])

        def attack_fn(img, k, tgt, nrm, e, n, s, progress=gr.Progress(track_tqdm=True)):
            return _guard(run_attack)(bank, img, k, tgt, nrm, e, n, s)

        def invert_fn(img, k, names, n, s, progress=gr.Progress(track_tqdm=True)):
            return _guard(run_inversion)(bank, img, k, names, n, s)

        def dream_fn(img, k, lay, n, o, s, progress=gr.Progress(track_tqdm=True)):
            return _guard(run_dream)(bank, img, k, lay, n, o, s)

        run.click(attack_fn, [image, kind, target, norm, eps, steps, seed], [adv, pert, before, after, summary])
        inv_run.click(invert_fn, [image, kind, layers, inv_steps, seed], [gallery])
        d_run.click(dream_fn, [image, kind, layer, d_steps, octaves, seed], [dreamt])
    return app


def launch(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, bank: ModelBank | None = None, *,
           block: bool = True):
    """Serve the app on ``host:port`` (localhost by default, no share link, no analytics)."""
    app = build_app(bank)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_MAX)
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
               prevent_thread_lock=not block, quiet=True, show_error=True, max_file_size=common.UPLOAD_MAX_BYTES)
    return app
