"""Errors the user can act on.

A :class:`UserError` carries one line that says what is wrong and what to do; the CLI prints it on stderr
and exits with code 2, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from the user (a path, a name, a number): one clear line, no traceback.

    The message is kept on one line whatever it quotes: control characters (a newline in a file name, say)
    are shown escaped (``\\n``)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(str(message)))


def one_line(text: str) -> str:
    """``text`` with control characters escaped, so it prints as one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def close_matches(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` entries of ``choices`` that look like ``name`` (fuzzy, then substring)."""
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    low = name.lower()
    for c in choices:
        if len(found) >= n:
            break
        if low in c.lower() and c not in found:
            found.append(c)
    return found


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """A :class:`UserError` for an unknown ``kind`` called ``name``, listing close matches."""
    near = close_matches(name, choices)
    hint = f"; did you mean: {', '.join(near)}?" if near else ""
    return UserError(f"unknown {kind} {name!r}{hint}")
