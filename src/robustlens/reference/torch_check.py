"""The same passes computed by ``torch.nn.functional`` + autograd in float64, for comparison.

torch is imported inside the functions, never at module import, so importing this module (or any
other module of :mod:`robustlens.reference`) does not load torch. ``ImportError`` when torch is missing.
The arguments are translated to torch's conventions here, independently of the NumPy code:
``padding="same"`` → ``p = d(k−1)/2`` with stride 1; pooling ``stride=None`` → ``kernel_size``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["torch_version", "torch_pass", "torch_sgd_step"]


def _torch():
    import torch  # noqa: PLC0415 - deliberately lazy

    return torch


def torch_version() -> str:
    """The installed torch version (raises ImportError when torch is missing)."""
    return str(_torch().__version__)


def _tuple(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * nd


def _geometry(kwargs: dict, kernel, nd: int, pool: bool):
    """Translate our keyword arguments into torch's (stride, padding, dilation) tuples."""
    kernel = _tuple(kernel, nd)
    dilation = _tuple(kwargs.get("dilation", 1), nd)
    padding = kwargs.get("padding", 0 if pool else "same")
    stride = kwargs.get("stride", None if pool else 1)
    if padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        stride = 1 if stride is None else stride
    stride = kernel if stride is None else _tuple(stride, nd)
    return _tuple(stride, nd), _tuple(padding, nd), dilation


def torch_pass(layer: str, x, w, b, kwargs: dict, dy) -> dict:
    """``{"y", "dx", "dw", "db"}`` (NumPy float64; None where absent) of ``layer`` computed with torch.

    ``layer`` is a key of :data:`robustlens.reference.gradcheck.LAYERS`; ``dy`` is ∂C/∂y.
    """
    torch = _torch()
    F = torch.nn.functional

    def leaf(a):
        return None if a is None else torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)

    tx, tw, tb = leaf(x), leaf(w), leaf(b)
    nd = tx.ndim - 2
    if layer in ("conv1d", "conv2d"):
        stride, padding, dilation = _geometry(kwargs, tw.shape[2:], nd, pool=False)
        fn = F.conv1d if layer == "conv1d" else F.conv2d
        ty = fn(tx, tw, tb, stride=stride, padding=padding, dilation=dilation)
    elif layer in ("maxpool1d", "maxpool2d"):
        k = _tuple(kwargs["kernel_size"], nd)
        stride, padding, dilation = _geometry(kwargs, k, nd, pool=True)
        fn = F.max_pool1d if layer == "maxpool1d" else F.max_pool2d
        ty = fn(tx, k, stride=stride, padding=padding, dilation=dilation)
    elif layer in ("avgpool1d", "avgpool2d"):
        k = _tuple(kwargs["kernel_size"], nd)
        stride, padding, _ = _geometry(kwargs, k, nd, pool=True)
        fn = F.avg_pool1d if layer == "avgpool1d" else F.avg_pool2d
        ty = fn(tx, k, stride=stride, padding=padding, count_include_pad=kwargs.get("count_include_pad", True))
    elif layer == "global_max_pool":
        # adaptive max pooling to size 1 keeps torch's first-maximum tie rule (amax would split ties)
        ty = F.adaptive_max_pool1d(tx.flatten(2), 1)[..., 0]
    elif layer == "global_avg_pool":
        ty = tx.flatten(2).mean(dim=-1)
    elif layer == "linear":
        ty = F.linear(tx, tw, tb)
    elif layer == "relu":
        ty = F.relu(tx)
    else:
        raise ValueError(f"torch_pass: unknown layer {layer!r}")
    ty.backward(torch.tensor(np.asarray(dy, dtype=np.float64)))

    def grad(t):
        if t is None:
            return None
        return np.zeros(tuple(t.shape)) if t.grad is None else t.grad.numpy()

    return {"y": ty.detach().numpy(), "dx": grad(tx), "dw": grad(tw), "db": grad(tb)}


def torch_sgd_step(params: dict, grads: dict, lr: float) -> dict:
    """One ``torch.optim.SGD`` step (no momentum) from copies of ``params``; returns the new values."""
    torch = _torch()
    tensors = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    for k, t in tensors.items():
        t.grad = torch.tensor(np.asarray(grads[k], dtype=np.float64))
    torch.optim.SGD(list(tensors.values()), lr=lr).step()
    return {k: t.detach().numpy() for k, t in tensors.items()}
