"""`robustlens audit`: one resumable run that says how robust one or several models are (AutoAttack standard at
each ε with its flags, PGD, 95% Wilson intervals, calibration, gradient alignment and the randomisation check,
cost, the manifest), written as ``audit.html`` (self-contained) and ``audit.json`` in ``--out``."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

from robustlens.checks import count, positive, vacuous_eps
from robustlens.cli.commands.evaluate import eps_list
from robustlens.cli.common import (
    add_max_pixels_arg,
    add_speed_args,
    device_of,
    emit,
    number,
    speed_from_args,
    write_json,
)
from robustlens.errors import UserError

NORMS = ("linf", "l2")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="how robust is it really: AutoAttack + flags, PGD, intervals, calibration, attribution checks",
        description="Audit one or several models on a labelled dataset: clean accuracy, AutoAttack (standard) "
                    "robust accuracy at each --eps with the accuracy after each attack, which attack broke each "
                    "example and the gradient-masking flags, PGD, 95%% Wilson intervals, calibration (ECE, "
                    "reliability) clean and under attack, gradient-image alignment and the model-randomisation "
                    "check of saliency, cost, and the manifest. Writes audit.html and audit.json into --out. "
                    "Every finished batch of every attack is journalled in --out/journal: run the same command "
                    "again (or with --resume) to continue an interrupted audit with the same final figures. "
                    "Under `torchrun --nproc_per_node=K -m robustlens audit ...`: the same numbers as one process.")
    p.add_argument("--model", action="append", required=True, metavar="NAME[=WEIGHTS]",
                   help="a model of `robustlens models`, optionally =PATH to a state dict or =none (random "
                        "weights); repeat for several models")
    p.add_argument("--data", required=True, help="folder:PATH, nips17:PATH, list:FILE or mnist:PATH")
    p.add_argument("--norm", default="linf", choices=NORMS, help="threat model (default linf)")
    p.add_argument("--eps", type=eps_list, required=True, help="comma-separated radii in [0,1] pixel units")
    p.add_argument("--limit", type=int, help="audit this many examples, spread evenly over the dataset")
    p.add_argument("--batch-size", type=int, default=100,
                   help="batch size: the unit of the journal; results depend on it (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
    p.add_argument("--pgd-steps", type=int, default=40, help="PGD steps of the PGD figure (default 40)")
    p.add_argument("--pgd-step-size", type=number, help="PGD step (default 2.5*eps/steps per eps)")
    p.add_argument("--pgd-restarts", type=int, default=1, help="PGD restarts (default 1)")
    p.add_argument("--pgd-start", choices=["random", "input"], default="random",
                   help="where PGD's restarts begin (default random; input: the first at the clean image, later ones "
                        "at random: --pgd-start input --pgd-restarts 2 tries both)")
    p.add_argument("--explain-images", type=int, help="images for the alignment and sanity checks (default 16)")
    p.add_argument("--sanity-stages", type=int, help="layers randomised in the sanity check, at most (default 6)")
    p.add_argument("--no-explain", action="store_true", help="skip the alignment and sanity checks")
    p.add_argument("--resume", action="store_true",
                   help="continue the audit journalled in --out (refused when there is none)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_max_pixels_arg(p)
    add_speed_args(p)
    p.add_argument("--out", default="audit", help="folder for audit.html, audit.json and the journal (default audit)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("limit", "batch_size", "pgd_steps", "pgd_restarts", "explain_images", "sanity_stages"):
        count(f"--{name.replace('_', '-')}", getattr(args, name))
    positive("--pgd-step-size", args.pgd_step_size)
    for e in args.eps:
        if e <= 0:
            raise UserError(f"--eps {e:g}: every radius must be above 0 (clean accuracy is always reported)")
    if args.no_explain:
        for name in ("explain_images", "sanity_stages"):
            if getattr(args, name) is not None:
                raise UserError(f"--{name.replace('_', '-')} does not apply with --no-explain")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")


def model_specs(values: list[str]) -> list[tuple[str, str | None, str]]:
    """``NAME[=WEIGHTS]`` -> (name, weights or None, label); labels are unique (the weights' file stem when a
    name repeats)."""
    specs = []
    for v in values:
        name, _, weights = v.partition("=")
        if not name.strip() or (v.count("=") and not weights.strip()):
            raise UserError(f"--model {v!r}: give NAME or NAME=WEIGHTS")
        specs.append((name.strip(), weights.strip() or None))
    labels = [n if [m for m, _ in specs].count(n) == 1 or w is None else f"{n}:{Path(w).stem}" for n, w in specs]
    if len(set(labels)) != len(labels):
        raise UserError("--model: the same model is given twice")
    return [(n, w, lab) for (n, w), lab in zip(specs, labels)]


def _sha256(path: str | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load(args: argparse.Namespace, ctx) -> list[dict]:
    """Every model and its dataset view, every ε checked against its input size (before anything is written)."""
    from robustlens.models import create_model
    from robustlens.robust.datasets import open_dataset, parse_data_spec

    spec = parse_data_spec(args.data)
    out = []
    for name, weights, label in model_specs(args.model):
        model = create_model(name, weights, seed=args.seed).to(ctx.device)
        c = model.config
        for e in args.eps:
            vac = vacuous_eps(args.norm, e, (c.channels, c.input_size, c.input_size))
            if vac:
                raise UserError(f"--eps out of range for {label}: {vac}")
        dataset = open_dataset(spec, model, limit=args.limit)
        if len(dataset) == 0:
            raise UserError(f"{spec}: no examples for {label}")
        out.append({"label": label, "model": model, "dataset": dataset, "weights": weights,
                    "weights_sha256": _sha256(weights), "describe": model.describe(),
                    "training": any(t.training for t in model.modules())})
    return out


def _settings(args: argparse.Namespace, models: list[dict]) -> dict:
    """What the journal is for: a resumed run must match every entry."""
    return {"models": [[m["label"], m["describe"]["model"], m["weights"], m["weights_sha256"]] for m in models],
            "data": args.data, "norm": args.norm, "eps": sorted(args.eps), "limit": args.limit,
            "batch_size": args.batch_size, "seed": args.seed, "pgd_steps": args.pgd_steps,
            "pgd_step_size": args.pgd_step_size, "pgd_restarts": args.pgd_restarts, "explain": not args.no_explain,
            "explain_images": args.explain_images or 16, "sanity_stages": args.sanity_stages or 6,
            # only when not the default, so journals written before the option existed still resume
            **({"pgd_start": args.pgd_start} if args.pgd_start != "random" else {})}


def run(args: argparse.Namespace) -> int:
    with speed_from_args(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from robustlens.robust import distributed

    _check(args)
    ctx = distributed.init(device_of(args))
    try:
        return _audit(args, ctx, _load(args, ctx))
    finally:
        distributed.shutdown(ctx)


def _open_journal(args: argparse.Namespace, settings: dict, ctx):
    from robustlens.robust import distributed
    from robustlens.robust.audit import Journal

    folder = Path(args.out) / "journal"
    if ctx.is_main:
        if not args.resume:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        journal = Journal.open(folder, settings, must_exist=args.resume)
    distributed.barrier(ctx)
    if not ctx.is_main:
        journal = Journal.open(folder, settings, must_exist=True)
    return journal


def _audit(args: argparse.Namespace, ctx, models: list[dict]) -> int:
    from robustlens.robust import distributed
    from robustlens.robust.audit import AuditPlan, audit_batches
    from robustlens.robust.audit.explain import explain_record

    settings = _settings(args, models)
    t0, load0 = time.perf_counter(), os.getloadavg()
    journal = _open_journal(args, settings, ctx)
    p = AuditPlan(norm=args.norm, eps=settings["eps"], batch_size=args.batch_size, seed=args.seed,
                  pgd_steps=args.pgd_steps, pgd_step_size=args.pgd_step_size, pgd_restarts=args.pgd_restarts,
                  pgd_start=args.pgd_start)
    progress = not args.no_progress and not args.json
    for k, m in enumerate(models):
        audit_batches(m["model"], m["dataset"], f"m{k}", journal, p, ctx=ctx, progress=progress, label=m["label"])
        if ctx.is_main and not args.no_explain and journal.get(f"m{k}/explain") is None:
            t1 = time.perf_counter()
            record = explain_record(m["model"], m["dataset"], images=settings["explain_images"],
                                    stages=settings["sanity_stages"], seed=args.seed)
            journal.put(f"m{k}/explain", {**record, "seconds": time.perf_counter() - t1})
    distributed.barrier(ctx)
    if not ctx.is_main:
        return 0
    run_info = {"wall_seconds": time.perf_counter() - t0, "units_computed": journal.written,
                "units_reused": journal.reused, "load_average_start": list(load0),
                "load_average_end": list(os.getloadavg()), "processes": ctx.world_size, "device": str(ctx.device),
                "cpu_count": os.cpu_count()}
    result = _result(args, settings, models, journal, p, ctx, run_info)
    _write(args, result)
    return 0


def _result(args, settings, models, journal, p, ctx, run_info) -> dict:
    import torch

    from robustlens.robust.audit import summarise

    manifest = {"command": ["robustlens", *sys.argv[1:]] if sys.argv[0].endswith(("robustlens", "__main__.py"))
                else None, "settings": settings, "attacks": [{"name": a, **s} for a, s in p.attacks],
                "seed_rule": "AutoAttack: seed + batch*1009 + eps_index, attack j: + 7919*j + first robust row; "
                             "PGD: seed + batch*1009 + eps_index", "threads": torch.get_num_threads(),
                "versions": {"torch": torch.__version__}}
    from robustlens._version import version as robustlens_version

    manifest["versions"]["robustlens"] = robustlens_version()
    out = {"kind": "robustlens audit", "norm": p.norm, "eps": p.eps, "interval": "Wilson score, 95%",
           "ece_bins": 15, "models": {}, "manifest": manifest, "run": run_info}
    for k, m in enumerate(models):
        ds = m["dataset"]
        examples = ds.sources if ds.paths is not None else \
            f"{len(ds)} of {args.data}: the (i*N//limit)-th example for i < limit (all when no --limit)"
        summary = summarise(journal, f"m{k}", ds, p, training=m["training"], manifest={"examples": examples})
        summary["explain"] = journal.read(f"m{k}/explain")
        out["models"][m["label"]] = {**m["describe"], "weights_file": m["weights"],
                                     "weights_sha256": m["weights_sha256"], **summary}
    return out


def _write(args: argparse.Namespace, result: dict) -> None:
    from robustlens.report.audit_page import write_page

    out = Path(args.out)
    write_page(result, out / "audit.html")
    write_json(result, out / "audit.json")
    lines = [f"audit of {len(result['models'])} model(s) on {args.data}, {args.norm} ε {', '.join(f'{e:g}' for e in result['eps'])}"]
    for label, m in result["models"].items():
        aa = ", ".join(f"ε={a['eps']:g} {a['robust']['accuracy']:.4f}" for a in m["autoattack"])
        lines.append(f"  {label}: clean {m['clean']['accuracy']:.4f}; AutoAttack {aa}; flags: "
                     + (", ".join(f["code"] for f in m["flags"]) or "none"))
    r = result["run"]
    lines.append(f"  {r['units_computed']} units computed, {r['units_reused']} reused from the journal; "
                 f"{r['wall_seconds']:.1f} s; audit.html and audit.json in {args.out}")
    emit(result, args, "\n".join(lines))
