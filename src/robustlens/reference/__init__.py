"""Reference layers written from scratch in NumPy (no torch), with hand-derived backward passes.

Functional passes (``*_forward(...) -> (y, cache)``, ``*_backward(dy, cache)``):
:mod:`.conv` (conv1d, conv2d), :mod:`.pool` (max/avg pooling 1-D and 2-D, global max/avg pooling).
Layer objects, loss and SGD: :mod:`.network`. Gradient checks for the CLI: :mod:`.gradcheck`
(``run_checks``, ``format_checks``); torch comparison, loaded lazily: :mod:`.torch_check`.
Tiny digits CNN: :mod:`.digits` (``train_digits_cnn``). Problem 1(b) demo: :mod:`.one_vs_many`.
Derivations: ``docs/derivations.md``.
"""

from robustlens.reference.conv import (
    conv1d_backward,
    conv1d_forward,
    conv2d_backward,
    conv2d_forward,
)
from robustlens.reference.network import (
    AvgPool1d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ReLU,
    Sequential,
    sgd_step,
    softmax_cross_entropy,
)
from robustlens.reference.pool import (
    avgpool1d_backward,
    avgpool1d_forward,
    avgpool2d_backward,
    avgpool2d_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
    maxpool1d_backward,
    maxpool1d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from robustlens.reference.validation import ShapeError

__all__ = [
    "conv1d_forward", "conv1d_backward", "conv2d_forward", "conv2d_backward",
    "maxpool1d_forward", "maxpool1d_backward", "maxpool2d_forward", "maxpool2d_backward",
    "avgpool1d_forward", "avgpool1d_backward", "avgpool2d_forward", "avgpool2d_backward",
    "global_max_pool_forward", "global_max_pool_backward", "global_avg_pool_forward", "global_avg_pool_backward",
    "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "GlobalMaxPool", "GlobalAvgPool",
    "ReLU", "Linear", "Flatten", "Sequential", "softmax_cross_entropy", "sgd_step", "ShapeError",
    "run_checks", "format_checks", "train_digits_cnn", "one_vs_many_demo",
]


def run_checks(seed: int = 0, **kwargs):
    """See :func:`robustlens.reference.gradcheck.run_checks`."""
    from robustlens.reference.gradcheck import run_checks as _run

    return _run(seed, **kwargs)


def format_checks(result):
    """See :func:`robustlens.reference.gradcheck.format_checks`."""
    from robustlens.reference.gradcheck import format_checks as _fmt

    return _fmt(result)


def train_digits_cnn(*args, **kwargs):
    """See :func:`robustlens.reference.digits.train_digits_cnn`."""
    from robustlens.reference.digits import train_digits_cnn as _train

    return _train(*args, **kwargs)


def one_vs_many_demo(*args, **kwargs):
    """See :func:`robustlens.reference.one_vs_many.one_vs_many_demo`."""
    from robustlens.reference.one_vs_many import one_vs_many_demo as _demo

    return _demo(*args, **kwargs)
