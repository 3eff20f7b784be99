"""The 1000 ImageNet classes in index order, and lookup by index, wnid or (partial) name."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from robustlens.errors import UserError


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    names: tuple[str, ...]  # the synonyms, first one is the display name

    @property
    def name(self) -> str:
        return self.names[0]


@functools.cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """All 1000 classes, read from the synset list shipped in the package."""
    text = resources.files("robustlens").joinpath("assets/imagenet_synsets.txt").read_text("utf-8")
    out = []
    for i, line in enumerate(text.splitlines()):
        wnid, _, rest = line.partition(" ")
        out.append(ImageNetClass(i, wnid, tuple(s.strip() for s in rest.split(","))))
    assert len(out) == 1000, len(out)
    return tuple(out)


def class_name(index: int) -> str:
    """Display name of ImageNet class ``index`` (0..999)."""
    return imagenet_classes()[index].name


def _describe(c: ImageNetClass) -> str:
    return f"{c.index} ({c.name})"


def resolve_class(query: str | int, num_classes: int = 1000) -> int:
    """The class index that ``query`` names.

    Accepted: an index (``282``), a wnid (``n02123159``), or a name, case-insensitive, matched first exactly
    against every synonym, then as a word-prefix/substring (``"tiger cat"`` → 282, ``"tarantula"`` → 76).
    An ambiguous name raises :class:`UserError` listing the choices. For models with other than 1000 classes
    only indices ``0..num_classes-1`` are accepted.

    Example:

    ```pycon
    >>> from robustlens.models import resolve_class
    >>> resolve_class("tiger cat"), resolve_class("282"), resolve_class("n02123159")
    (282, 282, 282)

    ```
    """
    if isinstance(query, int) or str(query).strip().lstrip("-").isdigit():
        idx = int(query)
        if not 0 <= idx < num_classes:
            raise UserError(f"class index {idx} is out of range 0..{num_classes - 1}")
        return idx
    q = " ".join(str(query).strip().lower().split())
    if not q:
        raise UserError("empty class name")
    if num_classes != 1000:
        raise UserError(f"this model has {num_classes} classes: name a class by its index 0..{num_classes - 1}")
    classes = imagenet_classes()
    if re.fullmatch(r"n\d{8}", q):
        for c in classes:
            if c.wnid == q:
                return c.index
        raise UserError(f"unknown wnid {query!r}")
    exact = [c for c in classes if q in (n.lower() for n in c.names)]
    if len(exact) == 1:
        return exact[0].index
    if len(exact) > 1:
        raise UserError(f"class name {query!r} is ambiguous: " + ", ".join(_describe(c) for c in exact))
    partial = [c for c in classes if any(q in n.lower() for n in c.names)]
    if len(partial) == 1:
        return partial[0].index
    if len(partial) > 1:
        shown = ", ".join(_describe(c) for c in partial[:12])
        more = f" and {len(partial) - 12} more" if len(partial) > 12 else ""
        raise UserError(f"class name {query!r} is ambiguous: {shown}{more}; use the index or a longer name")
    from robustlens.errors import close_matches

    near = close_matches(q, [n.lower() for c in classes for n in c.names], n=5)
    hint = f"; did you mean: {', '.join(near)}?" if near else ""
    raise UserError(f"unknown class {query!r}{hint}")
