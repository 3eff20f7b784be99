"""The interactive app (Gradio, fully offline): attack an uploaded or example image and watch the top-5 change;
tabs for feature inversion, DeepDream, attribution maps and image synthesis (the last two in
:mod:`robustlens.app.tabs`).

Everything runs through the same API as the commands and the report (:func:`robustlens.recipes.attacks.attack`,
:func:`robustlens.recipes.inversion.invert`, :func:`robustlens.recipes.dream.dream`). Offline by construction: Gradio's
analytics are switched off before it is imported, its fonts are local, server-side rendering (which needs
Node) is off, and the server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from robustlens.checks import parse_number
from robustlens.errors import UserError
from robustlens.models import DEFAULT_MODEL, DEFAULT_ROBUST_MODEL, Classifier
from robustlens.models.cache import ModelCache
from robustlens.models.layers import default_inversion_layers
from robustlens.models.preprocess import to_batch

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXAMPLES = ("corgi", "chelsea", "coffee", "astronaut")  # the bundled Corgi, then scikit-image samples
UPLOAD_MAX_BYTES = 32 * 1024 * 1024  # larger uploads are refused by the server before any handler runs
QUEUE_MAX = 64  # requests waiting beyond this are refused with a message instead of piling up
LIMITS = {"steps": (1, 200), "inv_steps": (1, 500), "dream_steps": (1, 100), "octaves": (1, 5), "syn_steps": (1, 720)}


def class_choices(model: Classifier) -> list[str]:
    """``"282 tiger cat"`` for every class of ``model``, in index order (what the target box searches)."""
    return [f"{i} {model.class_name(i)}" for i in range(model.num_classes)]


def parse_choice(choice: str | int) -> int:
    """The class index at the start of a :func:`class_choices` entry (or a bare index)."""
    text = str(choice).strip()
    head = text.split(" ", 1)[0]
    if not head.isdigit():
        raise UserError(f"pick a target class from the list (got {text!r})")
    return int(head)


def parse_eps(text: str | float) -> float:
    """ε from the box: a number or a fraction such as ``4/255``."""
    value = parse_number(text, "ε")
    if not 0 <= value <= 1:
        raise UserError(f"ε is in pixel units [0, 1]; got {value}")
    return value


def whole(name: str, value, lo: int, hi: int) -> int:
    """A whole number from an app field (the HTTP API can send anything): finite, integral, in [lo, hi]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v != int(v) or not lo <= v <= hi:
        raise UserError(f"{name} must be a whole number in {lo}..{hi}, got {value!r}")
    return int(v)


def load_upload(image) -> Image.Image:
    """The guard for every uploaded image: a file path (what the page sends) over :data:`UPLOAD_MAX_BYTES` or
    over the pixel limit is refused before decoding; a Pillow image is checked for its pixel count."""
    from robustlens.images import check_size, load_pil, to_rgb

    if image is None:
        raise UserError("upload an image or pick an example first")
    if isinstance(image, Image.Image):
        check_size(image.size, "the image")
        return to_rgb(image)
    path = Path(str(image))
    try:
        size = path.stat().st_size
    except OSError as e:
        raise UserError(f"cannot read the upload: {e.strerror or e}") from None
    if size > UPLOAD_MAX_BYTES:
        raise UserError(f"the upload is {size / 2**20:.1f} MB, over the limit of {UPLOAD_MAX_BYTES / 2**20:g} MB")
    try:
        return load_pil(path)
    except UserError as e:  # name the upload, not the server's temporary path
        raise UserError(str(e).replace(str(path), "the upload")) from None


def topk_dict(preds) -> dict[str, float]:
    """Top-k predictions as the ``{label: probability}`` a Gradio Label shows as bars."""
    return {p.name: p.prob for p in preds}


@dataclass
class ModelBank:
    """The app's two models, built on first use: ``"standard"`` and ``"robust"`` (names and weights given),
    kept in one :class:`robustlens.models.cache.ModelCache` (the one the report uses)."""

    standard: tuple[str, str | None] = (DEFAULT_MODEL, None)
    robust: tuple[str, str | None] = (DEFAULT_ROBUST_MODEL, None)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    models: ModelCache = field(init=False)

    def __post_init__(self) -> None:
        self.models = ModelCache(self.device)

    def get(self, kind: str) -> Classifier:
        if kind not in ("standard", "robust"):
            raise UserError(f"unknown model kind {kind!r}")
        name, weights = getattr(self, kind)
        return self.models.get(name, weights)

    def label(self, kind: str) -> str:
        return f"{kind} ({getattr(self, kind)[0]})"


def _input(model: Classifier, image: Image.Image | None) -> torch.Tensor:
    """The uploaded image (a file path, checked by :func:`load_upload`) as the commands read it: (1, C, S, S) in
    [0, 1] on the model's device."""
    return to_batch([load_upload(image)], model.config, next(model.parameters()).device)


def _pil(x: torch.Tensor) -> Image.Image:
    from robustlens.images import to_uint8

    arr = to_uint8(x.detach().cpu())
    return Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)


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


class _PngSink:
    """Hands the app's output images to Gradio as PNG files with unique names.

    Gradio caches a returned PIL image under the hash of its bytes and writes it in place, so two requests that
    produce the same image (two seeds that both end at the clean image, say) rewrite one file while the first
    is being downloaded, and the client gets a truncated body. A file path is copied into Gradio's cache under a
    temporary name and renamed, which is safe; the sink keeps the newest ``keep`` files and deletes older ones."""

    def __init__(self, keep: int = 256):
        self.keep, self.paths, self.folder = keep, deque[Path](), None

    def __call__(self, value):
        if isinstance(value, Image.Image):
            return self.save(value)
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        if isinstance(value, list):
            return [self(v) for v in value]
        return value

    def save(self, image: Image.Image) -> str:
        if self.folder is None or not self.folder.is_dir():
            self.folder = Path(tempfile.mkdtemp(prefix="robustlens-app-out-"))
        path = self.folder / f"{uuid.uuid4().hex}.png"
        image.save(path, format="PNG")
        self.paths.append(path)
        while len(self.paths) > self.keep:
            self.paths.popleft().unlink(missing_ok=True)
        return str(path)


_png_sink = _PngSink()


def _guard(fn: Callable):
    """Turn a UserError into a Gradio error box (one line, no traceback); any other failure also becomes one
    line in the page (its traceback goes to the server's stderr) and leaves the server ready for the next one.
    Output images go to Gradio as PNG files (:class:`_PngSink`)."""
    import gradio as gr

    def wrapped(*args, **kwargs):
        try:
            return _png_sink(fn(*args, **kwargs))
        except UserError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # a bug must not take the page down with it: say so, log it, serve on
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"internal error ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None

    wrapped.__name__ = fn.__name__
    return wrapped


def build_app(bank: ModelBank | None = None):
    """The Gradio Blocks app (not launched)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by Gradio at import and launch: no telemetry calls
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    from robustlens.app import tabs

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
               prevent_thread_lock=not block, quiet=True, show_error=True, max_file_size=UPLOAD_MAX_BYTES)
    return app
