"""Gradient checks of every reference layer: central finite differences in float64 and, when torch
is installed, ``torch.nn.functional`` + autograd (in :mod:`.torch_check`, imported only here, lazily).

``run_checks(seed)`` returns a JSON-able dict; ``format_checks(result)`` renders it as a table.
Relative error: ``rel_err(a, b) = max|a − b| / max(max|b|, tiny)``, with ``b`` the reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

import robustlens.reference.conv as conv
import robustlens.reference.network as network
import robustlens.reference.pool as pool

__all__ = [
    "LAYERS", "TOL_TORCH", "TOL_FD", "Case", "CASES", "rel_err", "numpy_pass", "finite_difference_grads",
    "make_inputs", "run_checks", "format_checks",
]

TOL_TORCH = 1e-10
TOL_FD = 1e-6
FD_STEP = 1e-6


def rel_err(a, b) -> float:
    """``max|a − b| / max(max|b|, tiny)``: 0 for identical arrays, robust when ``b`` is near 0 everywhere."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_err: shapes differ, a.shape={a.shape}, b.shape={b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), np.finfo(np.float64).tiny))


def _no_param_backward(backward):
    return lambda dy, cache: (backward(dy, cache), None, None)


# name -> (forward(x, w, b, kwargs) -> (y, cache), backward(dy, cache) -> (dx, dw, db), has weight)
LAYERS = {
    "conv1d": (lambda x, w, b, kw: conv.conv1d_forward(x, w, b, **kw), conv.conv1d_backward, True),
    "conv2d": (lambda x, w, b, kw: conv.conv2d_forward(x, w, b, **kw), conv.conv2d_backward, True),
    "maxpool1d": (lambda x, w, b, kw: pool.maxpool1d_forward(x, **kw), _no_param_backward(pool.maxpool_backward), False),
    "maxpool2d": (lambda x, w, b, kw: pool.maxpool2d_forward(x, **kw), _no_param_backward(pool.maxpool_backward), False),
    "avgpool1d": (lambda x, w, b, kw: pool.avgpool1d_forward(x, **kw), _no_param_backward(pool.avgpool_backward), False),
    "avgpool2d": (lambda x, w, b, kw: pool.avgpool2d_forward(x, **kw), _no_param_backward(pool.avgpool_backward), False),
    "global_max_pool": (lambda x, w, b, kw: pool.global_max_pool_forward(x),
                        _no_param_backward(pool.global_max_pool_backward), False),
    "global_avg_pool": (lambda x, w, b, kw: pool.global_avg_pool_forward(x),
                        _no_param_backward(pool.global_avg_pool_backward), False),
    "linear": (lambda x, w, b, kw: network.linear_forward(x, w, b), network.linear_backward, True),
    "relu": (lambda x, w, b, kw: network.relu_forward(x), _no_param_backward(network.relu_backward), False),
}

_MAX_LIKE = {"maxpool1d", "maxpool2d", "global_max_pool", "relu"}


