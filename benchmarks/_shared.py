"""Helpers for benchmark scripts: locate ../shared data and read the NIPS-17 csv (labels 1-based -> 0-based)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"skipped: needs {path} (the shared data folder beside the repository)")
    return path


def nips17_rows(root: Path | None = None, limit: int | None = None) -> list[tuple[Path, int, int]]:
    """(image path, true label 0..999, target class 0..999) for each row of images.csv."""
    root = require(root or SHARED / "data" / "nips17")
    with open(root / "images.csv", newline="") as f:
        rows = [(root / "images" / f"{r['ImageId']}.jpg", int(r["TrueLabel"]) - 1, int(r["TargetClass"]) - 1)
                for r in csv.DictReader(f)]
    return rows[:limit] if limit else rows
