"""The advertorch MNIST LeNet-5 checkpoints under PGD-40 (L∞ ε = 0.3, step 0.01): robustlens against
torchattacks on the same digits, with and without random start, next to the figures the checkpoints'
publisher printed for them.

Independent references for `benchmarks/mnist_robustness.py`:

- torchattacks' ``PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=...)`` on the same MNIST test digits,
  checked by the same float32 forward pass (robust = still the true label after the attack);
- the advertorch benchmark file ``advertorch_examples/attack_benchmarks/benchmark_iterative_projected_gradient.py``
  (advertorch 0.1.5, ``LinfPGDAttack(eps=0.3, nb_iter=40, eps_iter=0.01, rand_init=False)`` on the full
  MNIST test set), which prints accuracy 98.89 % / 98.64 % and attack success rate 100 % / 6.8 % (success
  = adversarial prediction != label, over all digits), i.e. robust accuracy 0.0 % / 93.2 %.

robustlens counts an example as broken if ANY iterate fools the model (it keeps the best iterate);
torchattacks and advertorch check only the last one, so robustlens' robust accuracy can only be lower or
equal for the same start. Every library gets one random start per digit (different random draws).

    python benchmarks/mnist_crosscheck.py [--limit N] [--models advtrained clntrained] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgd_vs_torchattacks  # noqa: E402  (the same torchattacks call as the NIPS-17 cross-check)
import torch  # noqa: E402
from _shared import SHARED, require  # noqa: E402

from robustlens.models import create_model  # noqa: E402
from robustlens.recipes.attacks import pgd  # noqa: E402
from robustlens.robust.datasets import load_mnist  # noqa: E402

EPS, ALPHA, STEPS = 0.3, 0.01, 40
# advertorch's printed figures for these two files (full test set, no random start): robust = 1 - success rate
PUBLISHED = {"clntrained": {"clean_accuracy": 0.9889, "robust_accuracy_no_random_start": 0.0},
             "advtrained": {"clean_accuracy": 0.9864, "robust_accuracy_no_random_start": 1 - 0.068}}


def run_robustlens(model, x, y, random_start: bool, seed: int) -> torch.Tensor:
    return pgd(model, x, y, norm="linf", eps=EPS, step_size=ALPHA, steps=STEPS, random_start=random_start,
               early_stop=True, seed=seed)


def run_torchattacks(model, x, y, random_start: bool, seed: int) -> torch.Tensor:
    return pgd_vs_torchattacks.run_torchattacks(model, x, y, targeted=False, eps=EPS, alpha=ALPHA, steps=STEPS,
                                                seed=seed, random_start=random_start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, help="the first N test digits (default: all 10000)")
    ap.add_argument("--models", nargs="+", choices=list(PUBLISHED), default=["advtrained", "clntrained"])
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks

    images, labels = load_mnist(require(SHARED / "data" / "mnist"))
    images = images[:, None].float() / 255
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    out = {"digits": len(labels), "eps": EPS, "step_size": ALPHA, "steps": STEPS, "torch": torch.__version__,
           "torchattacks": torchattacks.__version__, "published_by_advertorch": PUBLISHED, "models": {}}
    for kind in args.models:
        model = create_model("mnist_lenet5", weights=str(require(SHARED / "models" / f"advertorch_mnist_lenet5_{kind}.pt")))
        with torch.inference_mode():
            clean = sum(int((model(images[i:i + 1000]).argmax(1) == labels[i:i + 1000]).sum())
                        for i in range(0, len(labels), 1000))
        row = {"clean_correct": clean, "clean_accuracy": clean / len(labels)}
        for random_start in (True, False):
            for name, fn in (("robustlens", run_robustlens), ("torchattacks", run_torchattacks)):
                robust, t0 = 0, time.perf_counter()
                for b, i in enumerate(range(0, len(labels), args.batch_size)):
                    x, y = images[i:i + args.batch_size], labels[i:i + args.batch_size]
                    adv = fn(model, x, y, random_start, seed=b)
                    assert float((adv - x).abs().max()) <= EPS + 1e-6 and 0 <= float(adv.min()) <= float(adv.max()) <= 1
                    with torch.inference_mode():
                        robust += int((model(adv).argmax(1) == y).sum())
                key = f"{name}, {'random start' if random_start else 'no random start'}"
                row[key] = {"robust_correct": robust, "robust_accuracy": robust / len(labels),
                            "seconds": round(time.perf_counter() - t0, 1)}
                print(f"{kind:<11} {key:<35} robust {robust / len(labels):.4f} ({robust}/{len(labels)}), "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)
        pub = PUBLISHED[kind]
        print(f"{kind:<11} clean {row['clean_accuracy']:.4f} (advertorch printed {pub['clean_accuracy']:.4f}); "
              f"advertorch's printed robust accuracy without random start: {pub['robust_accuracy_no_random_start']:.3f}",
              flush=True)
        out["models"][kind] = row
    print(json.dumps(out))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
