"""Throughput of the other input-optimisation workloads, with the default speed settings vs all of them off.

- inversion (``robustlens.invert``): EfficientNet-Lite0, the Corgi photo, several layers in one batch;
  iterations per second (an iteration = one Adam step of the whole batch) and layer-iterations per second;
- DeepDream (``robustlens.recipes.dream``): EfficientNet-Lite0, the Corgi photo, one layer, two octaves;
  iterations per second;
- robust evaluation (``robustlens.robust.evaluate.evaluate_robustness``): the adversarially trained MNIST LeNet-5,
  PGD-40 L∞ ε=0.3, step 0.01, random start; images per second. Evaluation asks only "did any iterate
  succeed", so it could stop each example at its first success: the same PGD with and without early stop
  (``robustlens.recipes.attacks.pgd``) is timed on the standard and the adversarially trained LeNet-5, with the
  robust accuracy each gives (it must not change).

- ``compile`` (only when asked: ``--tasks compile``; compiling takes minutes here): 5-step targeted PGD on
  EfficientNet-Lite0 with and without ``torch.compile``; the first compiled call (compilation included) and
  the median of later calls.

Configurations: ``default`` (``robustlens.optim.speed.FAST``: channels-last auto, precision auto) and ``plain``
(``robustlens.optim.speed.PLAIN``: channels-last off, fp32), interleaved, median of ``--repeats``.

    python benchmarks/throughput.py [--quick] [--json] [--json-out FILE] [--tasks inversion dream evaluation]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, machine, median, say, set_threads, table, write_json  # noqa: E402,I001  (before torch)

import torch  # noqa: E402
from _shared import SHARED, require  # noqa: E402

from robustlens.optim import speed  # noqa: E402
from robustlens.images import load_pil  # noqa: E402
from robustlens.models.preprocess import preprocess  # noqa: E402
from robustlens.models import create_model  # noqa: E402

TASKS = ("inversion", "dream", "evaluation", "compile")
DEFAULT_TASKS = ("inversion", "dream", "evaluation")
CONFIGS = {"default": speed.FAST, "plain": speed.PLAIN}


def _under(cfg: speed.Speed, fn):
    def run():
        with speed.use(cfg):
            return fn()
    return run


def _rows(task: str, times: dict, work: float, unit: str, extra: dict | None = None) -> list[dict]:
    rows = []
    for name, ts in times.items():
        rows.append({"task": task, "config": name, "median_s": median(ts), "rate": work / median(ts), "unit": unit,
                     "times_s": [round(t, 3) for t in ts], **(extra or {}).get(name, {})})
    return rows


def bench_inversion(args, log) -> list[dict]:
    from robustlens.recipes.inversion import invert

    model = create_model().eval()
    x = preprocess(load_pil(require(SHARED / "data" / "images" / "corgi.jpg")), model.config)
    layers = ["_blocks.2", "_blocks.7", "_blocks.12"]
    cases = {n: _under(c, lambda: invert(model, x, layers, steps=args.inv_steps, progress=False))
             for n, c in CONFIGS.items()}
    times, outs = interleaved(cases, repeats=args.repeats, warmup=args.warmup, log=log)
    extra = {n: {"final_distance": [round(float(d), 4) for d in o.distance]} for n, o in outs.items()}
    rows = _rows("inversion", times, args.inv_steps, "iterations/s", extra)
    for r in rows:
        r["layer_iterations_per_s"] = r["rate"] * len(layers)
        r["detail"] = f"{len(layers)} layers in one batch, {args.inv_steps} Adam steps"
    return rows


def bench_dream(args, log) -> list[dict]:
    from robustlens.recipes.dream import dream

    model = create_model().eval()
    x = preprocess(load_pil(require(SHARED / "data" / "images" / "corgi.jpg")), model.config)
    octaves = 2
    cases = {n: _under(c, lambda: dream(model, x, "_blocks.10", octaves=octaves, steps=args.dream_steps,
                                        progress=False)) for n, c in CONFIGS.items()}
    times, _ = interleaved(cases, repeats=args.repeats, warmup=args.warmup, log=log)
    rows = _rows("dream", times, octaves * args.dream_steps, "iterations/s")
    for r in rows:
        r["detail"] = f"layer _blocks.10, {octaves} octaves x {args.dream_steps} steps"
    return rows


def bench_evaluation(args, log) -> list[dict]:
    from robustlens.recipes.attacks import pgd
    from robustlens.robust.datasets import open_dataset
    from robustlens.robust.evaluate import evaluate_robustness

    mnist = require(SHARED / "data" / "mnist")
    models = {tag: create_model("mnist_lenet5", str(require(SHARED / "models" / f"advertorch_mnist_lenet5_{tag}.pt"))).eval()
              for tag in ("clntrained", "advtrained")}
    eps, step, steps = 0.3, 0.01, 40
    rows = []
    data = open_dataset(f"mnist:{mnist}", models["advtrained"], limit=args.eval_images)
    cases = {n: _under(c, lambda: evaluate_robustness(models["advtrained"], data, eps=(eps,), steps=steps,
                                                      step_size=step, batch_size=args.eval_batch))
             for n, c in CONFIGS.items()}
    times, outs = interleaved(cases, repeats=args.repeats, warmup=args.warmup, log=log)
    extra = {n: {"robust_accuracy": o.robust_accuracy[eps], "clean_accuracy": o.clean_accuracy} for n, o in outs.items()}
    for r in _rows("evaluation (evaluate_robustness)", times, len(data), "images/s", extra):
        r["detail"] = f"advtrained LeNet-5, {len(data)} images, PGD-{steps} eps {eps}, batch {args.eval_batch}"
        rows.append(r)

    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.as_tensor([int(data[i][1]) for i in range(len(data))])
    for tag, model in models.items():
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        xs, ys = x[ok], y[ok]

        def attack(es: bool, model=model, xs=xs, ys=ys):
            advs = [pgd(model, xs[s:s + args.eval_batch], ys[s:s + args.eval_batch], eps=eps, step_size=step,
                        steps=steps, random_start=True, early_stop=es, seed=s)
                    for s in range(0, len(ys), args.eval_batch)]
            with torch.no_grad():
                return float((model(torch.cat(advs)).argmax(1) == ys).float().sum()) / len(y)

        cases = {"early stop": lambda: attack(True), "no early stop": lambda: attack(False)}
        times, outs = interleaved(cases, repeats=args.repeats, warmup=args.warmup, log=log)
        for r in _rows(f"PGD-{steps} on {tag} LeNet-5", times, len(y), "images/s",
                       {n: {"robust_accuracy": v} for n, v in outs.items()}):
            r["detail"] = f"{len(y)} images ({int(ok.sum())} clean-correct attacked), batch {args.eval_batch}"
            rows.append(r)
    return rows


def bench_compile(args, log) -> list[dict]:
    from _shared import nips17_rows
    from _timing import timed

    from robustlens.recipes.attacks import pgd

    model = create_model().eval()
    rows = nips17_rows(limit=4)
    x = torch.stack([preprocess(load_pil(p), model.config) for p, _, _ in rows])
    t = torch.tensor([r[2] for r in rows])
    steps = 5

    def run():
        return pgd(model, x, t, eps=16 / 255, step_size=2.5 * 16 / 255 / steps, steps=steps, targeted=True,
                   random_start=False)

    compiled = speed.Speed(compile=True)
    first, _ = timed(_under(compiled, run))
    log(f"  first compiled call (compilation included): {first:.1f} s")
    times, outs = interleaved({"default": _under(speed.FAST, run), "default + compile": _under(compiled, run)},
                              repeats=args.repeats, warmup=0, log=log)
    same = float((outs["default"] - outs["default + compile"]).abs().max())
    rows = _rows("PGD, EfficientNet-Lite0", times, len(t) * steps, "image-iterations/s")
    for r in rows:
        r["detail"] = f"4 images, {steps} steps; first compiled call {first:.0f} s; max |difference| {same:.1e}"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--inv-steps", type=int, default=20)
    ap.add_argument("--dream-steps", type=int, default=10)
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--eval-batch", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer steps and images")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables go to stderr)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.inv_steps, args.dream_steps, args.eval_images, args.repeats = 5, 3, 200, 3
    warnings.filterwarnings("ignore", category=UserWarning)
    quiet = args.json
    set_threads(args.threads)
    t0 = time.perf_counter()
    result = {"benchmark": "throughput", "machine": machine(), "configs": {n: c.to_dict() for n, c in CONFIGS.items()},
              "rows": []}
    bench = {"inversion": bench_inversion, "dream": bench_dream, "evaluation": bench_evaluation,
             "compile": bench_compile}
    for task in args.tasks:
        say(f"{task}:", quiet=quiet)
        rows = bench[task](args, lambda s: say(s, quiet=quiet))
        result["rows"] += rows
        say(table(rows, [("task", "task", ""), ("config", "config", ""), ("rate", "rate", ".2f"), ("unit", "unit", ""),
                         ("median_s", "median s", ".2f"), ("robust_accuracy", "robust acc", ".3f"),
                         ("detail", "detail", "")]), quiet=quiet)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result))
    write_json(result, args.json_out)


if __name__ == "__main__":
    main()
