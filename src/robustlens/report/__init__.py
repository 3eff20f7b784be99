"""The whole problem set as one report: every part run live, written as PNGs, ``report.json`` and one
self-contained ``report.html``.

Each part (:data:`PARTS`) is a function ``(ctx, section)`` that calls the same public API the individual
commands call (``classify``, ``attack``, ``invert``, ``dream``, ``visualize``, ``compare_models``, the reference
gradient checks) with the settings it states, so the report's numbers are those the commands give for the same
settings and seed. A :class:`Section` records its ``settings``, wall time (``seconds``), the blocks the page shows
and the ``data`` (numbers) it measured. A part that cannot run (no robust model) says so plainly (``status:
"unavailable"``); a part that fails is recorded as ``status: "error"`` and the others still run.

Layout: :mod:`.blocks` (typed blocks, :class:`Section`), :mod:`.context` (settings, run context and its model
cache), one module per topic (:mod:`.reference` Problems 1 and 3, :mod:`.problem2`, :mod:`.attacks` 4(a)–(c),
:mod:`.inversion` 4(d), :mod:`.robust` 4(e)(f), :mod:`.dream`, :mod:`.visualize`), :mod:`.build` (the run) and
:mod:`.html` (the page).
"""

from robustlens.models import DEFAULT_ROBUST_MODEL
from robustlens.plots import amplified
from robustlens.report.blocks import (
    Equations,
    Figure,
    Figures,
    Note,
    Pre,
    Section,
    Table,
    Text,
)
from robustlens.report.build import (
    PARTS,
    REPORT_HTML,
    REPORT_JSON,
    Part,
    build_report,
    example_label,
)
from robustlens.report.context import (
    TARANTULA,
    TIGER_CAT,
    ReportContext,
    ReportSettings,
)

__all__ = ["PARTS", "REPORT_HTML", "REPORT_JSON", "DEFAULT_ROBUST_MODEL", "TARANTULA", "TIGER_CAT", "Part",
           "ReportContext", "ReportSettings", "Section", "Text", "Note", "Pre", "Equations", "Table", "Figure",
           "Figures", "amplified", "build_report", "example_label"]
