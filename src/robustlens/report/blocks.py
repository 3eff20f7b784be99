"""Typed pieces of a report page: blocks (text, note, equations, table, figures, preformatted text) and the
:class:`Section` that holds them. ``to_dict()`` gives the JSON form :mod:`robustlens.report.html` renders and
``report.json`` stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

Status = Literal["ok", "partial", "unavailable", "error"]


def _with_caption(d: dict, caption: str) -> dict:
    if caption:
        d["caption"] = caption
    return d


@dataclass(frozen=True)
class Text:
    """A paragraph."""

    text: str
    kind: ClassVar[str] = "text"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text}


@dataclass(frozen=True)
class Note(Text):
    """A highlighted paragraph (e.g. "not available")."""

    kind: ClassVar[str] = "note"


@dataclass(frozen=True)
class Pre(Text):
    """Preformatted text."""

    kind: ClassVar[str] = "pre"


@dataclass(frozen=True)
class Equations:
    """Equation lines (``_{..}`` subscripts and ``^{..}`` superscripts), with an optional caption above."""

    lines: list[str]
    caption: str = ""
    kind: ClassVar[str] = "equations"

    def to_dict(self) -> dict:
        return _with_caption({"kind": self.kind, "lines": list(self.lines)}, self.caption)


@dataclass(frozen=True)
class Table:
    """A table: ``rows`` of cells (strings, numbers, booleans or None) under ``columns``."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    kind: ClassVar[str] = "table"

    def to_dict(self) -> dict:
        return _with_caption({"kind": self.kind, "columns": list(self.columns), "rows": self.rows}, self.caption)


@dataclass(frozen=True)
class Figure:
    """One PNG in the report folder (``file`` is its name there); ``small`` shows it as a thumbnail."""

    file: str
    caption: str
    small: bool = False

    def to_dict(self) -> dict:
        return {"file": self.file, "caption": self.caption, **({"small": True} if self.small else {})}


@dataclass(frozen=True)
class Figures:
    """Figures shown in a row, with an optional caption below."""

    items: list[Figure]
    caption: str = ""
    kind: ClassVar[str] = "figures"

    def to_dict(self) -> dict:
        return _with_caption({"kind": self.kind, "items": [f.to_dict() for f in self.items]}, self.caption)


Block = Union[Text, Note, Pre, Equations, Table, Figures]


def figures(items: list[tuple[str, str]], caption: str = "", small: bool = False) -> Figures:
    """``Figures`` from ``(file, caption)`` pairs, all of the same size."""
    return Figures([Figure(f, c, small) for f, c in items], caption)


@dataclass
class Section:
    """One section of the page: what it ran with (``settings``), what it shows (``blocks``), what it measured
    (``data``, numbers only), its wall time in seconds and its ``status``: ``ok``, ``unavailable`` (it
    cannot run here, said plainly), ``error`` (it failed) or ``partial``."""

    id: str
    title: str
    problem: str
    status: Status = "ok"
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    blocks: list[Block] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def fail(self, status: Status, message: str) -> None:
        """Replace the blocks by one note saying why this section is ``unavailable`` or failed (``error``)."""
        self.status = status
        self.blocks = [Note(("Not available: " if status == "unavailable" else "This part failed: ") + message)]
        self.data["error"] = message

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "problem": self.problem, "status": self.status,
                "settings": self.settings, "seconds": self.seconds, "blocks": [b.to_dict() for b in self.blocks],
                "data": self.data}


def safe_file_name(name: str) -> str:
    """``name`` with every character other than letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def fmt(v: float | None) -> str:
    """4 significant digits, or an en dash for a missing value."""
    return "–" if v is None else f"{v:.4g}"


def sci(v: float | None) -> str:
    """Scientific notation with one decimal (errors), or an en dash for a missing value."""
    return "–" if v is None else f"{v:.1e}"


def strip_history(d: dict) -> dict:
    """``d`` without its per-step ``history`` (kept out of report.json)."""
    return {k: v for k, v in d.items() if k != "history"}
