"""`robustlens report`: the whole problem set run live into one self-contained HTML file (+ PNGs, report.json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robustlens.checks import count, positive, vacuous_eps
from robustlens.cli.common import (
    add_max_pixels_arg,
    add_speed_args,
    device_of,
    emit,
    number,
    prepare_out,
    speed_from_args,
    warn,
)
from robustlens.models import DEFAULT_MODEL, DEFAULT_ROBUST_MODEL
from robustlens.models.labels import resolve_class
from robustlens.report import ReportSettings, build_report


def add_report_args(p: argparse.ArgumentParser, *, out_default: str) -> None:
    """Options shared by `report` and `demo`."""
    p.add_argument("--out", default=out_default, help=f"output folder (default ./{out_default})")
    p.add_argument("--quick", action="store_true",
                   help="every section with a few steps (a smoke test for CI, about a minute; the pictures are rough)")
    p.add_argument("--target", action="append", metavar="CLASS",
                   help="target class of 4(a)-(c), by index, wnid or name; repeat for several "
                        "(default: tarantula and tiger cat)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random start and init (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object (paths, status per section)")
    add_speed_args(p)


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = ReportSettings()
    p = sub.add_parser("report", help="run every part of the problem set into one HTML report",
                       description="Run every part (reference layers and gradient checks, features and "
                                   "classification, targeted attacks, visual difference, inversion, robust vs "
                                   "standard, DeepDream, feature visualisation) and write report.html (self-"
                                   "contained, opens offline), the PNGs and report.json into --out.")
    p.add_argument("--image", default=None, help="image file (default: the bundled Corgi photo)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"pretrained model (default {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None, help="weights of --model: imagenet, none or PATH (default: its own)")
    p.add_argument("--robust-model", default=None,
                   help=f"robust model for 4(e)(f), attribution maps and synthesis (default "
                        f"{DEFAULT_ROBUST_MODEL}, compared with its _standard twin; a published ImageNet "
                        "checkpoint with torchvision's weights of its architecture; another model with --model)")
    p.add_argument("--robust-weights", default=None, help="weights file of --robust-model")
    g = p.add_argument_group("settings")
    g.add_argument("--norm", default=d.norm, choices=["linf", "l2"], help=f"attack norm of 4(a)-(c) (default {d.norm})")
    g.add_argument("--eps", type=number, default=d.eps, help="attack radius in pixel units (default 4/255)")
    g.add_argument("--attack-steps", type=int, default=None, help=f"attack steps (default {d.attack_steps})")
    g.add_argument("--inversion-steps", type=int, default=None, help=f"inversion steps (default {d.inversion_steps})")
    g.add_argument("--layer", action="append", metavar="LAYER",
                   help="layer to invert in 4(d); repeat (default: three chosen from the model, early to late)")
    g.add_argument("--robust-norm", default=d.robust_norm, choices=["linf", "l2"],
                   help=f"attack norm of 4(e)(f) (default {d.robust_norm}, the robust model's training norm)")
    g.add_argument("--robust-eps", type=number, default=d.robust_eps, help=f"attack radius of 4(e)(f) (default {d.robust_eps})")
    g.add_argument("--synthesis-data", default="", metavar="SPEC",
                   help="training images (folder:PATH) to fit the seeds of class-conditional generation in the "
                        "synthesis section (cached; default: a fit already cached for the robust model, else none)")
    add_report_args(p, out_default="robustlens-report")
    add_max_pixels_arg(p)
    p.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> ReportSettings:
    count("--attack-steps", getattr(args, "attack_steps", None))
    count("--inversion-steps", getattr(args, "inversion_steps", None))
    for name in ("eps", "robust_eps"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name, None), allow_zero=True)
    over = {"seed": args.seed}
    if getattr(args, "layer", None):
        over["inversion_layers"] = tuple(args.layer)
    if args.target:
        over["targets"] = tuple(dict.fromkeys(resolve_class(t) for t in args.target))
    if getattr(args, "synthesis_data", ""):
        from robustlens.robust.datasets import parse_data_spec

        parse_data_spec(args.synthesis_data)
        over["synthesis_data"] = args.synthesis_data
    for name in ("norm", "eps", "attack_steps", "inversion_steps", "robust_norm", "robust_eps"):
        value = getattr(args, name, None)
        if value is not None:
            over[name] = value
    return ReportSettings.quick_settings(**over) if args.quick else ReportSettings(**over)


def run_report(args: argparse.Namespace, *, settings: ReportSettings | None = None, extra: dict | None = None,
               **kwargs) -> int:
    """Build the report (``settings``: default from ``args``), print progress on stderr and the HTML path (or
    JSON, with ``extra`` added) on stdout."""
    def log(line: str) -> None:
        if not args.json:
            sys.stderr.write(line.rstrip("\n") + "\n")
            sys.stderr.flush()

    settings = settings or settings_from(args)
    notes = warn(vacuous_eps(settings.norm, settings.eps, ())) + warn(vacuous_eps(settings.robust_norm,
                                                                                  settings.robust_eps, ()))
    with speed_from_args(args):
        out = prepare_out(args.out)  # staged: moved into place when the command returns
        report = build_report(out, settings=settings, device=device_of(args), log=log, **kwargs)
    sections = [{"id": s["id"], "title": s["title"], "status": s["status"], "seconds": round(s["seconds"], 2)}
                for s in report["sections"]]
    html = Path(args.out).resolve() / Path(report["html"]).name
    result = {"html": str(html), "json": str(html.with_name("report.json")),
              "status": report["status"], "seconds": report["seconds"], "sections": sections, "notes": notes,
              **(extra or {})}
    lines = [f"  {s['status']:<11} {s['seconds']:7.1f} s  {s['title']}" for s in sections]
    lines += [f"total {report['seconds']:.1f} s; status {report['status']}", str(html)]
    emit(result, args, "\n".join(lines))
    return 1 if report["status"] == "error" else 0


def run(args: argparse.Namespace) -> int:
    return run_report(args, image=args.image, model=args.model, weights=args.weights,
                      robust_model=args.robust_model, robust_weights=args.robust_weights)
