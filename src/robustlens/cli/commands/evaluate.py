"""`robustlens evaluate`: clean and robust accuracy of a model on a dataset, for one or several ε, under
AutoAttack (default), one of its attacks, or PGD."""

from __future__ import annotations

import argparse

from robustlens.checks import count, positive, vacuous_eps
from robustlens.cli.common import (
    add_model_args,
    add_output_args,
    add_speed_args,
    device_of,
    emit,
    number,
    prepare_out,
    speed_from_args,
    warn,
    write_json,
)
from robustlens.errors import UserError


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


ATTACK_CHOICES = ("autoattack", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "pgd")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="clean and robust accuracy on a dataset (AutoAttack by default, or PGD)",
        description="Clean accuracy and robust accuracy for each --eps on a labelled dataset. Default: AutoAttack "
                    "(--version standard: APGD-CE, APGD-T, FAB-T, Square; each attack only on the examples still "
                    "robust; robust = every attack fails), with the accuracy after each attack, which attack broke "
                    "each example, and warning flags for evaluations gradient masking may fool. --attack pgd: "
                    "untargeted PGD (random start), fast. Under `torchrun --nproc_per_node=K -m robustlens "
                    "evaluate ...` each process takes every K-th batch: the same numbers as one process.")
    add_model_args(p)
    p.add_argument("--data", required=True, help="folder:PATH, nips17:PATH, list:FILE or mnist:PATH")
    p.add_argument("--attack", default="autoattack", choices=ATTACK_CHOICES,
                   help="autoattack (default), one of its attacks alone, or pgd")
    p.add_argument("--version", choices=["standard", "plus", "rand"],
                   help="AutoAttack version (default standard; plus: restarts; rand: for randomised models); not "
                        "for --attack pgd")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"], help="threat model (default linf)")
    p.add_argument("--eps", type=eps_list, help="comma-separated radii in [0,1] pixel units (default 8/255 for "
                                                 "linf, 0.5 for l2, 10 for l1)")
    p.add_argument("--steps", type=int, help="gradient steps (default: 10 for PGD; 100 for APGD and FAB)")
    p.add_argument("--step-size", type=number, help="PGD step (default 2.5*eps/steps per eps)")
    p.add_argument("--restarts", type=int, help="random restarts of PGD / APGD-CE (default: 1, plus: 5)")
    p.add_argument("--start", choices=["random", "input"],
                   help="where PGD's restarts begin (default random: a random point of the ball; input: the first at "
                        "the clean image, later ones at random; --start input --restarts 2 tries both)")
    p.add_argument("--queries", type=int, help="Square attack queries (default 5000)")
    p.add_argument("--limit", type=int, help="evaluate this many examples, spread evenly over the dataset")
    p.add_argument("--batch-size", type=int, default=100, help="batch size; results depend on it (default 100)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding images (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_speed_args(p)
    add_output_args(p)
    p.set_defaults(run=run)


DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 10.0}


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "restarts", "queries", "batch_size", "limit"):
        count(f"--{name.replace('_', '-')}", getattr(args, name))
    positive("--step-size", args.step_size)
    count("--workers", args.workers, minimum=0)
    if args.norm == "l1" and args.attack in ("autoattack", "fab-t", "square"):
        raise UserError(f"--attack {args.attack} supports --norm linf and l2 (APGD alone and PGD also l1)")
    refuse_inapplicable(args)


OPTION_KEYS = {"--steps": "steps", "--step-size": "step_size", "--restarts": "restarts", "--queries": "queries",
               "--start": "start"}
PGD_KEYS = frozenset({"steps", "step_size", "restarts", "start"})


def refuse_inapplicable(args: argparse.Namespace) -> None:
    """An attack option given for an --attack (and --version) that has no such setting is a UserError: it is
    applied or refused, never dropped."""
    from robustlens.robust.autoattack.runner import plan

    if args.attack == "pgd":
        if args.version is not None:
            raise UserError("--version applies to AutoAttack and its attacks, not to --attack pgd")
        keys, what = PGD_KEYS, "--attack pgd"
    else:
        steps = plan(args.attack, args.version or "standard")
        keys = frozenset(k for _, settings in steps for k in settings)
        what = f"--attack {args.attack} (--version {args.version or 'standard'}: {', '.join(a for a, _ in steps)})"
    for option, key in OPTION_KEYS.items():
        if getattr(args, key) is not None and key not in keys:
            raise UserError(f"{option} does not apply to {what}; its settings are {', '.join(sorted(keys))}")


