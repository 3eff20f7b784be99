"""The long run's curve: what the independent judge sees in the robust model vs the CPU-hours spent on it.

Each point is one finished stage of ``scripts/train_pair.sh`` (its float16 weights,
``snapshots/pair/<kind>-s<k>-final.safetensors``; k a number or a branch name such as ``2e3``) judged by
``benchmarks/perceptual_judge.py`` into ``docs/results/judge_pair_<kind>_s<k>.json``. The CPU-hours of stage k
are the training seconds of k and of every stage it grew from (``seconds_total`` in each final file's metadata,
the lineage from its ``weights_start``: every machine and session the stage ran on, training only, not the
judge); a segment joins each stage to the one it grew from. Prints the table and draws judge top-1/top-5 (the
attack's target, the inversion's source) against CPU-hours, the goal (50%) as a line.

    python scripts/judge_curve.py [--kind robust] [--figure docs/figures/judge_curve.png] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage_hours(snaps: Path, kind: str) -> dict[str, tuple[float, str | None]]:
    """stage name -> (cumulative training hours of the stage and every stage it grew from, the parent stage).
    The lineage is read from each final file's ``weights_start`` (branches such as ``2e3`` start from ``2``)."""
    from robustlens.models.checkpoints import read_metadata

    meta = {}
    for f in snaps.glob(f"{kind}-s*-final.safetensors"):
        name = f.name[len(kind) + 2:-len("-final.safetensors")]
        m = read_metadata(f)
        parent = re.fullmatch(rf".*{re.escape(kind)}-s(.+)-final\.safetensors", str(m.get("weights_start") or ""))
        meta[name] = (float(m["metrics"]["seconds_total"]) / 3600, parent.group(1) if parent else None)

    def total(name: str, seen: tuple = ()) -> float:
        own, parent = meta[name]
        return own + (total(parent, seen + (name,)) if parent in meta and parent not in seen else 0.0)

    return {name: (total(name), parent) for name, (_, parent) in meta.items()}


def points(results: Path, snaps: Path, kind: str) -> list[dict]:
    hours = stage_hours(snaps, kind)
    out = []
    for f in sorted(results.glob(f"judge_pair_{kind}_s*.json")):
        stage = re.search(r"_s([^_]+)\.json$", f.name).group(1)  # type: ignore[union-attr]
        if stage not in hours:
            print(f"skipping {f.name}: no final weights for stage {stage}", file=sys.stderr)
            continue
        r = json.loads(f.read_text())["robust"]
        a, i = r["attack_judge_target"], r["inversion_judge_source"]
        out.append({"stage": stage, "from": hours[stage][1], "cpu_hours": round(hours[stage][0], 3),
                    "attack_top1": a["top1"], "attack_top5": a["top5"], "inversion_top1": i["top1"],
                    "inversion_top5": i["top5"],
                    "file": str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f)})
    return sorted(out, key=lambda p: (p["cpu_hours"], p["stage"]))


def draw(pts: list[dict], path: Path, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = [p["cpu_hours"] for p in pts]
    by = {p["stage"]: p for p in pts}
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for key, label, color in (("attack", "attack: target", "tab:red"), ("inversion", "inversion: source", "tab:blue")):
        for top, style, alpha, what in (("top5", "-", 1.0, "in top-5"), ("top1", "--", 0.5, "top-1")):
            ax.plot(h, [p[f"{key}_{top}"] for p in pts], "o", color=color, alpha=alpha, label=f"{label} {what}")
            for p in pts:  # a segment from the stage each stage grew from
                if p["from"] in by:
                    q = by[p["from"]]
                    ax.plot([q["cpu_hours"], p["cpu_hours"]], [q[f"{key}_{top}"], p[f"{key}_{top}"]], style,
                            color=color, alpha=alpha)
    for p in pts:
        ax.annotate(f"s{p['stage']}", (p["cpu_hours"], p["attack_top5"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.axhline(0.5, color="gray", lw=0.8, ls=":", label="goal (top-5)")
    ax.set_xlabel("CPU-hours of training (1 thread)")
    ax.set_ylabel("fraction of 100 val images")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max(h) * 1.1 if h else 1)
    ax.set_title(f"Independent judge (EfficientNet-Lite0) on the {kind} model's outputs", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"figure: {path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="robust")
    p.add_argument("--results", default=str(ROOT / "docs" / "results"))
    p.add_argument("--snapshots", default=str(ROOT / "snapshots" / "pair"))
    p.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "judge_curve.png"))
    p.add_argument("--json-out")
    args = p.parse_args()
    pts = points(Path(args.results), Path(args.snapshots), args.kind)
    if not pts:
        print(f"no judged stages: run benchmarks/perceptual_judge.py --json-out "
              f"{args.results}/judge_pair_{args.kind}_s1.json first", file=sys.stderr)
        return 1
    print(f"{'stage':>5} {'from':>5} {'CPU-h':>6} {'attack top-1':>12} {'top-5':>6} {'inversion top-1':>15} {'top-5':>6}")
    for q in pts:
        print(f"{q['stage']:>5} {q['from'] or '-':>5} {q['cpu_hours']:6.2f} {q['attack_top1']:12.2f} {q['attack_top5']:6.2f} "
              f"{q['inversion_top1']:15.2f} {q['inversion_top5']:6.2f}")
    draw(pts, Path(args.figure), args.kind)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(pts, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
