"""Problem 1(b): global max pooling vs global average pooling for "one cat vs many cats".

A toy scene is an 8×8 image holding n non-overlapping "cats", each a 3×3 plus-shaped blob. A cat
detector is one 3×3 convolution whose kernel is the plus template, with bias −4, followed by ReLU:
its response is 1 exactly at each cat's centre and 0 elsewhere (a shifted plus overlaps the template
in at most 2 pixels, and ReLU(2 − 4) = 0). Global max pooling of the response map then reads 1 for
one cat or for four (it detects presence), while global average pooling reads n/64 (it measures how
much cat there is).
"""

from __future__ import annotations

import numpy as np

from robustlens.reference.conv import conv2d_forward
from robustlens.reference.network import relu_forward
from robustlens.reference.pool import global_avg_pool_forward, global_max_pool_forward

__all__ = ["CAT_CENTRES", "cat_scene", "cat_detector", "one_vs_many_demo", "one_vs_many_table"]

SIZE = 8
CAT_CENTRES = ((1, 1), (5, 5), (1, 5), (5, 1))  # far enough apart that detector windows never see two cats
PLUS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.float64)


def cat_scene(n_cats: int) -> np.ndarray:
    """(1, 1, 8, 8) image with the first ``n_cats`` (0..4) plus-shaped cats of :data:`CAT_CENTRES`."""
    if not 0 <= n_cats <= len(CAT_CENTRES):
        raise ValueError(f"cat_scene: n_cats must be in 0..{len(CAT_CENTRES)}, got {n_cats}")
    img = np.zeros((SIZE, SIZE))
    for r, c in CAT_CENTRES[:n_cats]:
        img[r - 1:r + 2, c - 1:c + 2] = np.maximum(img[r - 1:r + 2, c - 1:c + 2], PLUS)
    return img[None, None]


def cat_detector(image: np.ndarray) -> np.ndarray:
    """ReLU(conv2d(image, plus template, bias −4, padding 'same')): (1, 1, 8, 8) response map."""
    y, _ = conv2d_forward(image, PLUS[None, None], np.array([-4.0]), padding="same")
    return relu_forward(y)[0]


def one_vs_many_demo(counts=(0, 1, 2, 4)) -> list[dict]:
    """For each cat count: ``{"cats", "global_max", "global_avg", "cat_pixels"}`` of the detector's map."""
    rows = []
    for n in counts:
        scene = cat_scene(n)
        response = cat_detector(scene)
        gmax, _ = global_max_pool_forward(response)
        gavg, _ = global_avg_pool_forward(response)
        rows.append({
            "cats": int(n),
            "cat_pixels": int(scene.sum()),
            "global_max": float(gmax[0, 0]),
            "global_avg": float(gavg[0, 0]),
        })
    return rows


def one_vs_many_table(rows: list[dict] | None = None) -> str:
    """The demo as the Markdown table quoted in ``docs/derivations.md``."""
    rows = one_vs_many_demo() if rows is None else rows
    lines = ["| cats | cat pixels | global max pool | global average pool |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['cats']} | {r['cat_pixels']} | {r['global_max']:.6f} | {r['global_avg']:.6f} |")
    return "\n".join(lines)
