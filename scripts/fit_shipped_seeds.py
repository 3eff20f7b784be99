"""Rebuild the seed statistics the package ships for generation without data
(``src/robustlens/assets/imagenette128_seeds.safetensors``): the ten Imagenette classes' Gaussians fitted to the
9469 training images at 128 px (seeds at 32 px, :mod:`robustlens.recipes.synthesis.seeds`), kept as the top
``--rank`` principal directions per class plus a per-value residual variance. Prints the share of each class's
variance the directions keep.

    PYTHONPATH=src python scripts/fit_shipped_seeds.py [--data ../shared/data/imagenette128/train] [--rank 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustlens.models import create_model
from robustlens.recipes.synthesis.seeds import SHIPPED_SEEDS, LowRankGaussians
from robustlens.robust.datasets import open_dataset, preload

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagenette128" / "train"))
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "src" / "robustlens" / "assets" / SHIPPED_SEEDS))
    args = p.parse_args()
    model = create_model("imagenette128_resnet", "none")
    pixels, labels = preload(open_dataset(f"folder:{args.data}", model))
    low = LowRankGaussians.fit(pixels.float() / 255.0, labels, rank=args.rank,
                               meta={"data": "Imagenette train (9469 images), 128 px"})
    low.save(Path(args.out))
    print(f"{args.out}: {Path(args.out).stat().st_size / 1e6:.1f} MB, rank {args.rank}, variance kept per class "
          + ", ".join(f"{v:.3f}" for v in low.meta["variance_kept"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
