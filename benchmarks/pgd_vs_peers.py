"""L∞ PGD speed and success: robustlens vs torchattacks vs Foolbox 3, side by side in one process.

Every library gets the SAME model object (a robustlens ``Classifier``: normalisation inside, inputs in
[0,1], eval mode, as ``create_model`` returns it) and the same images (NIPS-17, preprocessed for the model),
and runs the same attack: L∞ ε, step size, steps, sign-gradient steps, projection onto ball ∩ [0,1], NO
random start, cross-entropy loss (targeted: minimise CE of the target; untargeted: maximise CE of the
label). Untargeted labels are the model's clean top-1 (so every image starts correctly classified);
targets are the csv's ``TargetClass``.

- robustlens: ``robustlens.recipes.attacks.pgd`` with its default speed settings and early stop (an example stops
  at its first success) — and again without early stop, to show where the gain comes from;
- torchattacks: ``PGD(model, eps, alpha, steps, random_start=False)``, targeted via
  ``set_mode_targeted_by_label``;
- Foolbox: ``LinfPGD(abs_stepsize=alpha, steps=steps, random_start=False)`` on
  ``PyTorchModel(model, bounds=(0, 1))`` with ``Misclassification`` / ``TargetedMisclassification``.

Each repeat runs every library once, in a rotating order; the median over repeats is reported as seconds
per image-iteration (wall time / (images × nominal steps)), and ``ratio`` = robustlens speed / peer speed
(> 1: robustlens is faster). Success is checked the same way for every library: float32 top-1 of the
returned images (== target, or != label), with the model as given. Returned images are checked to be in
the ε-ball and in [0, 1].

    python benchmarks/pgd_vs_peers.py                       # 8 images, 10 steps, 3 repeats, both models
    python benchmarks/pgd_vs_peers.py --quick --json        # a few minutes: one JSON object on stdout
    python benchmarks/pgd_vs_peers.py --models efficientnet_lite0 --images 32 --json-out results/pgd.json

The default model is the pretrained EfficientNet-Lite0; ResNet-50 has random weights (no download here):
its speed is representative, its success rates are not (they are reported but not pooled into
``success``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, machine, median, say, set_threads, table, write_json  # noqa: E402,I001  (before torch)

import torch  # noqa: E402
from _shared import nips17_rows  # noqa: E402

from robustlens.optim import speed  # noqa: E402
from robustlens.recipes.attacks import pgd  # noqa: E402
from robustlens.images import load_pil  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402
from robustlens.models import create_model  # noqa: E402

MODES = {"targeted": 16 / 255, "untargeted": 4 / 255}  # ε per mode, as in benchmarks/nips17_attack.py
MODELS = {"efficientnet_lite0": None, "resnet50": "none"}  # name -> weights (None: the model's default)

# robustlens configurations: name -> (speed settings, None = the defaults; early stop)
RL_CONFIGS = {
    "robustlens": (None, True),
    "robustlens (no early stop)": (None, False),
}
# --ablation: each speed setting off in turn (no early stop), all off, and peers given a channels-last model
ABLATION = {
    "rl no-ES, fp32": (speed.Speed(precision="fp32"), False),
    "rl no-ES, no BN folding": (speed.Speed(fold_bn=False), False),
    "rl no-ES, NCHW": (speed.Speed(channels_last=False), False),
    "rl all off (fp32, NCHW, no folding, no ES)": (speed.PLAIN, False),
}
PEERS = ("torchattacks", "foolbox")


def load_images(model, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (n,3,S,S) in [0,1], true labels, target classes), 0-based."""
    rows = nips17_rows(limit=n)
    x = torch.stack([preprocess(load_pil(p), model.config) for p, _, _ in rows])
    return x, torch.tensor([y for _, y, _ in rows]), torch.tensor([t for _, _, t in rows])


def format_of(model) -> dict:
    """Memory format and grad flags of the shared model's parameters and every module's train/eval mode, to
    check that no library changed them."""
    return {"params": {n: (p.is_contiguous(), p.requires_grad) for n, p in model.named_parameters()},
            "training": [m.training for m in model.modules()]}


