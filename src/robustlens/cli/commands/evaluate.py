"""`robustlens evaluate`: clean and PGD robust accuracy of a model on a dataset, for one or several ε."""

from __future__ import annotations

import argparse

from robustlens.checks import count, positive, vacuous_eps
from robustlens.cli.common import (
    add_model_args,
    add_output_args,
    device_of,
    emit,
    number,
    prepare_out,
    warn,
    write_json,
)


def eps_list(text: str) -> list[float]:
    """``"0.1,0.3"`` or ``"2/255,8/255"`` -> floats (each ≥ 0)."""
    values = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            v = number(part)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"--eps: {e}") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"--eps: {part.strip()} is negative")
        values.append(v)
    if not values:
        raise argparse.ArgumentTypeError("--eps: give at least one value")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="clean and robust (PGD) accuracy on a dataset",
        description="Clean accuracy and robust accuracy under untargeted PGD (random start) for each --eps, on "
                    "a labelled dataset; a plot of accuracy against eps with --out. Under "
                    "`torchrun --nproc_per_node=K -m robustlens evaluate ...` each process takes every K-th batch "
                    "and the counts are summed: the same numbers as one process.")
    add_model_args(p)
    p.add_argument("--data", required=True, help="folder:PATH, nips17:PATH, list:FILE or mnist:PATH")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat model (default linf)")
    p.add_argument("--eps", type=eps_list, help="comma-separated radii in [0,1] pixel units (default 8/255 for "
                                                 "linf, 0.5 for l2, 10 for l1)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    p.add_argument("--step-size", type=number, help="PGD step (default 2.5*eps/steps per eps)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts (default 1)")
    p.add_argument("--limit", type=int, help="evaluate this many examples, spread evenly over the dataset")
    p.add_argument("--batch-size", type=int, default=100, help="batch size; results depend on it (default 100)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding images (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_args(p)
    p.set_defaults(run=run)


DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 10.0}


def run(args: argparse.Namespace) -> int:
    from robustlens.models import create_model
    from robustlens.robust import distributed
    from robustlens.robust.datasets import open_dataset, parse_data_spec
    from robustlens.robust.evaluate import evaluate_robustness, plot_accuracy_vs_eps

    eps = args.eps or [DEFAULT_EPS[args.norm]]
    for name in ("steps", "restarts", "batch_size", "limit"):
        count(f"--{name.replace('_', '-')}", getattr(args, name))
    positive("--step-size", args.step_size)
    count("--workers", args.workers, minimum=0)
    spec = parse_data_spec(args.data)
    device = device_of(args)
    ctx = distributed.init(device)
    try:
        model = create_model(args.model, args.weights, seed=args.seed).to(ctx.device)
        dataset = open_dataset(spec, model, limit=args.limit)
        c = model.config
        notes = [n for e in eps for n in (warn(vacuous_eps(args.norm, e, (c.channels, c.input_size, c.input_size)))
                                          if ctx.is_main else [])]
        out = prepare_out(args.out) if ctx.is_main else None
        result = evaluate_robustness(model, dataset, norm=args.norm, eps=eps, steps=args.steps,
                                     step_size=args.step_size, restarts=args.restarts, batch_size=args.batch_size,
                                     seed=args.seed, workers=args.workers, ctx=ctx,
                                     progress=not args.no_progress)
        if not ctx.is_main:
            return 0
        summary = {**model.describe(), "data": str(spec), **result.to_dict(), "notes": notes}
        if out:
            summary["figures"] = [plot_accuracy_vs_eps({model.name: result}, out / "accuracy_vs_eps.png").name]
            write_json(summary, out / "result.json")
        lines = [f"{model.name} ({model.weights}) on {spec}: n={result.n}"
                 + (f" ({result.skipped} images of other classes skipped)" if result.skipped else ""),
                 f"  clean accuracy  {result.clean_accuracy:.4f}"]
        lines += [f"  robust accuracy {acc:.4f}  ({result.norm} eps={e:g}, PGD-{result.steps})"
                  for e, acc in result.robust_accuracy.items()]
        if out:
            lines.append(f"figure and result.json in {args.out}")
        emit(summary, args, "\n".join(lines))
        return 0
    finally:
        distributed.shutdown(ctx)
