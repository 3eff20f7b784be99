"""`robustlens demo`: the whole report on the embedded default — scikit-image's `chelsea` photo (CC0) and the
bundled EfficientNet-Lite0 — sized to finish in under 10 minutes on a 2-core CPU; prints the HTML file's path."""

from __future__ import annotations

import argparse

from robustlens.cli.commands.report import add_report_args, run_report
from robustlens.images import example_image
from robustlens.report import example_label


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole report on a bundled photo and model (offline, < 10 min on CPU)",
                       description="Run `robustlens report` on scikit-image's chelsea photo with the bundled "
                                   "EfficientNet-Lite0 and print the path of the HTML report.")
    p.add_argument("--image", default="chelsea", help="bundled example: chelsea, coffee, astronaut or rocket")
    add_report_args(p, out_default="robustlens-demo")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_report(args, image=example_image(args.image), image_label=example_label(args.image))