def make_cases(model, x, classes, *, targeted: bool, eps: float, alpha: float, steps: int, peers,
               ablation: bool = False) -> dict:
    cases = {}

    def robustlens(settings, early_stop):
        with speed.use(settings or speed.current()):
            return pgd(model, x, classes, eps=eps, step_size=alpha, steps=steps, targeted=targeted,
                       random_start=False, early_stop=early_stop)

    for name, (settings, es) in {**RL_CONFIGS, **(ABLATION if ablation else {})}.items():
        cases[name] = lambda settings=settings, es=es: robustlens(settings, es)
    if "torchattacks" in peers:
        import torchattacks

        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        if targeted:
            atk.set_mode_targeted_by_label(quiet=True)
        cases["torchattacks"] = lambda: atk(x, classes)
        if ablation:
            def ta_channels_last():
                with speed.channels_last_model(model):
                    return atk(x.contiguous(memory_format=torch.channels_last), classes)

            cases["torchattacks, channels-last model"] = ta_channels_last
    if "foolbox" in peers:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        fatk = fb.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=False)
        crit = fb.criteria.TargetedMisclassification(classes) if targeted else fb.criteria.Misclassification(classes)

        def run_foolbox():
            _, clipped, _ = fatk(fmodel, x, crit, epsilons=eps)
            return clipped

        cases["foolbox"] = run_foolbox
    return cases


@torch.no_grad()
def check(model, x, adv, classes, *, targeted: bool, eps: float) -> dict:
    """Success (float32 top-1 on the returned images) and the perturbation's size, the same for every library."""
    top1 = model(adv.float().contiguous()).argmax(1)
    succ = (top1 == classes) if targeted else (top1 != classes)
    linf = (adv - x).flatten(1).abs().amax(1)
    in_ball = bool((linf <= eps + 1e-6).all()) and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    return {"success": float(succ.float().mean()), "successes": int(succ.sum()), "max_linf_255": float(linf.max()) * 255,
            "in_ball": in_ball}


