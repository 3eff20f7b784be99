"""`robustlens models`: the model zoo, the published robust checkpoints, and fetching one of them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robustlens.cli.common import emit
from robustlens.models import list_models


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo and the published robust checkpoints",
                       description="List models that --model accepts; --published lists the published robust "
                                   "checkpoints (MadryLab, RobustBench) that --model/--weights take by name; "
                                   "--weights NAME downloads one into the torch hub cache, checks and loads it.")
    p.add_argument("--all", action="store_true", help="also list every torchvision classification model")
    p.add_argument("--published", action="store_true", help="list the published robust checkpoints")
    p.add_argument("--weights", "--model", dest="fetch", metavar="NAME", default=None,
                   help="download (once; resumed if interrupted), verify, convert and load published checkpoint NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.fetch:
        return _fetch(args)
    if args.published:
        return _published(args)
    rows = list_models(include_torchvision=True)
    shown = rows if args.all else [r for r in rows if r["source"] == "robustlens"]
    lines = [f"{r['name']:<24} {r['description']} (default weights: {r['default_weights']})" for r in shown]
    if not args.all:
        n_tv = sum(r["source"] == "torchvision" for r in rows)
        n_pub = sum(r["source"] == "published" for r in rows)
        lines.append(f"... and {n_tv} torchvision models (resnet50, resnet18, ...): `robustlens models --all`; "
                     "timm models as timm:NAME when timm is installed")
        lines.append(f"... and {n_pub} published robust checkpoints (madry_l2_3, ...): `robustlens models --published`")
    emit({"models": rows}, args, "\n".join(lines))
    return 0


def _published(args: argparse.Namespace) -> int:
    from robustlens.models.published import list_published

    rows = list_published()
    lines = []
    for r in rows:
        digest = f" (SHA-256 {r['sha256_recorded'][:16]}... recorded at the first download)" \
            if r["sha256_recorded"] else ""
        lines += [f"{r['name']:<20} {r['dataset']:<8} {r['threat']:<15} {r['arch']:<21} {r['state']}{digest}",
                  f"    {r['fetch_url']}", f"    URL from: {r['fetch_url_source']}"]
    lines += ["", "Use as --model NAME (or --model ARCH --weights NAME); downloaded once into the torch hub cache.",
              "`robustlens models --weights NAME` fetches one now; --json adds licences, citations and cache paths."]
    emit({"published": rows}, args, "\n".join(lines))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    import torch

    from robustlens.models.hub import digest_record
    from robustlens.models.published import fetch_published, list_published, load_published

    path = fetch_published(args.fetch)
    model = load_published(args.fetch)
    record = next((digest_record(Path(r["cache"])) for r in list_published() if r["name"] == args.fetch), None)
    sha = json.loads(record.read_text(encoding="utf-8")).get("sha256") if record and record.is_file() else None
    size = model.config.input_size
    with torch.no_grad():  # one grey image through the network: the checkpoint really loads and runs
        logits = model(torch.full((1, model.config.channels, size, size), 0.5))
    result = {"name": args.fetch, "path": str(path), "model": model.describe(),
              "parameters": sum(t.numel() for t in model.parameters()), "logits_shape": list(logits.shape),
              "sha256": sha}
    emit(result, args, f"{args.fetch}: {path}\nloaded {model.weights}: {result['parameters']:,} parameters, "
                       f"{logits.shape[1]} classes" + (f"\nSHA-256 of the download: {sha}" if sha else ""))
    return 0
