"""Layer objects built on the functional passes, a softmax cross-entropy loss and the SGD step.

Every layer has ``forward(x) -> y`` (keeps what backward needs), ``backward(dy) -> dx`` (stores the
parameter gradients), ``params() -> dict[str, ndarray]`` and ``grads() -> dict[str, ndarray]`` with the
same keys. ``sgd_step(params, grads, lr)`` applies ``W ← W − η ∂C/∂W`` in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

import robustlens.reference.conv as conv
import robustlens.reference.pool as pool
from robustlens.reference.validation import (
    ShapeError,
    as_float_array,
    check_grad_shape,
    check_ndim,
    int_tuple,
)

__all__ = [
    "Layer", "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "GlobalMaxPool",
    "GlobalAvgPool", "ReLU", "Linear", "Flatten", "Sequential", "linear_forward", "linear_backward",
    "relu_forward", "relu_backward", "softmax_cross_entropy", "sgd_step",
]


def linear_forward(x, w, b=None):
    """x (B, F_in), w (F_out, F_in), b (F_out,) → (y = x wᵀ + b (B, F_out), cache)."""
    x = as_float_array(x, "x", "linear")
    w = as_float_array(w, "w", "linear")
    check_ndim(x, 2, "x", "linear", "(B, F_in)")
    check_ndim(w, 2, "w", "linear", "(F_out, F_in)")
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"linear: input has {x.shape[1]} features (x.shape={x.shape}) but weight expects "
                         f"{w.shape[1]} (w.shape={w.shape})")
    if b is not None:
        b = as_float_array(b, "b", "linear")
        if b.shape != (w.shape[0],):
            raise ShapeError(f"linear: bias must have shape ({w.shape[0]},) to match w.shape={w.shape}, got b.shape={b.shape}")
    y = x @ w.T
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def linear_backward(dy, cache):
    """dy (B, F_out) → (dx = dy w, dw = dyᵀ x, db = Σ_b dy or None)."""
    x, w, has_bias = cache
    dy = as_float_array(dy, "dy", "linear")
    check_grad_shape(dy, (x.shape[0], w.shape[0]), "linear")
    return dy @ w, dy.T @ x, (dy.sum(axis=0) if has_bias else None)


def relu_forward(x):
    """y = max(x, 0) elementwise; the cache is the mask x > 0."""
    x = as_float_array(x, "x", "relu")
    mask = x > 0
    return np.where(mask, x, 0.0).astype(x.dtype, copy=False), mask


def relu_backward(dy, mask):
    """dx = dy where x > 0, else 0 (the derivative at exactly 0 is taken as 0, as in torch)."""
    dy = as_float_array(dy, "dy", "relu")
    check_grad_shape(dy, mask.shape, "relu")
    return np.where(mask, dy, 0.0).astype(dy.dtype, copy=False)


class Layer:
    """Base class: a layer without parameters."""

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def params(self) -> dict[str, np.ndarray]:
        return {}

    def grads(self) -> dict[str, np.ndarray]:
        return {}

    def __call__(self, x):
        return self.forward(x)

    def _cached(self):
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return cache


class _ParamLayer(Layer):
    weight: np.ndarray
    bias: np.ndarray | None
    _dw: np.ndarray | None
    _db: np.ndarray | None

    def params(self):
        p = {"weight": self.weight}
        if self.bias is not None:
            p["bias"] = self.bias
        return p

    def grads(self):
        if getattr(self, "_dw", None) is None:
            raise RuntimeError(f"{type(self).__name__}.grads called before backward")
        g = {"weight": self._dw}
        if self.bias is not None:
            g["bias"] = self._db
        return g


def _he_normal(rng, shape, fan_in, dtype):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


class _ConvNd(_ParamLayer):
    nd = 0

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding="same", dilation=1,
                 bias=True, rng=None, dtype=np.float64):
        op = f"Conv{self.nd}d"
        kernel = int_tuple(kernel_size, self.nd, "kernel_size", op, minimum=1)
        in_channels, out_channels = int(in_channels), int(out_channels)
        if in_channels < 1 or out_channels < 1:
            raise ShapeError(f"{op}: channel counts must be positive, got in={in_channels}, out={out_channels}")
        rng = np.random.default_rng(rng)
        self.weight = _he_normal(rng, (out_channels, in_channels) + kernel, in_channels * int(np.prod(kernel)), dtype)
        self.bias = np.zeros(out_channels, dtype=dtype) if bias else None
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self._cache = self._dw = self._db = None

    def forward(self, x):
        y, self._cache = conv.conv_forward(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                                           dilation=self.dilation, nd=self.nd)
        return y

    def backward(self, dy):
        dx, self._dw, self._db = conv.conv_backward(dy, self._cached())
        return dx


class Conv1d(_ConvNd):
    """x (B, C_in, N) → (B, C_out, N_out); weight (C_out, C_in, k), bias (C_out,)."""

    nd = 1


class Conv2d(_ConvNd):
    """x (B, C_in, H, W) → (B, C_out, H_out, W_out); weight (C_out, C_in, kh, kw), bias (C_out,)."""

    nd = 2


class _MaxPoolNd(Layer):
    nd = 0

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self._cache = None

    def forward(self, x):
        y, self._cache = pool.maxpool_forward(x, self.kernel_size, stride=self.stride, padding=self.padding,
                                              dilation=self.dilation, nd=self.nd)
        return y

    def backward(self, dy):
        return pool.maxpool_backward(dy, self._cached())


class MaxPool1d(_MaxPoolNd):
    """x (B, C, N) → (B, C, N_out), −∞ padding, ties to the first maximum."""

    nd = 1


class MaxPool2d(_MaxPoolNd):
    """x (B, C, H, W) → (B, C, H_out, W_out), −∞ padding, ties to the first maximum (row-major)."""

    nd = 2


class _AvgPoolNd(Layer):
    nd = 0

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad = count_include_pad
        self._cache = None

    def forward(self, x):
        y, self._cache = pool.avgpool_forward(x, self.kernel_size, stride=self.stride, padding=self.padding,
                                              count_include_pad=self.count_include_pad, nd=self.nd)
        return y

    def backward(self, dy):
        return pool.avgpool_backward(dy, self._cached())


class AvgPool1d(_AvgPoolNd):
    """x (B, C, N) → (B, C, N_out), zero padding."""

    nd = 1


class AvgPool2d(_AvgPoolNd):
    """x (B, C, H, W) → (B, C, H_out, W_out), zero padding."""

    nd = 2


class GlobalMaxPool(Layer):
    """x (B, C, *spatial) → (B, C): the maximum of each channel."""

    def __init__(self):
        self._cache = None

    def forward(self, x):
        y, self._cache = pool.global_max_pool_forward(x)
        return y

    def backward(self, dy):
        return pool.global_max_pool_backward(dy, self._cached())


class GlobalAvgPool(Layer):
    """x (B, C, *spatial) → (B, C): the mean of each channel."""

    def __init__(self):
        self._cache = None

    def forward(self, x):
        y, self._cache = pool.global_avg_pool_forward(x)
        return y

    def backward(self, dy):
        return pool.global_avg_pool_backward(dy, self._cached())


class ReLU(Layer):
    """Elementwise max(x, 0), any shape."""

    def __init__(self):
        self._cache = None

    def forward(self, x):
        y, self._cache = relu_forward(x)
        return y

    def backward(self, dy):
        return relu_backward(dy, self._cached())


class Linear(_ParamLayer):
    """x (B, F_in) → (B, F_out); weight (F_out, F_in), bias (F_out,)."""

    def __init__(self, in_features, out_features, *, bias=True, rng=None, dtype=np.float64):
        in_features, out_features = int(in_features), int(out_features)
        if in_features < 1 or out_features < 1:
            raise ShapeError(f"Linear: feature counts must be positive, got in={in_features}, out={out_features}")
        rng = np.random.default_rng(rng)
        self.weight = _he_normal(rng, (out_features, in_features), in_features, dtype)
        self.bias = np.zeros(out_features, dtype=dtype) if bias else None
        self._cache = self._dw = self._db = None

    def forward(self, x):
        y, self._cache = linear_forward(x, self.weight, self.bias)
        return y

    def backward(self, dy):
        dx, self._dw, self._db = linear_backward(dy, self._cached())
        return dx


class Flatten(Layer):
    """x (B, *rest) → (B, prod(rest))."""

    def __init__(self):
        self._cache = None

    def forward(self, x):
        x = np.asarray(x)
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        shape = self._cached()
        dy = np.asarray(dy)
        check_grad_shape(dy, (shape[0], int(np.prod(shape[1:]))), "flatten")
        return dy.reshape(shape)


class Sequential(Layer):
    """Layers applied in order; parameters are named ``"{index}.{name}"``, e.g. ``"0.weight"``."""

    def __init__(self, *layers: Layer):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def params(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params().items()}

    def grads(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads().items()}


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of logits (B, K) against integer labels (B,) → (loss, ∂loss/∂logits (B, K))."""
    logits = as_float_array(logits, "logits", "softmax_cross_entropy")
    labels = np.asarray(labels)
    check_ndim(logits, 2, "logits", "softmax_cross_entropy", "(B, K)")
    if labels.shape != (logits.shape[0],):
        raise ShapeError(f"softmax_cross_entropy: labels.shape={labels.shape} does not match logits.shape={logits.shape}")
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(logits.shape[0])
    loss = -log_p[rows, labels].mean()
    d = np.exp(log_p)
    d[rows, labels] -= 1.0
    return float(loss), d / logits.shape[0]


