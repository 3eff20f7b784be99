"""Pieces every command shares: model/output/speed options, input loading, the output folder, JSON printing.

Outputs are atomic: :func:`prepare_out` returns a staging folder beside ``--out``; :func:`finish_outputs`
(called by the CLI's ``main`` when the command returns) moves it into place, or removes it when the command
failed, so an interrupted or failed run leaves neither a half-written folder nor a stale ``result.json``.
JSON is strict (RFC 8259): non-finite floats become ``null``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import torch

from robustlens.checks import parse_number, positive
from robustlens.errors import UserError
from robustlens.images import load_pil, parse_max_pixels
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
    add_max_pixels_arg(p)


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


@dataclass
class _Staged:
    """A staging folder and the ``--out`` folder it becomes."""

    staging: Path
    final: Path


_STAGED: list[_Staged] = []
_RESULT_FILES = ("result.json", "report.json")  # written last, removed first: never stale beside new files


def _existing_ancestor(p: Path) -> Path:
    """The nearest folder above (or at) ``p`` that exists; a file in the way is a UserError."""
    q = p.absolute()
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise UserError(f"cannot write --out {p}: {q} is a file, not a folder")
    return q


@overload
def prepare_out(out: str | Path, *, staged: bool = True) -> Path: ...
@overload
def prepare_out(out: None, *, staged: bool = True) -> None: ...


def prepare_out(out: str | Path | None, *, staged: bool = True) -> Path | None:
    """The folder a command writes into (call it after every input has been checked).

    ``staged`` (default): a new hidden folder beside ``--out``, moved into place by :func:`finish_outputs`
    when the command succeeds. ``staged=False`` (training, which resumes from its own checkpoints): ``--out``
    itself, created now. An unwritable destination is a UserError and leaves nothing behind."""
    if out is None:
        return None
    final = Path(out)
    if final.exists() and not final.is_dir():
        raise UserError(f"--out {final} exists and is not a folder")
    base = _existing_ancestor(final)
    if not os.access(base, os.W_OK | os.X_OK) or (final.exists() and not os.access(final, os.W_OK | os.X_OK)):
        raise UserError(f"cannot write --out {final}: permission denied")
    try:
        if not staged:
            final.mkdir(parents=True, exist_ok=True)
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name or 'out'}.partial-", dir=base))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    except OSError as e:
        raise UserError(f"cannot write --out {final}: {e.strerror or e}") from None
    _STAGED.append(_Staged(staging, final))
    return staging


def _publish(s: _Staged) -> None:
    """Move a finished staging folder into place: a rename when ``--out`` is new, else file by file into the
    existing folder (its other files are kept), the result files last."""
    if not s.final.exists():
        s.final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(s.staging, s.final)
            return
        except OSError:  # another filesystem or a race: fall back to moving file by file
            s.final.mkdir(parents=True, exist_ok=True)
    for name in _RESULT_FILES:
        (s.final / name).unlink(missing_ok=True)
    entries = sorted(s.staging.iterdir(), key=lambda e: e.name in _RESULT_FILES)
    for entry in entries:
        target = s.final / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    shutil.rmtree(s.staging, ignore_errors=True)


def finish_outputs(ok: bool) -> None:
    """Publish (``ok``) or remove every staging folder of this process; a failed move is a UserError."""
    while _STAGED:
        s = _STAGED.pop()
        if not ok:
            shutil.rmtree(s.staging, ignore_errors=True)
            continue
        try:
            _publish(s)
        except OSError as e:
            shutil.rmtree(s.staging, ignore_errors=True)
            raise UserError(f"cannot write --out {s.final}: {e.strerror or e}") from None


def final_path(path: Path) -> Path:
    """Where a file written under a staging folder will be once it is published (other paths unchanged)."""
    for s in _STAGED:
        if path == s.staging or s.staging in path.parents:
            return s.final / path.relative_to(s.staging)
    return path


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None (recursively through dicts, lists, tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj, *, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259): NaN and infinities become null; anything else non-finite raises."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(obj: dict, path: Path) -> Path:
    """Write ``obj`` as strict JSON, atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def emit(result: dict, args: argparse.Namespace, human: str) -> None:
    """Print ``result`` as strict JSON with ``--json``, else the human-readable text."""
    if getattr(args, "json", False):
        sys.stdout.write(dumps(result) + "\n")
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")


def warn(text: str | None) -> list[str]:
    """Say ``text`` (a warning the user should see; None: nothing) on one stderr line; returns it as the list
    of notes that result.json keeps."""
    if not text:
        return []
    sys.stderr.write(f"robustlens: warning: {text}\n")
    sys.stderr.flush()
    return [text]


def add_max_pixels_arg(p: argparse.ArgumentParser) -> None:
    """``--max-pixels`` for commands that read images (applied by the CLI's ``main``)."""
    p.add_argument("--max-pixels", type=pixel_count, default=None, metavar="N",
                   help="refuse images larger than N pixels before decoding them (default 50e6, or "
                        "$ROBUSTLENS_MAX_PIXELS)")


def pixel_count(text: str) -> int:
    """argparse type: a whole number of pixels >= 1 (``50e6`` allowed)."""
    try:
        return parse_max_pixels(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def progress_enabled(args: argparse.Namespace) -> bool:
    """tqdm bars only for a person watching a terminal."""
    return not getattr(args, "json", False) and sys.stderr.isatty()


def check_positive(name: str, value: int | float | None, *, allow_zero: bool = False) -> None:
    """A command's numeric option: see :func:`robustlens.checks.positive`."""
    positive(name, value, allow_zero=allow_zero)
