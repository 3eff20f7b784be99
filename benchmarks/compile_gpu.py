"""Does ``torch.compile`` (CUDA graphs on a GPU) pay for PGD? ResNet-50, targeted L∞ PGD on NIPS-17 images.

Side by side in one process, interleaved rounds, median reported (seconds per image-iteration):
robustlens eager (the defaults), robustlens with ``Speed(compile=True)`` (``mode="reduce-overhead"`` on CUDA:
CUDA graphs), robustlens in float32 (on a GPU: cuDNN's TF32 convolutions), and torchattacks' PGD for
reference. The first compiled call (compilation and graph capture included) is timed on its own.
ResNet-50 has random weights (speed only); no early stop, so every call does the same work.

    python benchmarks/compile_gpu.py --device cuda [--images 128] [--steps 10] [--repeats 5] [--json-out F]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, machine, median, say, table, timed, write_json  # noqa: E402,I001  (before torch)

import torch  # noqa: E402
from pgd_vs_peers import load_images  # noqa: E402

from robustlens.optim import speed  # noqa: E402
from robustlens.recipes.attacks import pgd  # noqa: E402
from robustlens.models import create_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    sync = torch.device(args.device).type == "cuda"
    model = create_model(args.model, "none").eval().to(args.device)
    x, _, targets = (t.to(args.device) for t in load_images(model, args.images))
    eps, steps = 16 / 255, args.steps
    alpha = 2.5 * eps / steps

    def ours(settings):
        def run():
            with speed.use(settings):
                return pgd(model, x, targets, eps=eps, step_size=alpha, steps=steps, targeted=True,
                           random_start=False, early_stop=False)
        return run

    def theirs():
        import torchattacks

        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        atk.set_mode_targeted_by_label(quiet=True)
        return atk(x, targets)

    compiled = speed.Speed(compile=True)
    t0 = time.perf_counter()
    first, _ = timed(ours(compiled), sync=sync)
    say(f"first compiled call (compilation and capture included): {first:.1f} s")
    cases = {"robustlens (defaults)": ours(speed.FAST), "robustlens + compile": ours(compiled),
             "robustlens, fp32": ours(speed.Speed(precision="fp32")), "torchattacks": theirs}
    times, outs = interleaved(cases, repeats=args.repeats, warmup=1, sync=sync)
    work = args.images * steps
    base = median(times["robustlens (defaults)"])
    rows = [{"config": k, "s_per_image_iter": median(v) / work, "image_iters_per_s": work / median(v),
             "vs_defaults": base / median(v), "times_s": [round(t, 4) for t in v]} for k, v in times.items()]
    diff = float((outs["robustlens (defaults)"] - outs["robustlens + compile"]).abs().max())
    say(table(rows, [("config", "config", ""), ("image_iters_per_s", "image-iters/s", ".0f"),
                     ("vs_defaults", "vs defaults", ".2f")]))
    say(f"max |defaults − compiled| on the returned images: {diff:.2e}")
    write_json({"benchmark": "compile_gpu", "machine": machine(), "device": args.device, "model": args.model,
                "images": args.images, "steps": steps, "first_compiled_call_s": first, "rows": rows,
                "max_abs_difference_defaults_vs_compiled": diff, "seconds": round(time.perf_counter() - t0, 1)},
               args.json_out)


if __name__ == "__main__":
    main()