def sgd_step(params, grads, lr: float):
    """In place ``W ← W − lr · ∂C/∂W`` for every parameter; ``params``/``grads`` are matching dicts or lists.

    Returns ``params`` (the same, updated, arrays).
    """
    if isinstance(params, Mapping):
        if not isinstance(grads, Mapping) or set(params) != set(grads):
            raise ShapeError(f"sgd_step: params and grads need the same keys, got {sorted(params)} and "
                             f"{sorted(grads) if isinstance(grads, Mapping) else type(grads).__name__}")
        pairs = [(k, params[k], grads[k]) for k in params]
    elif isinstance(params, Sequence):
        if len(params) != len(grads):
            raise ShapeError(f"sgd_step: {len(params)} params but {len(grads)} grads")
        pairs = [(i, p, g) for i, (p, g) in enumerate(zip(params, grads))]
    else:
        raise ShapeError(f"sgd_step: params must be a dict or a list of arrays, got {type(params).__name__}")
    for key, p, g in pairs:
        if not isinstance(p, np.ndarray):
            raise ShapeError(f"sgd_step: parameter {key!r} must be a NumPy array to be updated in place")
        g = np.asarray(g)
        if p.shape != g.shape:
            raise ShapeError(f"sgd_step: parameter {key!r} has shape {p.shape} but its gradient has shape {g.shape}")
        p -= lr * g
    return params
