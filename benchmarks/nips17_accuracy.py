"""Top-1/top-5 accuracy of a model on the 1000 NIPS-17 images (labels from images.csv, 1-based there).

    python benchmarks/nips17_accuracy.py [--model efficientnet_lite0] [--limit N] [--json-out FILE]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    rows = nips17_rows(limit=args.limit)
    model = create_model(args.model, args.weights)
    top1 = top5 = 0
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(rows), args.batch_size), desc="nips17", unit="batch"):
        chunk = rows[i:i + args.batch_size]
        x = torch.stack([preprocess(load_pil(p), model.config) for p, _, _ in chunk])
        y = torch.tensor([t for _, t, _ in chunk])
        with torch.inference_mode():
            pred = model(x).topk(5, dim=-1).indices
        top1 += int((pred[:, 0] == y).sum())
        top5 += int((pred == y[:, None]).any(-1).sum())
    result = {"model": model.name, "weights": model.weights, "images": len(rows), "top1": top1 / len(rows),
              "top5": top5 / len(rows), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{model.name}: top-1 {result['top1']:.1%}, top-5 {result['top5']:.1%} on {len(rows)} NIPS-17 images "
          f"({result['seconds']} s)")
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
