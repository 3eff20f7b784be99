"""Cross-check and speed: robustlens AutoAttack vs the reference (fra31/auto-attack) and torchattacks' AutoAttack.

Same model, same inputs (the first ``--n`` MNIST test digits for the two advertorch LeNet-5 checkpoints, L∞
ε = 0.3; or the first ``--n`` imagenette128 val images for ``imagenette128_resnet_robust``, L2 ε = 1.5, its training ε;
``imagenette64``: the 64 px ``imagenette_resnet_robust`` at ε = 1.0),
version ``standard``.

``resnet50``: the torchvision ResNet-50 architecture (``create_model("resnet50", "none")``: random weights,
seed 0) on the first ``--n`` NIPS-17 dev images (299 px, preprocessed by the model's own config: resize and
centre crop to 224 px), L∞ ε = ``--eps`` (default 1e-4). It measures work, not robustness: a random model gets
every ImageNet label wrong, so the labels are the model's own clean predictions (every example is attacked),
and ε is so small that no attack breaks an example, so every attack runs its whole budget on every example
(the work a robust model costs, where users spend hours; on the first two images the first-order L∞ distance
to the decision boundary, top-2 logit gap / ‖∇gap‖₁, is 5e-4 and 1e-3). ``--targets K`` (APGD-T and FAB-T: K target
classes instead of 9) and ``--square-queries Q`` (instead of 5000) cut the work identically for every library
so a 224 px run fits a CPU; the defaults are AutoAttack's.

For each library: clean accuracy, robust accuracy after each attack (each attack runs
only on the examples still robust), the final robust accuracy, and the time of each attack. Every verdict is
re-made here by one plain float32 forward pass of the same model on the returned images, after checking that
each returned image lies in the ε-ball ∩ [0,1] (a point outside counts as not adversarial).

The reference is imported from a checkout OUTSIDE the repository (``--reference-path``, default
``/work/ext/auto-attack``; ``git clone https://github.com/fra31/auto-attack``); its code is never committed.
torchattacks is a benchmark-only dependency. Each library's result is cached as JSON in ``--cache`` so the
slow parts can run separately (``--only reference``) and be printed side by side later.

    python benchmarks/autoattack_vs_reference.py --model advtrained --n 500 [--only robustlens torchattacks
        reference] [--threads 2] [--batch-size 500] [--cache out/autoattack_cache] [--json-out F]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import SHARED, require  # noqa: E402
from _timing import machine  # noqa: E402

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
LIBRARIES = ("robustlens", "torchattacks", "reference", "torchattacks-100")
SETUPS = {
    "advtrained": ("mnist_lenet5", "models/advertorch_mnist_lenet5_advtrained.pt", "linf", 0.3),
    "clntrained": ("mnist_lenet5", "models/advertorch_mnist_lenet5_clntrained.pt", "linf", 0.3),
    # the 0.69 M-parameter robust model (the default until session 13) at its training ε
    "imagenette": ("imagenette128_resnet_robust", None, "l2", 1.5),
    "imagenette64": ("imagenette_resnet_robust", None, "l2", 1.0),
    "resnet50": ("resnet50", "none", "linf", 1e-4),
}


def load(setup: str, n: int):
    """(model in eval mode, images (n,C,H,W) in [0,1], labels (n,), norm, eps)."""
    from robustlens.models import create_model

    arch, weights, norm, eps = SETUPS[setup]
    if weights == "none":
        model = create_model(arch, "none").eval()
    else:
        model = create_model(arch, str(require(SHARED / weights)) if weights else None).eval()
    if setup == "resnet50":
        from robustlens.robust.datasets import open_dataset

        ds = open_dataset(f"nips17:{require(SHARED / 'data' / 'nips17')}", model)
        x = torch.stack([ds[i][0] for i in range(n)])
        with torch.no_grad():
            return model, x, model(x).argmax(1), norm, eps  # its own predictions: every example is attacked
    if setup.startswith("imagenette"):
        from robustlens.robust.datasets import open_dataset, parse_data_spec

        ds = open_dataset(parse_data_spec(f"folder:{require(SHARED / 'data' / 'imagenette128' / 'val')}"), model,
                          limit=n)
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        return model, torch.stack(xs), torch.as_tensor(ys), norm, eps
    from robustlens.robust.datasets import load_mnist

    imgs, labels = load_mnist(require(SHARED / "data" / "mnist"))
    return model, imgs[:n, None].float().div(255), labels[:n], norm, eps


@torch.no_grad()
def verdict(model, x, adv, y, norm: str, eps: float) -> torch.Tensor:
    """(n,) bool: still robust (correct, or the returned point is outside the ball ∩ box)."""
    from robustlens.optim.threat import make_threat

    inside = make_threat(norm, eps).contains(adv, x, tol=1e-5)
    return (model(adv).argmax(1) == y) | ~inside


def run_reference(model, x, y, norm, eps, bs, path: str, work: Work) -> dict:
    sys.path.insert(0, path)
    from autoattack import AutoAttack

    aa = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=0,
                    device="cpu")
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = work.targets
    aa.square.n_queries = work.square_queries
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        adv = aa.run_standard_evaluation(x, y, bs=bs)
    seconds = time.perf_counter() - t0
    log = buf.getvalue()
    after = {m.group(1).lower(): float(m.group(2)) / 100 for m in
             re.finditer(r"robust accuracy after ([A-Z-]+): ([\d.]+)%.*?total time ([\d.]+)", log)}
    times = [float(t) for t in re.findall(r"robust accuracy after [A-Z-]+: [\d.]+% \(total time ([\d.]+)", log)]
    per = {a: (round(t - (times[i - 1] if i else 0.0), 1)) for i, (a, t) in enumerate(zip(after, times))}
    return {"after": after, "seconds_per_attack": per, "robust": verdict(model, x, adv, y, norm, eps),
            "seconds": seconds}


def run_torchattacks(model, x, y, norm, eps, bs, work: Work, steps: int | None = None) -> dict:
    """torchattacks' AutoAttack, its four attacks run in turn on the examples still robust (as its MultiAttack);
    ``steps``: APGD, APGD-T and FAB run that many steps instead of torchattacks' default 10 (100 = the
    reference's work)."""
    import torchattacks

    aa = torchattacks.AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard",
                                 n_classes=10, seed=0)
    if steps is not None:
        for atk in aa._autoattack.attacks[:3]:
            atk.steps = steps
    apgd_t, fab, sq = aa._autoattack.attacks[1:]
    apgd_t.n_target_classes = fab.n_target_classes = work.targets
    sq.n_queries = work.square_queries
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    adv = x.clone()
    after, per = {}, {}
    t_all = time.perf_counter()
    for name, atk in zip(ATTACKS, aa._autoattack.attacks):
        t0 = time.perf_counter()
        for s in range(0, len(y), bs):
            idx = torch.arange(s, min(s + bs, len(y)))[robust[s:s + bs]]
            if len(idx):
                adv[idx] = atk(x[idx], y[idx]).detach()
                robust[idx] = verdict(model, x[idx], adv[idx], y[idx], norm, eps)
        per[name] = round(time.perf_counter() - t0, 1)
        after[name] = float(robust.float().mean())
    return {"after": after, "seconds_per_attack": per, "robust": robust, "seconds": time.perf_counter() - t_all}


