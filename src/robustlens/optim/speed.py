"""Speed settings for input optimisation: threads, channels-last, autocast precision, ``torch.compile``.

Every experiment is many forward+backward passes w.r.t. the input of a frozen model, so the same few settings
decide its speed (measurements and the commands behind them: ``docs/performance.md``):

- ``channels_last``: the model's 4-D weights and the input in NHWC order, which oneDNN (CPU) and cuDNN
  (GPU, reduced precision) convolutions run fastest. ``"auto"`` (default): on for models with 2-D
  convolutions fed images of at least 64 pixels a side (slower on 28-pixel MNIST). The model's own memory format is restored afterwards
  (:func:`channels_last_model`), so nothing outside the run changes.
- ``precision``: ``"fp32"``, ``"bf16"`` (autocast: matmuls and convolutions in bfloat16, losses in float32)
  or ``"auto"`` (default): bf16 only for the model families where it was measured not to change the
  attack (torchvision ResNet/ResNeXt/Wide-ResNet/VGG: input-gradient signs ≥ 99% equal to fp32) on a
  device with native bf16 (AVX512-BF16/AMX CPUs, Ampere+ GPUs); fp32 otherwise (EfficientNet-Lite0: only
  81% equal signs). Success decisions and final predictions are always made in float32 by the engine.
- ``fold_bn``: for objectives that read only the logits (attacks), run a private copy of an eval-mode model
  in which every BatchNorm that directly follows a convolution is folded into that convolution's weight and
  bias, explicit "same" padding is moved into the convolutions and, on the CPU, a convolution and the
  ReLU/ReLU6 after it run as one oneDNN call (:func:`robustlens.optim.fold.prepared`): the same function up
  to float rounding, with fewer passes over every activation (forward and backward). The model itself is
  not changed. On by default.
- ``compile``: ``torch.compile`` the model for the run (off by default: it did not speed up the
  input-gradient step on CPU); on CUDA it uses ``mode="reduce-overhead"`` (CUDA graphs), unmeasured here.
- threads: :func:`set_threads` (intra-op = cores by default, inter-op optional).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from robustlens._layout import one_channel_nhwc

PRECISIONS = ("auto", "fp32", "bf16")

# torchvision families (model-name prefixes) where bf16 autocast was measured safe for input gradients.
BF16_SAFE_FAMILIES = ("resnet", "wide_resnet", "resnext", "vgg")


@dataclass(frozen=True)
class Speed:
    """How to run the forward+backward passes of one optimisation (see the module docstring)."""

    channels_last: bool | str = "auto"
    precision: str = "auto"
    compile: bool = False
    fold_bn: bool = True

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last must be True, False or 'auto', got {self.channels_last!r}")

    def to_dict(self) -> dict:
        return {"channels_last": self.channels_last, "precision": self.precision, "compile": self.compile,
                "fold_bn": self.fold_bn}


FAST = Speed()
PLAIN = Speed(channels_last=False, precision="fp32", compile=False, fold_bn=False)

_CURRENT: ContextVar[Speed] = ContextVar("robustlens_speed", default=FAST)


def current() -> Speed:
    """The settings in force: those of the innermost :func:`use` block, else the defaults (:data:`FAST`)."""
    return _CURRENT.get()


def resolve(channels_last: bool | str | None = None, precision: str | None = None,
            compile: bool | None = None, fold_bn: bool | None = None) -> Speed:
    """The settings in force (:func:`current`) with each explicit (not None) argument taking precedence."""
    cur = current()
    return Speed(channels_last=cur.channels_last if channels_last is None else channels_last,
                 precision=cur.precision if precision is None else precision,
                 compile=cur.compile if compile is None else compile,
                 fold_bn=cur.fold_bn if fold_bn is None else fold_bn)


@contextlib.contextmanager
def use(speed: Speed) -> Iterator[Speed]:
    """Within the block, optimisations that are not given explicit settings use ``speed`` (how the CLI's
    ``--precision``/``--no-channels-last``/``--compile`` reach every recipe: attack, invert, dream, ...)."""
    token = _CURRENT.set(speed)
    try:
        yield speed
    finally:
        _CURRENT.reset(token)


def set_threads(threads: int | None = None, interop: int | None = None) -> int:
    """Set torch's intra-op threads (default: the number of cores) and, if given, inter-op threads (only
    possible before the first parallel work). Returns the intra-op count in force."""
    n = int(threads) if threads else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    if interop:
        with contextlib.suppress(RuntimeError):  # already set, or parallel work has started
            torch.set_num_interop_threads(int(interop))
    return torch.get_num_threads()


def model_name(model: nn.Module) -> str:
    """The zoo name of a :class:`robustlens.models.Classifier` (``resnet50``), else the network's class name."""
    name = getattr(model, "name", None)
    if isinstance(name, str):
        return name
    return type(getattr(model, "net", model)).__name__.lower()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 matmuls/convolutions natively (faster than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)
    return False


