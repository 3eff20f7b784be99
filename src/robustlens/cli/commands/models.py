"""`robustlens models`: the model zoo."""

from __future__ import annotations

import argparse

from robustlens.cli.common import emit
from robustlens.models import list_models


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo", description="List models that --model accepts.")
    p.add_argument("--all", action="store_true", help="also list every torchvision classification model")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = list_models(include_torchvision=True)
    shown = rows if args.all else [r for r in rows if r["source"] == "robustlens"]
    lines = [f"{r['name']:<24} {r['description']} (default weights: {r['default_weights']})" for r in shown]
    if not args.all:
        n_tv = sum(r["source"] == "torchvision" for r in rows)
        lines.append(f"... and {n_tv} torchvision models (resnet50, resnet18, ...): `robustlens models --all`; "
                     "timm models as timm:NAME when timm is installed")
    emit({"models": rows}, args, "\n".join(lines))
    return 0