@dataclass(frozen=True)
class Case:
    """One check: a layer, its input/weight shapes, whether it has a bias and its keyword arguments."""

    layer: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...] | None = None
    bias: bool = False
    kwargs: dict = field(default_factory=dict)
    ties: bool = False  # integer-valued x with many ties: compared with torch only (no finite differences)

    def describe_shape(self) -> str:
        s = f"x{self.x_shape}"
        if self.w_shape is not None:
            s += f" w{self.w_shape}"
        if self.bias:
            s += " +b"
        if self.ties:
            s += " ties"
        return s

    def describe_args(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


CASES: tuple[Case, ...] = (
    Case("conv1d", (2, 3, 9), (4, 3, 3), True, {"padding": "same"}),
    Case("conv1d", (1, 2, 5), (3, 2, 5), True, {"padding": "same"}),  # k = N
    Case("conv1d", (2, 2, 3), (2, 2, 5), False, {"padding": "same"}),  # N < k
    Case("conv1d", (2, 2, 11), (3, 2, 4), True, {"stride": 2, "padding": 2, "dilation": 2}),
    Case("conv2d", (2, 2, 6, 5), (3, 2, 3, 3), True, {"padding": "same"}),
    Case("conv2d", (1, 2, 7, 8), (2, 2, 2, 3), True, {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)}),
    Case("maxpool1d", (2, 3, 10), None, False, {"kernel_size": 3, "padding": "same"}),
    Case("maxpool1d", (2, 2, 11), None, False, {"kernel_size": 4, "stride": 2, "padding": 2}),
    Case("maxpool2d", (2, 2, 6, 5), None, False, {"kernel_size": 3, "padding": "same"}),
    Case("maxpool2d", (2, 2, 8, 8), None, False, {"kernel_size": 2}),
    Case("maxpool2d", (1, 2, 7, 9), None, False,
         {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1), "dilation": (1, 2)}),
    Case("maxpool1d", (2, 3, 12), None, False, {"kernel_size": 3, "padding": "same"}, ties=True),
    Case("maxpool2d", (2, 2, 7, 6), None, False,
         {"kernel_size": 3, "stride": (1, 2), "padding": 1, "dilation": (2, 1)}, ties=True),
    Case("avgpool1d", (2, 3, 10), None, False, {"kernel_size": 3, "padding": "same"}),
    Case("avgpool2d", (2, 2, 8, 8), None, False, {"kernel_size": 2}),
    Case("avgpool2d", (1, 2, 7, 6), None, False,
         {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    Case("global_max_pool", (2, 3, 4, 5)),
    Case("global_max_pool", (2, 3, 7)),
    Case("global_max_pool", (2, 3, 4, 5), ties=True),
    Case("global_avg_pool", (2, 3, 4, 5)),
    Case("linear", (4, 6), (5, 6), True),
    Case("relu", (2, 3, 7)),
)


def make_inputs(case: Case, rng: np.random.Generator):
    """Random float64 ``(x, w, b)`` for ``case``. For max-like layers x holds distinct values at least
    0.05 apart and away from 0 (half of them negative), so a finite-difference step cannot change
    which entry wins; ties are tested separately, by the documented rule."""
    size = int(np.prod(case.x_shape))
    if case.ties:
        x = rng.integers(-3, 1, size=case.x_shape).astype(np.float64)  # values in {-3,...,0}: ties everywhere
    elif case.layer in _MAX_LIKE:
        x = (rng.permutation(size) - size / 2 + 0.25) * 0.05 + rng.uniform(-0.01, 0.01, size)
        x = x.reshape(case.x_shape)
    else:
        x = rng.standard_normal(case.x_shape)
    w = rng.standard_normal(case.w_shape) if case.w_shape is not None else None
    b = rng.standard_normal(case.w_shape[0]) if case.bias and case.w_shape is not None else None
    return x, w, b


def numpy_pass(layer: str, x, w, b, kwargs, dy=None, rng=None) -> dict:
    """Reference forward and backward: ``{"y", "dx", "dw", "db", "dy"}`` (``dy`` random when not given)."""
    forward, backward, _ = LAYERS[layer]
    y, cache = forward(x, w, b, kwargs)
    if dy is None:
        dy = np.random.default_rng(rng).standard_normal(y.shape)
    dx, dw, db = backward(dy, cache)
    return {"y": y, "dx": dx, "dw": dw, "db": db, "dy": dy}


def _fd_grad(f, a: np.ndarray, h: float) -> np.ndarray:
    """Central differences of the scalar function ``f()`` with respect to every entry of ``a`` (in place)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def finite_difference_grads(layer: str, x, w, b, kwargs, dy, h: float = FD_STEP) -> dict:
    """Central-difference ``{"dx", "dw", "db"}`` of ``C = Σ dy · y(x, w, b)`` (None where not a parameter)."""
    forward = LAYERS[layer][0]
    x = np.array(x, dtype=np.float64)
    w = None if w is None else np.array(w, dtype=np.float64)
    b = None if b is None else np.array(b, dtype=np.float64)

    def loss():
        return float(np.sum(forward(x, w, b, kwargs)[0] * dy))

    return {
        "dx": _fd_grad(loss, x, h),
        "dw": None if w is None else _fd_grad(loss, w, h),
        "db": None if b is None else _fd_grad(loss, b, h),
    }


def _errors(ours: dict, ref: dict, keys) -> dict:
    return {k: (None if ours[k] is None or ref.get(k) is None else rel_err(ours[k], ref[k])) for k in keys}


def _check_case(case: Case, rng: np.random.Generator, torch_check) -> dict:
    x, w, b = make_inputs(case, rng)
    ours = numpy_pass(case.layer, x, w, b, case.kwargs, rng=rng)
    # at a tie the max is not differentiable, so finite differences say nothing there
    fd = {} if case.ties else finite_difference_grads(case.layer, x, w, b, case.kwargs, ours["dy"])
    row = {"layer": case.layer, "shape": case.describe_shape(), "args": case.describe_args()}
    if torch_check is not None:
        ref = torch_check.torch_pass(case.layer, x, w, b, case.kwargs, ours["dy"])
        e = _errors(ours, ref, ("y", "dx", "dw", "db"))
        row.update({"forward_rel_err_vs_torch": e["y"], "dx_rel_err_vs_torch": e["dx"],
                    "dw_rel_err_vs_torch": e["dw"], "db_rel_err_vs_torch": e["db"]})
    e = _errors(ours, fd, ("dx", "dw", "db"))
    row.update({"dx_rel_err_vs_fd": e["dx"], "dw_rel_err_vs_fd": e["dw"], "db_rel_err_vs_fd": e["db"]})
    return row


def _check_sgd(rng: np.random.Generator, torch_check) -> dict:
    """One SGD step on a dict of parameters, against the update written out by hand and torch.optim.SGD."""
    lr = 0.1
    params = {"weight": rng.standard_normal((4, 3)), "bias": rng.standard_normal(4)}
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    network.sgd_step(params, grads, lr)
    row: dict[str, str | float] = {"layer": "sgd_step", "shape": "w(4, 3) +b", "args": f"lr={lr}"}
    row["update_rel_err_vs_formula"] = max(rel_err(params[k], before[k] - lr * grads[k]) for k in params)
    if torch_check is not None:
        ref = torch_check.torch_sgd_step(before, grads, lr)
        row["update_rel_err_vs_torch"] = max(rel_err(params[k], ref[k]) for k in params)
    return row


_TORCH_COLS = ("forward_rel_err_vs_torch", "dx_rel_err_vs_torch", "dw_rel_err_vs_torch", "db_rel_err_vs_torch",
               "update_rel_err_vs_torch")
_FD_COLS = ("dx_rel_err_vs_fd", "dw_rel_err_vs_fd", "db_rel_err_vs_fd")
_FORMULA_COLS = ("update_rel_err_vs_formula",)


def _max(values) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def run_checks(seed: int = 0, *, use_torch: bool = True) -> dict:
    """Check every layer on random float64 inputs; JSON-able result.

    Keys: ``seed``, ``torch_available``, ``torch_status`` ("compared", "torch not installed" or "disabled"),
    ``torch_version``, ``tolerance_vs_torch``, ``tolerance_vs_fd``,
    ``checks`` (one dict per case: ``layer``, ``shape``, ``args``, ``forward_rel_err_vs_torch``,
    ``d{x,w,b}_rel_err_vs_torch``, ``d{x,w,b}_rel_err_vs_fd``, for the ``sgd_step`` row
    ``update_rel_err_vs_torch`` (torch.optim.SGD) and ``update_rel_err_vs_formula`` (W − η·g written out);
    None where not applicable; and ``passed``), ``max_error_vs_torch`` (None without torch),
    ``max_error_vs_fd``, ``passed`` and ``seconds``.
    """
    start = time.perf_counter()
    torch_check = None
    torch_version = None
    torch_status = "disabled"
    if use_torch:
        try:
            import robustlens.reference.torch_check as _tc

            torch_version = _tc.torch_version()
            torch_check = _tc
            torch_status = "compared"
        except ImportError:
            torch_status = "torch not installed"
    rng = np.random.default_rng(seed)
    rows = [_check_case(case, rng, torch_check) for case in CASES]
    rows.append(_check_sgd(rng, torch_check))
    for row in rows:
        for col in _TORCH_COLS + _FD_COLS + _FORMULA_COLS:
            row.setdefault(col, None)
        t, f = _max(row[c] for c in _TORCH_COLS), _max(row[c] for c in _FD_COLS)
        u = _max(row[c] for c in _FORMULA_COLS)
        row["passed"] = (t is None or t <= TOL_TORCH) and (f is None or f <= TOL_FD) and (u is None or u <= TOL_TORCH)
    max_t = _max(_max(r[c] for c in _TORCH_COLS) for r in rows) if torch_check is not None else None
    max_f = _max(_max(r[c] for c in _FD_COLS) for r in rows)
    return {
        "seed": seed,
        "torch_available": torch_check is not None,
        "torch_status": torch_status,
        "torch_version": torch_version,
        "tolerance_vs_torch": TOL_TORCH,
        "tolerance_vs_fd": TOL_FD,
        "checks": rows,
        "max_error_vs_torch": max_t,
        "max_error_vs_fd": max_f,
        "passed": all(r["passed"] for r in rows),
        "seconds": time.perf_counter() - start,
    }


def format_checks(result: dict) -> str:
    """A readable fixed-width table of :func:`run_checks`'s result, with a summary line."""
    def cell(v):
        return "-" if v is None else f"{v:.1e}"

    def worst(row, cols):
        return _max(row.get(c) for c in cols)

    headers = ("layer", "shape", "args", "fwd/torch", "grad/torch", "grad/fd", "ok")
    # grad/torch also holds the SGD update vs torch.optim.SGD
    body = []
    for r in result["checks"]:
        body.append((r["layer"], r["shape"], r.get("args", ""), cell(r.get("forward_rel_err_vs_torch")),
                     cell(worst(r, _TORCH_COLS[1:])), cell(worst(r, _FD_COLS)), "yes" if r["passed"] else "NO"))
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    if result["torch_available"]:
        torch_note = (f"max rel. error vs torch {cell(result['max_error_vs_torch'])} "
                      f"(tol {result['tolerance_vs_torch']:.0e}, torch {result['torch_version']})")
    else:
        torch_note = f"no torch comparison ({result.get('torch_status', 'torch not installed')})"
    lines.append("")
    lines.append(f"seed {result['seed']}: {torch_note}; max rel. error vs finite differences "
                 f"{cell(result['max_error_vs_fd'])} (tol {result['tolerance_vs_fd']:.0e}); "
                 f"{'PASSED' if result['passed'] else 'FAILED'} in {result['seconds']:.1f} s")
    return "\n".join(lines)