def bf16_safe(model: nn.Module) -> bool:
    """True for the model families where bf16 autocast was measured not to change input-gradient signs."""
    name = model_name(model)
    return ":" not in name and name.startswith(BF16_SAFE_FAMILIES)


def autocast_dtype(model: nn.Module, precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_safe(model) and native_bf16(device) else None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


# "auto" channels-last needs images at least this large. With torch 2.14 on this CPU NHWC is faster at every
# size the zoo has (benchmarks/channels_last.py: an input-gradient step 1.1-1.7x faster from 28 px MNIST to
# 224 px; max-pooling a 28x28 NCHW map is ~10x slower than NHWC), so the floor is 1. (An older torch measured
# NHWC 13% slower on 28 px MNIST.) CPU only: on an H100 (cuDNN, torch 2.11) ResNet-50's input-gradient step
# ran 0.79x (bf16) and 0.82x (fp32) as fast channels-last.
CHANNELS_LAST_MIN_SIZE = 1


def use_channels_last(model: nn.Module, x: torch.Tensor, setting: bool | str) -> bool:
    """Resolve a ``channels_last`` setting (True, False, ``"auto"``) for ``model`` fed ``x``: ``"auto"`` is on
    for models with 2-D convolutions fed CPU images of at least :data:`CHANNELS_LAST_MIN_SIZE` pixels a side."""
    if setting == "auto":
        return (x.dim() == 4 and x.device.type == "cpu" and min(x.shape[-2:]) >= CHANNELS_LAST_MIN_SIZE
                and has_conv2d(model))
    return bool(setting) and x.dim() == 4


def in_format(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``x`` in memory format ``fmt`` (differentiable). For channels-last the strides are made explicit: a
    one-channel image (N,1,H,W) counts as contiguous in both layouts, so ``x.contiguous(memory_format=...)``
    leaves its NCHW strides, and the first convolution then writes an NCHW output and the network after it
    runs NCHW (max-pooling a 28×28 NCHW map is ~10× slower than NHWC here). The NHWC view has strides
    (H·W·C, 1, W·C, C) whatever C is."""
    if fmt != torch.channels_last or x.dim() != 4 or x.shape[1] != 1:
        return x.contiguous(memory_format=fmt)
    return one_channel_nhwc(x)


@contextlib.contextmanager
def channels_last_model(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block the model's 4-D parameters and buffers are channels-last; on exit the ones that were
    not are converted back (values unchanged; only the memory layout moves)."""
    changed: list[torch.Tensor] = []
    if enabled:
        tensors = list(model.parameters()) + list(model.buffers())
        for t in tensors:
            if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                t.data = t.data.contiguous(memory_format=torch.channels_last)
                changed.append(t)
    try:
        yield model
    finally:
        for t in changed:
            t.data = t.data.contiguous()


_COMPILED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, cached per model object (``mode="reduce-overhead"`` on CUDA: CUDA graphs)."""
    hit = _COMPILED.get(model)
    if hit is not None:
        return hit
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    mode = "reduce-overhead" if device.type == "cuda" else None
    fn = cast(nn.Module, torch.compile(model, mode=mode, dynamic=None))
    _COMPILED[model] = fn
    return fn
