"""`robustlens layers`: named layers with output shapes; `robustlens layers check`: reference-layer gradient checks."""

from __future__ import annotations

import argparse

from robustlens.checks import count
from robustlens.cli.common import add_model_args, emit, load_model
from robustlens.images import check_size
from robustlens.models.layers import last_linear, layer_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "layers", help="list a model's layers, or check the reference layers' gradients",
        description="`robustlens layers --model resnet50 --weights none` prints every named module with its output "
                    "shape. `robustlens layers check` runs the from-scratch convolution/pooling gradient checks.")
    p.add_argument("action", nargs="?", choices=["list", "check"], default="list")
    add_model_args(p, default_weights="none")
    p.add_argument("--size", type=int, default=None, help="input size (default: the model's, e.g. 224)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "check":
        from robustlens.reference.gradcheck import format_checks, run_checks

        result = run_checks(seed=args.seed)
        emit(result, args, format_checks(result))
        return 0 if result["passed"] else 1
    if args.size is not None:
        count("--size", args.size)
        check_size((args.size, args.size), "--size")
    model = load_model(args).cpu()
    rows = layer_table(model, args.size)
    head_name, head = last_linear(model)
    size = args.size or model.config.input_size
    result = {"model": model.name, "weights": model.weights, "input_size": size, "layers": rows,
              "last_layer": head_name, "last_layer_in_features": head.in_features}
    width = max(len(r["name"]) for r in rows)
    lines = [f"{model.name} ({model.weights}), input 1x{model.config.channels}x{size}x{size}"]
    lines += [f"{r['name']:<{width}}  {r['type']:<22} {str(tuple(r['output_shape'])) if r['output_shape'] else '-':<20}"
              f" {r['params']:>10,}" for r in rows]
    lines.append(f"last layer {head_name}: {head.in_features} input features -> {head.out_features} outputs")
    emit(result, args, "\n".join(lines))
    return 0
