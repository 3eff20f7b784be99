"""`robustlens demo`: the whole report on a bundled photo (the Corgi, MIT licence, in ``robustlens/assets``), by
default with the bundled EfficientNet-Lite0, offline; ``--model resnet50 --robust-model madry_l2_3`` runs it on
the course's models. Before it starts it times one pass of each model, says what the run will cost and scales
the step counts to ``--budget`` minutes; ``--quick`` runs every section with a few steps (for CI). Prints the
HTML file's path."""

from __future__ import annotations

import argparse
import sys

from robustlens.checks import positive
from robustlens.cli.commands.report import add_report_args, run_report, settings_from
from robustlens.cli.common import device_of
from robustlens.models import DEFAULT_MODEL, DEFAULT_ROBUST_MODEL

IMAGES = ("corgi", "chelsea", "coffee", "astronaut", "rocket")
BUDGET_MIN = 10.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole report on a bundled photo and model (offline, minutes on a CPU)",
                       description="Run `robustlens report` on the bundled Corgi photo (default: the bundled "
                                   "EfficientNet-Lite0 and the project's robust Imagenette pair) and print the path "
                                   "of the HTML report. It first times one pass of each model and prints what the "
                                   "run will cost; steps are scaled down to fit --budget. --quick runs every "
                                   "section with a few steps (a smoke test for CI; the pictures are rough).")
    p.add_argument("--image", default="corgi", choices=IMAGES,
                   help="bundled photo: corgi (default; MIT licence) or one of scikit-image's CC0 samples")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"pretrained model of Problems 2 and 4 (default "
                                                          f"{DEFAULT_MODEL}; e.g. resnet50)")
    p.add_argument("--weights", default=None, help="weights of --model (default: its own)")
    p.add_argument("--robust-model", default=None,
                   help=f"robust model of 4(e)(f) (default {DEFAULT_ROBUST_MODEL}; e.g. madry_l2_3, compared with "
                        "torchvision's ResNet-50)")
    p.add_argument("--robust-weights", default=None, help="weights file of --robust-model")
    p.add_argument("--budget", type=float, default=BUDGET_MIN, metavar="MINUTES",
                   help=f"scale the step counts so the estimated run fits this many minutes (default {BUDGET_MIN:g}; "
                        "0: the full settings whatever they cost)")
    add_report_args(p, out_default="robustlens-demo")
    p.set_defaults(run=run)


def _probe_models(args: argparse.Namespace):
    """Random-weight models of the demo's architectures (nothing is downloaded to time a pass)."""
    from robustlens.models import create_model
    from robustlens.models.published import published

    robust_name = args.robust_model or DEFAULT_ROBUST_MODEL
    entry = published(robust_name)
    main = create_model(args.model, "none")
    robust = create_model(entry.arch if entry else robust_name, "none")
    return main, robust


def plan(args: argparse.Namespace):
    """(settings, cost dict or None): the settings from ``args``, fitted to ``--budget`` unless ``--quick``."""
    from robustlens.report.budget import estimate, fit, pass_seconds

    positive("--budget", args.budget, allow_zero=True)
    settings = settings_from(args)
    main, robust = _probe_models(args)
    device = device_of(args)
    main_s = pass_seconds(main, device)
    pair_s = 2 * (main_s if type(main.net) is type(robust.net) and main.config.input_size == robust.config.input_size
                  else pass_seconds(robust, device))
    if args.budget:
        settings, cost = fit(settings, main_s, pair_s, args.budget * 60)
    else:
        cost = estimate(settings, main_s, pair_s)
    return settings, cost


def _say(args: argparse.Namespace, cost) -> None:
    if args.json:
        return
    size_note = "quick settings" if args.quick else (
        "full settings" if cost.factor == 1 else f"steps × {cost.factor:.2f} to fit --budget {args.budget:g} min")
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in cost.seconds.items())
    sys.stderr.write(f"demo: one forward+backward pass: {args.model} {cost.main_pass_s:.3f} s, the 4(e)(f) pair "
                     f"{cost.pair_pass_s:.3f} s; {size_note}; estimated {cost.total / 60:.1f} min ({parts}, "
                     f"+ about 20 s for Problems 1-3)\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    settings, cost = plan(args)
    _say(args, cost)
    extra = {"estimate": cost.to_dict()}
    common = dict(settings=settings, extra=extra, model=args.model, weights=args.weights,
                  robust_model=args.robust_model, robust_weights=args.robust_weights)
    if args.image == "corgi":
        from robustlens.assets import CORGI_LABEL, corgi_image

        return run_report(args, image=corgi_image(), image_label=CORGI_LABEL, **common)
    from robustlens.images import example_image
    from robustlens.report import example_label

    return run_report(args, image=example_image(args.image), image_label=example_label(args.image), **common)
