"""Is robustlens's PGD as strong as a textbook loop? The TRADES MNIST SmallCNN under L∞ PGD-40 (ε 0.3, step
0.01, random start), all 10 000 test digits, several seeds, three implementations on the same inputs:

- ``robustlens``: what ``robustlens evaluate --attack pgd --steps 40 --step-size 0.01`` runs
  (:func:`robustlens.robust.evaluate.evaluate_robustness`: batches of 100, early stop, each digit's best
  iterate);
- ``torchattacks``: ``torchattacks.PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=True)`` (the last
  iterate);
- ``textbook``: the loop written here — x + U(−ε, ε) clipped to [0, 1], 40 sign steps on the cross-entropy,
  each clipped to the ball and the box, the final iterate counted.

Every digit counts as robust when the attack's output is still classified correctly by the same float32
forward pass (for robustlens: every iterate it checked). Diagnosis rows (``--diagnose``) swap one ingredient
at a time: robustlens's engine with the textbook's start, the textbook loop with robustlens's start (uniform
on ball ∩ box), both from the clean image (no random start; deterministic, so run once, for the first seed),
and the loop of TRADES's ``pgd_attack_mnist.py`` as it is today: the textbook loop from x + U(−ε, ε) NOT
clipped to [0, 1], so its first gradient is taken outside the image box (its step, clipping and final-iterate
count are the textbook's). TRADES's README got its "FGSM-40 96.07%" entry on 2019-01-23, when that script
had no random start (``--random``, default true, was added on 2019-03-23): the published figure is the
"textbook, no random start" row's attack. The last row, ``robustlens --start input --restarts 2``, is
``evaluate --attack pgd --start input --restarts 2``: a first restart from the clean image, a second from a
random point, each digit broken if either breaks it.

With ``--json-out`` an existing file of the same model, weights and digit count keeps its other rows, so the
rows can be run in separate calls.

    PYTHONPATH=src python benchmarks/pgd_textbook.py [--limit N] [--seeds 0 1 2] [--diagnose]
        [--json-out docs/results/pgd_textbook_trades.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine, set_threads  # noqa: E402,I001  (before torch)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _shared import SHARED, require  # noqa: E402

from robustlens.models import create_model  # noqa: E402
from robustlens.optim.engine import optimize  # noqa: E402
from robustlens.recipes.attacks import criterion_for  # noqa: E402
from robustlens.optim.starts import AtTensor  # noqa: E402
from robustlens.optim.steps import SteepestStep  # noqa: E402
from robustlens.optim.threat import make_threat  # noqa: E402
from robustlens.robust.datasets import LabelledImages, load_mnist  # noqa: E402
from robustlens.robust.evaluate import evaluate_robustness  # noqa: E402

EPS, ALPHA, STEPS = 0.3, 0.01, 40


def textbook_start(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS).clamp(0, 1)


def unclipped_start(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS


def ball_box_start(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return make_threat("linf", EPS).random_start(x, gen)


def textbook(model, x, y, start: torch.Tensor) -> torch.Tensor:
    xa = start.clone()
    for _ in range(STEPS):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = xa.detach() + ALPHA * g.sign()
        xa = torch.min(torch.max(xa, x - EPS), x + EPS).clamp(0, 1)
    return xa


def engine_from(model, x, y, start: torch.Tensor) -> torch.Tensor:
    """robustlens's PGD (the engine with pgd()'s pieces) from a given start; early stop, best iterate."""
    crit = criterion_for(y, targeted=False)
    res = optimize(model, x, crit.objective("ce"), threat=make_threat("linf", EPS), steps=STEPS,
                   rule=SteepestStep(ALPHA), start=AtTensor(start), criterion=crit, early_stop=True,
                   progress=False, history=False, desc="pgd")
    return res.x


# robustlens with a first restart from the clean image and a second from a random point (evaluate --start input
# --restarts 2): twice the work of one run
BOTH_STARTS = "robustlens --start input --restarts 2"


def robust_count(model, x, y, attack, seed: int, batch_size: int) -> int:
    alive = 0
    for b, s in enumerate(range(0, len(y), batch_size)):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        gen = torch.Generator().manual_seed(seed * 100003 + b)
        adv = attack(model, xb, yb, gen, seed * 100003 + b)
        with torch.no_grad():
            alive += int((model(adv).argmax(1) == yb).sum())
    return alive


def torchattacks_attack(model, x, y, gen, seed):
    import torchattacks

    torch.manual_seed(seed)
    return torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)(x, y)


ATTACKS = {
    "torchattacks": torchattacks_attack,
    "textbook": lambda m, x, y, gen, seed: textbook(m, x, y, textbook_start(x, gen)),
}
DIAGNOSIS = {
    "textbook, no random start": lambda m, x, y, gen, seed: textbook(m, x, y, x.clone()),
    "robustlens engine, no random start": lambda m, x, y, gen, seed: engine_from(m, x, y, x.clone()),
    "TRADES's loop (start not clipped to the box)": lambda m, x, y, gen, seed: textbook(m, x, y, unclipped_start(x, gen)),
    "robustlens engine, textbook start": lambda m, x, y, gen, seed: engine_from(m, x, y, textbook_start(x, gen)),
    "textbook, robustlens start": lambda m, x, y, gen, seed: textbook(m, x, y, ball_box_start(x, gen)),
}
DETERMINISTIC = {"textbook, no random start", "robustlens engine, no random start"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(SHARED / "models" / "trades_mnist_smallcnn.pt"))
    p.add_argument("--model", default="mnist_smallcnn")
    p.add_argument("--limit", type=int)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--diagnose", action="store_true")
    p.add_argument("--only", nargs="+", help="run only these rows")
    p.add_argument("--json-out")
    args = p.parse_args()
    set_threads(args.threads)
    model = create_model(args.model, str(require(Path(args.weights)))).eval()
    x, y = load_mnist(require(SHARED / "data" / "mnist"))
    x = x[:, None].float() / 255  # (N, 1, 28, 28) in [0, 1]
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    with torch.no_grad():
        clean = int(sum(int((model(x[s:s + 500]).argmax(1) == y[s:s + 500]).sum()) for s in range(0, len(y), 500)))
    print(f"{args.model} on {len(y)} digits: clean {clean / len(y):.4f}", flush=True)
    ds = LabelledImages(model.config, y.tolist(), pixels=(x * 255).round().to(torch.uint8), description="mnist")
    rows: dict[str, dict] = {}
    if args.json_out and Path(args.json_out).exists():
        before = json.loads(Path(args.json_out).read_text())
        if (before["model"], before["weights"], before["n"]) == (args.model, args.weights, len(y)):
            rows = before["rows"]
    cases = ["robustlens", *ATTACKS] + (list(DIAGNOSIS) if args.diagnose else []) + [BOTH_STARTS]
    for name in args.only or cases:
        rows.setdefault(name, {})
        for seed in args.seeds[:1] if name in DETERMINISTIC else args.seeds:
            t0 = time.perf_counter()
            if name in ("robustlens", BOTH_STARTS):
                both = name == BOTH_STARTS
                r = evaluate_robustness(model, ds, norm="linf", eps=[EPS], steps=STEPS, step_size=ALPHA,
                                        batch_size=args.batch_size, seed=seed, start="input" if both else "random",
                                        restarts=2 if both else 1)
                count = r.robust_correct[0]
            else:
                count = robust_count(model, x, y, {**ATTACKS, **DIAGNOSIS}[name], seed, args.batch_size)
            rows[name][str(seed)] = {"robust": count / len(y), "count": count,
                                     "seconds": round(time.perf_counter() - t0, 1),
                                     "load_at_end": [round(v, 2) for v in os.getloadavg()]}
            print(f"{name:<36} seed {seed}: robust {count / len(y):.4f} ({count}) "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            if args.json_out:  # after every run, so a cut-short benchmark keeps what it measured
                Path(args.json_out).write_text(json.dumps(
                    {"machine": machine(), "model": args.model, "weights": args.weights, "n": len(y),
                     "clean": clean / len(y), "eps": EPS, "alpha": ALPHA, "steps": STEPS, "rows": rows},
                    indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
