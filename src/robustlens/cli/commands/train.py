"""`robustlens train`: standard or adversarial training / robust fine-tuning, with resumable checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from robustlens.checks import count
from robustlens.cli.common import (
    add_model_args,
    device_of,
    emit,
    number,
    prepare_out,
    write_json,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="adversarial training / robust fine-tuning of a zoo model",
        description="Train a zoo model (from random init, or fine-tune from --weights) on --data, with standard "
                    "training, PGD adversarial training, fast AT (FGSM with random start) or TRADES. Writes "
                    "OUT/checkpoint.safetensors (resume with --resume), OUT/metrics.jsonl and at the end "
                    "OUT/model.safetensors (load it with --weights). Runs under torchrun (DDP).")
    add_model_args(p)
    p.add_argument("--data", required=True, help="training data: folder:PATH, nips17:PATH, list:FILE or mnist:PATH")
    p.add_argument("--val-data", help="validation data (clean accuracy after each epoch)")
    p.add_argument("--val-robust", type=int, default=0, metavar="N",
                   help="also PGD-10 robust accuracy at the training eps on N validation images (default 0)")
    p.add_argument("--limit", type=int, help="use this many training examples (spread over the dataset)")
    p.add_argument("--input-size", type=int, metavar="PX",
                   help="train at this image size instead of the model's own (progressive resizing: a first run "
                        "at a smaller size, then --weights OUT/model.safetensors at the full size)")
    p.add_argument("--val-limit", type=int, help="use this many validation examples")
    g = p.add_argument_group("method")
    g.add_argument("--method", default="standard", choices=["standard", "pgd", "fast", "trades"],
                   help="standard | pgd (PGD-AT) | fast (FGSM + random start) | trades (default standard)")
    g.add_argument("--norm", default="linf", choices=["linf", "l2"], help="threat model (default linf)")
    g.add_argument("--eps", type=number, default=0.0, help="radius in [0,1] pixel units, e.g. 8/255 or 1.0")
    g.add_argument("--steps", type=int, default=7, help="attack steps for pgd/trades (default 7)")
    g.add_argument("--step-size", type=number, help="attack step (default 2.5*eps/steps; fast: 1.25*eps)")
    g.add_argument("--trades-beta", type=number, default=6.0, help="TRADES trade-off (default 6)")
    g.add_argument("--eps-ramp", type=number, default=0.0, help="fraction of training over which eps grows from 0")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=128, help="global batch size (default 128)")
    g.add_argument("--lr", type=number, default=0.1, help="peak learning rate, SGD with Nesterov momentum")
    g.add_argument("--momentum", type=number, default=0.9)
    g.add_argument("--weight-decay", type=number, default=5e-4)
    g.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "constant"])
    g.add_argument("--warmup", type=number, default=0.2, help="onecycle warm-up fraction (default 0.2)")
    g.add_argument("--crop-padding", type=int, default=0, help="random-crop padding in pixels (default 0: none)")
    g.add_argument("--flip", action="store_true", help="random horizontal flips")
    g.add_argument("--ema", type=number, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999; default 0: none); "
                        "validation and the final weights use it")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding images (default 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS steps (default: at each epoch's end only)")
    p.add_argument("--log-every", type=int, default=50, metavar="STEPS", help="metrics line every STEPS steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors if present "
                   "(else from --snapshot if that exists)")
    p.add_argument("--snapshot", metavar="FILE",
                   help="keep a compact copy of every checkpoint here (half the size: float16 weights, bfloat16 "
                        "optimiser buffers, with metrics.jsonl beside it) to commit and resume on another machine")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="compute precision: auto (default) = bf16 autocast where the CPU/GPU has native bf16 "
                        "(AVX512-BF16/AMX, Ampere+), else fp32")
    p.add_argument("--out", required=True, help="folder for checkpoints, metrics.jsonl, model.safetensors")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _check_counts(args: argparse.Namespace) -> None:
    for name, minimum in (("limit", 1), ("input_size", 8), ("val_limit", 1), ("val_robust", 0), ("workers", 0), ("threads", 1),
                          ("checkpoint_every", 0), ("log_every", 1), ("crop_padding", 0)):
        count(f"--{name.replace('_', '-')}", getattr(args, name), minimum=minimum)


def run(args: argparse.Namespace) -> int:
    import torch

    from robustlens.models import create_model
    from robustlens.robust import distributed
    from robustlens.robust.datasets import open_dataset, parse_data_spec, preload
    from robustlens.robust.training import TrainConfig, train

    _check_counts(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(method=args.method, norm=args.norm, eps=args.eps, steps=args.steps, step_size=args.step_size,
                      trades_beta=args.trades_beta, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                      warmup=args.warmup, eps_ramp=args.eps_ramp, crop_padding=args.crop_padding, flip=args.flip,
                      seed=args.seed, precision=args.precision, ema=args.ema)
    data = parse_data_spec(args.data)
    val_spec = parse_data_spec(args.val_data) if args.val_data else None
    ctx = distributed.init(device_of(args))
    try:
        model = create_model(args.model, args.weights, seed=args.seed)
        if args.input_size:
            model.config = dataclasses.replace(model.config, input_size=args.input_size,
                                               resize_size=max(args.input_size, round(args.input_size
                                                               * model.config.resize_size / model.config.input_size)))
        train_set = open_dataset(data, model, limit=args.limit)
        val_set = open_dataset(val_spec, model, limit=args.val_limit) if val_spec else None
        if ctx.is_main:
            prepare_out(args.out, staged=False)
        distributed.barrier(ctx)
        out = Path(args.out)
        show = not args.no_progress and ctx.is_main
        images, labels = preload(train_set, workers=args.workers, progress=show)
        val = preload(val_set, workers=args.workers, progress=show) if val_set is not None else None
        options = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
        result = train(model, images, labels, cfg, out=out, val=val, val_robust=args.val_robust, resume=args.resume,
                       checkpoint_every=args.checkpoint_every, log_every=args.log_every, ctx=ctx, progress=show,
                       snapshot=Path(args.snapshot) if args.snapshot else None,
                       extra_metadata={"data": str(data), "val_data": str(val_spec) if val_spec else None,
                                       "weights_start": model.weights, "options": options})
        summary = {"model": model.name, "out": str(out), "steps": result.steps, "epochs": result.epochs,
                   "resumed_from_step": result.resumed_from, "seconds": round(result.seconds, 2),
                   "final_metrics": result.final, "train_config": cfg.to_dict(),
                   "model_path": str(result.model_path) if result.model_path else None,
                   "processes": ctx.world_size}
        if ctx.is_main:
            write_json(summary, out / "result.json")
            fm = result.final
            human = (f"{model.name}: {result.steps} steps ({cfg.method}) in {result.seconds:.0f}s; "
                     + ", ".join(f"{k} {v:.4f}" for k, v in fm.items() if k.endswith("accuracy"))
                     + f"\nweights: {result.model_path}")
            emit(summary, args, human)
    finally:
        distributed.shutdown(ctx)
    return 0
