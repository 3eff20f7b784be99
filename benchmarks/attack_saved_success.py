"""Does the saved attack still work? Success judged on the PNG files a user gets, default vs ``--no-early-stop``.

For the first N NIPS-17 images (default 200), targets {tarantula 76, tiger cat 282} and L∞ ε ∈ {2/255, 4/255},
50 steps, the default model: each attack's adversarial images are written as PNG, read back, and classified
again by the model; success = the re-read image's top-1 is the target. Both settings run on the same inputs,
one after the other, per cell; the table gives the successes from the files, the successes the attack
reported, and the wall time.

    python benchmarks/attack_saved_success.py [--limit 200] [--batch-size 25] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shared import nips17_rows  # noqa: E402

from robustlens.images import load_image, load_pil, save_image  # noqa: E402
from robustlens.models import create_model  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402
from robustlens.recipes.attacks import attack  # noqa: E402

TARGETS = (76, 282)
EPS = (2 / 255, 4 / 255)


def saved_success(model, adversarial: torch.Tensor, target: int, folder: Path) -> torch.Tensor:
    """(N,) bool: each adversarial image written as PNG, read back and classified as ``target``."""
    again = []
    for i, img in enumerate(adversarial):
        path = save_image(img, folder / f"adv_{i}.png")
        again.append(load_image(path))
    with torch.inference_mode():
        return model(torch.stack(again)).argmax(1) == target


def run_cell(model, x: torch.Tensor, target: int, eps: float, early_stop: bool, batch: int, folder: Path) -> dict:
    reported = from_files = 0
    t0 = time.perf_counter()
    example_steps = 0
    for i in range(0, len(x), batch):
        r = attack(model, x[i:i + batch], target=target, eps=eps, steps=50, early_stop=early_stop, progress=False)
        reported += int(r.success.sum())
        example_steps += r.example_steps
        from_files += int(saved_success(model, r.adversarial, target, folder).sum())
    return {"target": target, "eps_255": round(eps * 255, 3), "early_stop": early_stop, "images": len(x),
            "success_from_files": from_files, "success_reported": reported,
            "example_steps": example_steps, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model()
    rows = nips17_rows(limit=args.limit)
    x = torch.stack([preprocess(load_pil(p), model.config) for p, _, _ in rows])
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in TARGETS:
            for eps in EPS:
                pair = [run_cell(model, x, target, eps, stop, args.batch_size, Path(tmp)) for stop in (True, False)]
                cells += pair
                d, n = pair
                print(f"target {target} eps {eps * 255:.0f}/255: files {d['success_from_files']}/{len(x)} default "
                      f"vs {n['success_from_files']}/{len(x)} no-early-stop; {d['seconds']} s vs {n['seconds']} s",
                      flush=True)
    ok = all(d["success_from_files"] >= n["success_from_files"] for d, n in zip(cells[::2], cells[1::2]))
    faster = sum(c["seconds"] for c in cells[::2]) < sum(c["seconds"] for c in cells[1::2])
    result = {"model": model.name, "steps": 50, "cells": cells, "default_at_least_as_good_everywhere": ok,
              "default_faster_overall": faster, "torch": torch.__version__, "threads": torch.get_num_threads()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
