"""Pieces every command shares: model/output/speed options, input loading, the output folder, JSON printing."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

from robustlens.checks import parse_number, positive
from robustlens.errors import UserError
from robustlens.images import load_pil
from robustlens.models import DEFAULT_MODEL, Classifier, create_model
from robustlens.models.preprocess import to_batch
from robustlens.optim import speed


def number(text: str) -> float:
    """argparse type: a finite float that may be written as a fraction (``8/255``)."""
    try:
        return parse_number(text, "value")
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_args(p: argparse.ArgumentParser, *, default_weights: str | None = None) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL}; see `robustlens models`)")
    g.add_argument("--weights", default=default_weights,
                   help="imagenet | none (random init) | PATH to a state dict (default: the model's own)")
    g.add_argument("--seed", type=int, default=0, help="seed for random init and random starts (default 0)")
    g.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")


def add_speed_args(p: argparse.ArgumentParser, *, early_stop: bool = False) -> None:
    """Speed options (see docs/performance.md); every speed setting that is on by default can be turned off.
    ``early_stop``: also offer ``--no-early-stop`` (for commands whose examples can stop at success)."""
    g = p.add_argument_group("speed")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: one per core)")
    g.add_argument("--precision", choices=speed.PRECISIONS, default="auto",
                   help="auto (default: bf16 autocast for model families measured safe, else fp32) | fp32 | bf16; "
                        "successes and final predictions are always checked in fp32")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the contiguous (NCHW) layout (default: channels-last for convolutional models)")
    g.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="run the model as it is (default: attacks run a private copy with BatchNorm folded into "
                        "the convolutions)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (default off: no gain measured on CPU)")
    if early_stop:
        g.add_argument("--no-early-stop", dest="early_stop", action="store_false",
                       help="run every step for every example (default: an example stops at its first success)")


def speed_settings(args: argparse.Namespace) -> speed.Speed:
    """The :class:`robustlens.optim.speed.Speed` the speed options ask for (defaults when a command has none)."""
    return speed.Speed(channels_last="auto" if getattr(args, "channels_last", True) else False,
                       precision=getattr(args, "precision", "auto"), compile=getattr(args, "compile", False),
                       fold_bn=getattr(args, "fold_bn", True))


@contextlib.contextmanager
def speed_from_args(args: argparse.Namespace):
    """Apply ``--threads`` and run the block with the speed settings of ``args``."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        speed.set_threads(args.threads)
    with speed.use(speed_settings(args)) as s:
        yield s


def add_optimisation_args(p: argparse.ArgumentParser, run, *, early_stop: bool = False) -> None:
    """The options every input-optimisation command shares (model, speed flags, ``--out``/``--json``), and
    ``run(args)`` set as the command, executed under the speed settings of ``args``."""
    add_model_args(p)
    add_speed_args(p, early_stop=early_stop)
    add_output_args(p)

    def run_with_speed(args: argparse.Namespace) -> int:
        with speed_from_args(args):
            return run(args)

    p.set_defaults(run=run_with_speed)


def add_output_args(p: argparse.ArgumentParser, *, out_default: str | None = None) -> None:
    p.add_argument("--out", default=out_default, help="folder for PNG figures and result.json")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def device_of(args: argparse.Namespace) -> torch.device:
    name = getattr(args, "device", "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or auto") from None


def load_model(args: argparse.Namespace) -> Classifier:
    model = create_model(args.model, args.weights, seed=args.seed)
    return model.to(device_of(args))


def load_inputs(paths: list[str], model: Classifier) -> torch.Tensor:
    """Read and preprocess every path (all checked before any work): (N, C, S, S) in [0, 1]."""
    return to_batch([load_pil(p) for p in paths], model.config, next(model.parameters()).device)


def prepare_out(out: str | None) -> Path | None:
    """Create the output folder (called only after every input has been checked)."""
    if out is None:
        return None
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"--out {p} exists and is not a folder")
    p.mkdir(parents=True, exist_ok=True)
    return p


def write_json(obj: dict, path: Path) -> Path:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


def emit(result: dict, args: argparse.Namespace, human: str) -> None:
    """Print ``result`` as JSON with ``--json``, else the human-readable text."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")


def progress_enabled(args: argparse.Namespace) -> bool:
    """tqdm bars only for a person watching a terminal."""
    return not getattr(args, "json", False) and sys.stderr.isatty()


def check_positive(name: str, value: int | float | None, *, allow_zero: bool = False) -> None:
    """A command's numeric option: see :func:`robustlens.checks.positive`."""
    positive(name, value, allow_zero=allow_zero)
