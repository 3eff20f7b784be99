"""`robustlens demo`: the whole report on the bundled Corgi photo (MIT licence, in ``robustlens/assets``) and the
bundled EfficientNet-Lite0, offline; ``--quick`` runs every section with a few steps (for CI). Prints the HTML
file's path."""

from __future__ import annotations

import argparse

from robustlens.cli.commands.report import add_report_args, run_report

IMAGES = ("corgi", "chelsea", "coffee", "astronaut", "rocket")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole report on a bundled photo and model (offline, < 10 min on CPU)",
                       description="Run `robustlens report` on the bundled Corgi photo with the bundled "
                                   "EfficientNet-Lite0 and print the path of the HTML report. --quick runs every "
                                   "section with a few steps (a smoke test for CI; the pictures are rough).")
    p.add_argument("--image", default="corgi", choices=IMAGES,
                   help="bundled photo: corgi (default; MIT licence) or one of scikit-image's CC0 samples")
    add_report_args(p, out_default="robustlens-demo")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.image == "corgi":
        from robustlens.assets import CORGI_LABEL, corgi_image

        return run_report(args, image=corgi_image(), image_label=CORGI_LABEL)
    from robustlens.images import example_image
    from robustlens.report import example_label

    return run_report(args, image=example_image(args.image), image_label=example_label(args.image))