def run(args: argparse.Namespace) -> int:
    with speed_from_args(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from robustlens.models import create_model
    from robustlens.robust import distributed
    from robustlens.robust.datasets import open_dataset, parse_data_spec

    _check(args)
    eps = args.eps or [DEFAULT_EPS[args.norm]]
    spec = parse_data_spec(args.data)
    ctx = distributed.init(device_of(args))
    try:
        model = create_model(args.model, args.weights, seed=args.seed).to(ctx.device)
        dataset = open_dataset(spec, model, limit=args.limit)
        c = model.config
        notes = [n for e in eps for n in (warn(vacuous_eps(args.norm, e, (c.channels, c.input_size, c.input_size)))
                                          if ctx.is_main else [])]
        out = prepare_out(args.out) if ctx.is_main else None
        evaluate = _pgd if args.attack == "pgd" else _autoattack
        summary, lines = evaluate(args, model, dataset, eps, ctx, out)
        if not ctx.is_main:
            return 0
        summary = {**model.describe(), "data": str(spec), **summary, "notes": notes}
        head = [f"{model.name} ({model.weights}) on {spec}: n={summary['n']}"
                + (f" ({summary['skipped']} images of other classes skipped)" if summary["skipped"] else "")]
        if out:
            write_json(summary, out / "result.json")
            lines.append(f"figure and result.json in {args.out}")
        emit(summary, args, "\n".join(head + lines))
        return 0
    finally:
        distributed.shutdown(ctx)


def _pgd(args, model, dataset, eps, ctx, out) -> tuple[dict, list[str]]:
    from robustlens.robust.evaluate import evaluate_robustness, plot_accuracy_vs_eps

    result = evaluate_robustness(model, dataset, norm=args.norm, eps=eps, steps=args.steps or 10,
                                 step_size=args.step_size, restarts=args.restarts or 1, start=args.start or "random",
                                 batch_size=args.batch_size, seed=args.seed, workers=args.workers, ctx=ctx,
                                 progress=not args.no_progress)
    summary = result.to_dict()
    if out:
        summary["figures"] = [plot_accuracy_vs_eps({model.name: result}, out / "accuracy_vs_eps.png").name]
    lines = [f"  clean accuracy  {result.clean_accuracy:.4f}"]
    lines += [f"  robust accuracy {acc:.4f}  ({result.norm} eps={e:g}, PGD-{result.steps})"
              for e, acc in result.robust_accuracy.items()]
    return summary, lines


def _autoattack(args, model, dataset, eps, ctx, out) -> tuple[dict, list[str]]:
    from robustlens.robust.autoattack.evaluation import evaluate_autoattack, plot_breakdown

    overrides = {k: getattr(args, k) for k in ("steps", "restarts", "queries") if getattr(args, k) is not None}
    try:
        result = evaluate_autoattack(model, dataset, norm=args.norm, eps=eps, attack=args.attack,
                                     version=args.version or "standard", overrides=overrides, batch_size=args.batch_size,
                                     seed=args.seed, workers=args.workers, ctx=ctx, progress=not args.no_progress)
    except ValueError as err:
        raise UserError(str(err)) from None
    summary = result.to_dict()
    if out:
        summary["figures"] = [plot_breakdown(result, out / "robust_accuracy_after_each_attack.png").name]
    n = max(result.n, 1)
    lines = [f"  clean accuracy  {result.clean_correct / n:.4f}"]
    for e, ra, raw in zip(result.eps, result.robust_after, result.raw_robust):
        steps = ", ".join(f"{a} {c / n:.4f}" for a, c in ra.items())
        lines.append(f"  robust accuracy {ra[result.attacks[-1]] / n:.4f}  ({args.norm} eps={e:g}; after {steps})")
    lines += [f"  WARNING [{f.code}] {f.message}" for f in result.flags]
    return summary, lines
