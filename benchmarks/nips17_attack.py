"""Attack success on the 1000 NIPS-17 images with `robustlens.recipes.attacks.attack` (8-bit quantised results).

- targeted: each image's standard TargetClass, L∞ ε = 16/255, 10 steps; success = top-1 is the target;
- untargeted: L∞ ε = 4/255, 10 steps, away from TrueLabel; success = top-1 is not the true label (reported
  over all images and over the images the model classified correctly to begin with).

Step size 2.5·ε/steps, log-probability loss, early stop, no random start. The model and inputs are
channels-last (≈2.5× faster on CPU).

    python benchmarks/nips17_attack.py [--limit N] [--batch-size 32] [--modes targeted untargeted] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import nips17_rows  # noqa: E402

from robustlens.images import load_pil  # noqa: E402
from robustlens.models import create_model  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402
from robustlens.optim.speed import Speed  # noqa: E402
from robustlens.recipes.attacks import attack  # noqa: E402

SETTINGS = {"targeted": {"eps": 16 / 255, "steps": 10}, "untargeted": {"eps": 4 / 255, "steps": 10}}


def run_mode(model, rows, mode: str, batch_size: int, seed: int) -> dict:
    cfg = SETTINGS[mode]
    succ, clean_ok, linf, l2, steps_run = [], [], [], [], 0
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(rows), batch_size), desc=mode, unit="batch"):
        chunk = rows[i:i + batch_size]
        x = torch.stack([preprocess(load_pil(p), model.config) for p, _, _ in chunk])
        y = torch.tensor([t for _, t, _ in chunk])
        kw = {"target": torch.tensor([t for _, _, t in chunk])} if mode == "targeted" else {"labels": y}
        r = attack(model, x, eps=cfg["eps"], steps=cfg["steps"], seed=seed, progress=False, speed=Speed(channels_last=True), **kw)
        succ.append(r.success)
        clean_ok.append(torch.tensor([b[0].index == int(t) for b, t in zip(r.before, y)]))
        linf.append(r.linf)
        l2.append(r.l2)
        steps_run += r.example_steps
    seconds = time.perf_counter() - t0
    succ, clean_ok, linf, l2 = (torch.cat(v) for v in (succ, clean_ok, linf, l2))
    out = {"mode": mode, "images": len(rows), "eps": cfg["eps"], "eps_255": cfg["eps"] * 255, "steps": cfg["steps"],
           "step_size_255": 2.5 * cfg["eps"] * 255 / cfg["steps"], "success_rate": float(succ.float().mean()),
           "successes": int(succ.sum()), "clean_top1": float(clean_ok.float().mean()),
           "mean_steps_per_image": steps_run / len(rows), "max_linf_255": float(linf.max()) * 255,
           "mean_l2": float(l2.mean()), "seconds": round(seconds, 1),
           "images_per_second": round(len(rows) / seconds, 2)}
    if mode == "untargeted":
        out["success_rate_on_clean_correct"] = float(succ[clean_ok].float().mean()) if clean_ok.any() else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--modes", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = nips17_rows(limit=args.limit)
    model = create_model(args.model).to(memory_format=torch.channels_last)
    result = {"model": model.name, "weights": model.weights, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "modes": {}}
    for mode in args.modes:
        r = run_mode(model, rows, mode, args.batch_size, args.seed)
        result["modes"][mode] = r
        extra = (f", {r['success_rate_on_clean_correct']:.1%} of the {r['clean_top1']:.1%} classified correctly"
                 if mode == "untargeted" and r["success_rate_on_clean_correct"] is not None else "")
        print(f"{mode}: L∞ ε={r['eps_255']:.0f}/255, {r['steps']} steps: success {r['success_rate']:.1%} "
              f"({r['successes']}/{r['images']}){extra}; {r['mean_steps_per_image']:.2f} steps/image, "
              f"{r['seconds']} s", flush=True)
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
