"""Cross-check: robustlens' CIFAR-10 architectures for published RobustBench checkpoints against RobustBench's own
definitions, on the same random weights (random BN statistics too): state-dict keys must be identical and the
logits equal up to float32 rounding.

    python benchmarks/robustbench_archs.py --robustbench PATH/TO/robustbench   # a checkout (git clone)

Only the two architecture files are imported (``model_zoo/architectures/resnet.py`` and ``wide_resnet.py``;
they need only torch). Prints one line per architecture and a JSON summary; exit 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

from robustlens.models import create_model


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise_bn(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--robustbench", required=True, type=Path, help="a RobustBench checkout")
    args = ap.parse_args()
    arch = args.robustbench / "robustbench" / "model_zoo" / "architectures"
    resnet, wrn = _load(arch / "resnet.py", "rb_resnet"), _load(arch / "wide_resnet.py", "rb_wide_resnet")
    torch.manual_seed(0)
    pairs = {"cifar_preactresnet18_rb (Wong2020Fast)": (resnet.PreActResNet(resnet.PreActBlock, [2, 2, 2, 2]),
                                                        "cifar_preactresnet18_rb"),
             "cifar_wrn28_10 (Carmon2019Unlabeled)": (wrn.WideResNet(depth=28, widen_factor=10, sub_block1=True),
                                                     "cifar_wrn28_10")}
    rows, ok = [], True
    x = torch.rand(8, 3, 32, 32)
    for label, (ref, name) in pairs.items():
        ref.eval()
        _randomise_bn(ref)
        ours = create_model(name, "none").net.eval()
        key_diff = sorted(set(ref.state_dict()) ^ set(ours.state_dict()))
        diff = None
        if not key_diff:
            ours.load_state_dict(ref.state_dict())
            with torch.no_grad():
                a, b = ref(x), ours(x)
            diff = float((a - b).abs().max() / a.abs().max())
        good = not key_diff and diff is not None and diff < 1e-5
        ok &= good
        rows.append({"architecture": label, "key_differences": key_diff, "max_rel_logit_diff": diff, "ok": good})
        print(f"{label:<42} keys {'identical' if not key_diff else key_diff[:4]}, max relative logit difference "
              f"{diff if diff is not None else float('nan'):.2e}  {'ok' if good else 'MISMATCH'}")
    print(json.dumps({"robustbench_archs": rows, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
