"""Checks of the numbers a person gives (CLI options, app fields, API arguments): one definition each.

Error policy (see CONTRIBUTING.md): a value a person can get wrong — a number, a name, a path, a file —
raises :class:`robustlens.errors.UserError` (a ``ValueError``) with one line saying what is wrong; the CLI
prints it and exits with code 2. Programming errors (wrong types or shapes passed by code) raise the usual
``TypeError``/``ValueError``/``RuntimeError``.
"""

from __future__ import annotations

import math
from fractions import Fraction

from robustlens.errors import UserError


def parse_number(text: str | float | int, name: str = "value") -> float:
    """A finite float from ``text``, which may be written as a fraction (``8/255``)."""
    s = str(text).strip()
    try:
        value = float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise UserError(f"{name}: not a number: {str(text)!r} (use e.g. 0.03 or 8/255)") from None
    return finite(name, value)


def finite(name: str, value: float | int) -> float:
    """``value`` as a float; NaN and infinities are refused."""
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    return value


def positive(name: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    """Refuse a negative (or, unless ``allow_zero``, zero), NaN or infinite ``value``; None passes."""
    if value is None:
        return
    finite(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")


def finite_all(**values: float | int | None) -> None:
    """Refuse NaN or infinite values among keyword arguments (None passes): ``finite_all(eps=eps, lr=lr)``."""
    for name, value in values.items():
        if value is not None:
            finite(name, value)


def count(name: str, value: int | None, *, minimum: int = 1) -> None:
    """Refuse an integer option below ``minimum`` (None passes)."""
    if value is not None and value < minimum:
        raise UserError(f"{name} must be at least {minimum}, got {value}")


def vacuous_eps(norm: str, eps: float, shape: tuple[int, ...]) -> str | None:
    """A note when an ``eps`` ball of ``norm`` around an image of ``shape`` (C, H, W) holds all of [0,1]^n
    (L∞ ≥ 1, L2 ≥ sqrt(n), L1 ≥ n, n = C·H·W), so the threat constrains nothing; None otherwise. An empty
    ``shape`` (size not known yet) judges L∞ only."""
    if not shape and norm != "linf":
        return None
    n = 1
    for s in shape:
        n *= int(s)
    bound = {"linf": 1.0, "l2": math.sqrt(n), "l1": float(n)}.get(norm)
    if bound is None or eps < bound:
        return None
    return (f"eps {eps:g} ({norm}) is at least {bound:g}, the largest distance between two images of shape "
            f"{tuple(int(s) for s in shape)}: the threat model constrains nothing")