def run_robustlens(model, x, y, norm, eps, bs, work: Work) -> dict:
    from robustlens.robust.autoattack import autoattack
    from robustlens.robust.autoattack.runner import plan

    steps = plan("autoattack", "standard")
    for name, settings in steps:
        if "targets" in settings:
            settings["targets"] = work.targets
        if name == "square":
            settings["queries"] = work.square_queries
    t0 = time.perf_counter()
    res = autoattack(model, x, y, norm=norm, eps=eps, version="standard", seed=0, batch_size=bs,
                     attacks_plan=steps)
    return {"after": res.robust_after, "seconds_per_attack": {k: round(v, 1) for k, v in res.seconds.items()},
            "robust": verdict(model, x, res.adversarial, y, norm, eps), "seconds": time.perf_counter() - t0,
            "flags": [f.code for f in res.flags], "broken_by": res.broken_by_counts()}


@dataclass(frozen=True)
class Work:
    """The budget every library gets: target classes of APGD-T and FAB-T, queries of Square."""

    targets: int = 9
    square_queries: int = 5000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SETUPS), default="advtrained")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=LIBRARIES, default=["robustlens", "torchattacks", "reference"],
                    help="torchattacks-100: torchattacks with the reference's 100 steps for APGD, APGD-T and FAB")
    ap.add_argument("--reference-path", default="/work/ext/auto-attack")
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / "out" / "autoattack_cache"))
    ap.add_argument("--eps", type=float, help="instead of the setup's ε")
    ap.add_argument("--targets", type=int, default=9, help="target classes of APGD-T and FAB-T, every library")
    ap.add_argument("--square-queries", type=int, default=5000, help="Square's queries, every library")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, x, y, norm, eps = load(args.model, args.n)
    eps = args.eps or eps
    work = Work(args.targets, args.square_queries)
    tag = (f"{args.model}_{args.n}" + ("" if work == Work() else f"_t{work.targets}_q{work.square_queries}")
           + (f"_eps{eps:g}" if args.eps else ""))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    for lib in args.only:
        print(f"running {lib} ...", file=sys.stderr, flush=True)
        if lib == "reference":
            r = run_reference(model, x, y, norm, eps, args.batch_size, args.reference_path, work)
        elif lib.startswith("torchattacks"):
            r = run_torchattacks(model, x, y, norm, eps, args.batch_size, work,
                                 steps=100 if lib.endswith("100") else None)
        else:
            r = run_robustlens(model, x, y, norm, eps, args.batch_size, work)
        r["robust_accuracy"] = float(r.pop("robust").float().mean())
        r["robust_count"] = round(r["robust_accuracy"] * len(y))
        r["seconds"] = round(r["seconds"], 1)
        r["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
        (cache / f"{tag}_{lib}.json").write_text(json.dumps(r, indent=1))
    table = {lib: json.loads(p.read_text()) for lib in LIBRARIES
             if (p := cache / f"{tag}_{lib}.json").exists()}
    print(f"{args.model}: n={args.n}, {norm} eps={eps:g}, clean accuracy {clean:.3f} (threads {args.threads}, "
          "timings under whatever load the machine had)")
    print(f"{'library':16s} " + " ".join(f"{a:>9s}" for a in ATTACKS) + "   robust (count)   seconds")
    for lib, r in table.items():
        cells = " ".join(f"{r['after'].get(a, float('nan')):9.3f}" for a in ATTACKS)
        print(f"{lib:16s} {cells}   {r['robust_accuracy']:.3f} ({r['robust_count']})   {r['seconds']}")
    out = {"model": args.model, "n": args.n, "norm": norm, "eps": eps, "clean_accuracy": clean,
           "targets": work.targets, "square_queries": work.square_queries, "threads": args.threads,
           "machine": machine(), "results": table}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
