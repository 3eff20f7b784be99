"""Cross-check: our `robustlens.recipes.attacks.pgd` against torchattacks' PGD under identical settings.

Same model (channels-last, eval mode), same NIPS-17 images, same L∞ ε, steps, step size and random start
(uniform in the ε-ball; each seed is one random start per image for each library): untargeted from TrueLabel
and targeted to TargetClass. Success is measured on the float images both libraries return (no 8-bit
rounding), by the same plain float32 forward pass: top-1 ≠ label (untargeted) or = target (targeted).
With ``--no-random-start`` both start at the clean image. torchattacks is a benchmark-only dependency
(`pip install torchattacks`).

    python benchmarks/pgd_vs_torchattacks.py [--limit 100] [--batch-size 25] [--steps 10] [--seeds 0 1 2]
        [--only targeted:4] [--no-random-start] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import nips17_rows  # noqa: E402

from robustlens.images import load_pil  # noqa: E402
from robustlens.models import create_model  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402
from robustlens.recipes.attacks import pgd  # noqa: E402

# (mode, eps in 1/255): small radii so that neither attack saturates at 100%
SETTINGS = [("untargeted", 0.5), ("untargeted", 1.0), ("targeted", 2.0), ("targeted", 4.0)]


def run_ours(model, x, y, *, targeted, eps, alpha, steps, seed, random_start):
    return pgd(model, x, y, norm="linf", eps=eps, step_size=alpha, steps=steps, targeted=targeted,
               random_start=random_start, seed=seed)


def run_torchattacks(model, x, y, *, targeted, eps, alpha, steps, seed, random_start):
    import torchattacks

    torch.manual_seed(seed)
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    if targeted:
        atk.set_mode_targeted_by_label(quiet=True)
    return atk(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed, success pooled")
    ap.add_argument("--only", nargs="+", default=None, metavar="MODE:EPS255",
                    help="run only these settings, e.g. targeted:4 untargeted:0.5")
    ap.add_argument("--no-random-start", action="store_true", help="both libraries start at the clean image")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks

    model = create_model().to(memory_format=torch.channels_last).eval()
    rows = nips17_rows(limit=args.limit)
    x_all = torch.stack([preprocess(load_pil(p), model.config) for p, _, _ in rows])
    x_all = x_all.contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([t for _, t, _ in rows])
    targets = torch.tensor([t for _, _, t in rows])
    settings = SETTINGS
    if args.only:
        settings = [(m, float(e)) for m, _, e in (o.partition(":") for o in args.only)]
    random_start = not args.no_random_start
    result = {"model": model.name, "images": len(rows), "steps": args.steps, "seeds": args.seeds,
              "random_start": random_start, "torch": torch.__version__, "torchattacks": torchattacks.__version__,
              "step_size_rule": "2.5*eps/steps", "settings": []}
    for mode, eps255 in settings:
        eps = eps255 / 255
        alpha = 2.5 * eps / args.steps
        targeted = mode == "targeted"
        y_all = targets if targeted else labels
        entry = {"mode": mode, "eps_255": eps255, "step_size_255": alpha * 255}
        for name, fn in [("robustlens", run_ours), ("torchattacks", run_torchattacks)]:
            hits, seconds, per_seed = 0, 0.0, []
            for seed in args.seeds:
                seed_hits = 0
                for i in range(0, len(rows), args.batch_size):
                    x, y = x_all[i:i + args.batch_size], y_all[i:i + args.batch_size]
                    t0 = time.perf_counter()
                    adv = fn(model, x, y, targeted=targeted, eps=eps, alpha=alpha, steps=args.steps, seed=seed,
                             random_start=random_start)
                    seconds += time.perf_counter() - t0
                    assert float((adv - x).abs().max()) <= eps + 1e-6 and 0 <= float(adv.min()) <= float(adv.max()) <= 1
                    with torch.inference_mode():
                        pred = model(adv.contiguous()).argmax(1)
                    seed_hits += int((pred == y).sum()) if targeted else int((pred != y).sum())
                per_seed.append(seed_hits / len(rows))
                hits += seed_hits
            entry[name] = {"success_rate": hits / (len(rows) * len(args.seeds)), "per_seed": per_seed,
                           "seconds": round(seconds, 1)}
        result["settings"].append(entry)
        ours, theirs = entry["robustlens"], entry["torchattacks"]
        print(f"{mode:<10} eps {eps255:g}/255: robustlens {ours['success_rate']:.1%} ({ours['seconds']} s), "
              f"torchattacks {theirs['success_rate']:.1%} ({theirs['seconds']} s)", flush=True)
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