def run_cell(model, x, classes, *, mode: str, steps: int, repeats: int, warmup: int, peers, quiet: bool,
             ablation: bool = False) -> dict:
    targeted = mode == "targeted"
    eps = MODES[mode]
    alpha = 2.5 * eps / steps
    cases = make_cases(model, x, classes, targeted=targeted, eps=eps, alpha=alpha, steps=steps, peers=peers,
                       ablation=ablation)
    reference = format_of(model)

    def unchanged(_name):
        if format_of(model) != reference:
            raise RuntimeError("the shared model's memory format or grad flags changed between runs")

    times, outs = interleaved(cases, repeats=repeats, warmup=warmup, between=unchanged,
                              log=lambda s: say(s, quiet=quiet), sync=x.device.type == "cuda")
    unchanged("end")
    work = x.shape[0] * steps
    libs = {}
    for name in cases:
        libs[name] = {"median_s": median(times[name]), "s_per_image_iter": median(times[name]) / work,
                      "speedup_vs_torchattacks": (median(times["torchattacks"]) / median(times[name])
                                                  if "torchattacks" in times else None),
                      "times_s": [round(t, 3) for t in times[name]],
                      **check(model, x, outs[name], classes, targeted=targeted, eps=eps)}
    rl, rl_plain = libs["robustlens"], libs["robustlens (no early stop)"]
    ratios = {p: libs[p]["median_s"] / rl["median_s"] for p in peers if p in libs}
    ratios_no_es = {p: libs[p]["median_s"] / rl_plain["median_s"] for p in peers if p in libs}
    return {"model": model.name, "weights": model.weights, "mode": mode, "eps": eps, "eps_255": eps * 255,
            "step_size": alpha, "step_size_255": alpha * 255, "steps": steps, "images": x.shape[0],
            "libs": libs, "ratios": ratios, "ratios_no_early_stop": ratios_no_es}


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="zoo names (default: both)")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    ap.add_argument("--images", type=int, default=8, help="NIPS-17 images per cell, one batch (default 8)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps (default 10; step size 2.5·ε/steps)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3; the median is reported)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed rounds first (default 0)")
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: cores)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--ablation", action="store_true",
                    help="also time robustlens with each speed setting off, and torchattacks on a channels-last model")
    ap.add_argument("--quick", action="store_true", help="8 images, 8 steps, 2 repeats (about 3 minutes on an idle 2-core CPU)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables go to stderr)")
    ap.add_argument("--json-out", default=None, help="also write the JSON to this file")
    args = ap.parse_args()
    if args.quick:
        args.images, args.steps, args.repeats, args.warmup = 8, 8, 2, 0
    warnings.filterwarnings("ignore", category=UserWarning)
    quiet = args.json
    set_threads(args.threads)
    peers = []
    for p in args.peers:
        try:
            __import__(p)
            peers.append(p)
        except ImportError:
            say(f"skipping {p}: not installed (pip install -e '.[bench]')", quiet=quiet)

    t_start = time.perf_counter()
    result = {"benchmark": "pgd_vs_peers", "machine": machine(),
              "settings": {"device": args.device, "images": args.images, "steps": args.steps, "repeats": args.repeats,
                           "warmup": args.warmup, "random_start": False, "loss": "cross-entropy",
                           "eps_255": {m: MODES[m] * 255 for m in args.modes}, "step_size": "2.5*eps/steps",
                           "untargeted_labels": "the model's clean top-1", "quick": args.quick,
                           "robustlens_speed_defaults": speed.current().to_dict()},
              "versions": {p: __import__(p).__version__ for p in peers}, "cells": []}
    for name in args.models:
        # eval() on the wrapper too: torchattacks puts a model whose top module is in training mode back into
        # .train() (all of it, BatchNorm included) after each attack
        model = create_model(name, MODELS.get(name)).eval().to(args.device)
        x, _, targets = (t.to(args.device) for t in load_images(model, args.images))
        with torch.no_grad():
            clean = model(x).argmax(1)
        for mode in args.modes:
            say(f"{model.name} ({model.weights}), {mode}:", quiet=quiet)
            classes = targets if mode == "targeted" else clean
            cell = run_cell(model, x, classes, mode=mode, steps=args.steps, repeats=args.repeats,
                            warmup=args.warmup, peers=peers, quiet=quiet, ablation=args.ablation)
            result["cells"].append(cell)
            rows = [{"library": k, **v} for k, v in cell["libs"].items()]
            say(table(rows, [("library", "library", ""), ("s_per_image_iter", "s/image-iter", ".4f"),
                             ("speedup_vs_torchattacks", "vs torchattacks", ".2f"),
                             ("success", "success", ".2f"), ("max_linf_255", "max L∞·255", ".2f"),
                             ("in_ball", "in ball", "")]), quiet=quiet)
            say("  ratio (peer time / robustlens time): " +
                ", ".join(f"{p} {r:.2f}x (no early stop {cell['ratios_no_early_stop'][p]:.2f}x)"
                          for p, r in cell["ratios"].items()), quiet=quiet)

    cells = result["cells"]
    result["ratios"] = {p: min(c["ratios"][p] for c in cells) for p in peers}
    result["ratios_geomean"] = {p: geomean([c["ratios"][p] for c in cells]) for p in peers}
    result["ratios_no_early_stop"] = {p: min(c["ratios_no_early_stop"][p] for c in cells) for p in peers}
    result["ratios_no_early_stop_geomean"] = {p: geomean([c["ratios_no_early_stop"][p] for c in cells]) for p in peers}
    pretrained = [c for c in cells if not str(c["weights"]).startswith("none")] or cells
    libs = list(cells[0]["libs"]) if cells else []
    result["success"] = {lib: sum(c["libs"][lib]["successes"] for c in pretrained) / sum(c["images"] for c in pretrained)
                         for lib in libs}
    result["success_scope"] = "pooled over cells of pretrained models: " + ", ".join(
        sorted({f"{c['model']} {c['mode']}" for c in pretrained}))
    result["ratio_definition"] = ("robustlens speed / peer speed = peer median seconds / robustlens median seconds; "
                                  "'ratios' is the minimum over cells (model x mode), '_geomean' the geometric mean")
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    say(f"ratios (min over cells): {result['ratios']}; no early stop: {result['ratios_no_early_stop']}", quiet=quiet)
    say(f"success: {result['success']} ({result['success_scope']}); {result['seconds']} s", quiet=quiet)
    if args.json:
        import json

        print(json.dumps(result))
    write_json(result, args.json_out)


if __name__ == "__main__":
    main()
