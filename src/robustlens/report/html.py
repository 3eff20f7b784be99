"""Rendering a report (the dict written as ``report.json``) as one self-contained HTML page.

Every figure is embedded as a ``data:image/png;base64`` URI and the style sheet is inline, so the page opens
offline in any browser: no external CSS, scripts or fonts. Equations are plain Unicode; in an equation line
``_{...}`` becomes a subscript and ``^{...}`` a superscript.

Blocks a section may hold (``section["blocks"]``, each a dict with ``kind``; written by the typed blocks of
:mod:`robustlens.report.blocks`):

- ``text``: ``{"text"}``, a paragraph; ``note``: ``{"text"}``, a highlighted paragraph (e.g. "not available");
- ``equations``: ``{"lines", "caption"?}``;
- ``table``: ``{"columns", "rows", "caption"?}`` (cells are strings or numbers);
- ``figures``: ``{"items": [{"file", "caption"}], "caption"?}``, PNG files in the report folder shown in a row;
- ``pre``: ``{"text"}``, preformatted text.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_CSS = """
:root { --fg: #1d232a; --muted: #5b6570; --line: #d9dee3; --accent: #1f5fa8; --warn-bg: #fff4e0; --warn: #8a5300; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fbfbfc; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.3em; }
h2 { font-size: 1.3em; margin: 0; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 22px; margin: 22px 0; }
section > header { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; margin-bottom: 10px; }
.tag { font-size: 0.8em; color: #fff; background: var(--accent); border-radius: 4px; padding: 1px 7px; }
.time { color: var(--muted); font-size: 0.9em; }
.settings { font: 0.85em/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: var(--muted);
            background: #f4f6f8; border-radius: 6px; padding: 6px 10px; margin: 6px 0 12px; word-break: break-word; }
.eq { font-family: "Cambria Math", "STIX Two Math", "Latin Modern Math", "DejaVu Serif", Georgia, serif;
      font-size: 1.05em; background: #f7f8fa; border-left: 3px solid var(--accent); padding: 8px 14px; margin: 8px 0; }
.eq div { margin: 3px 0; }
.note { background: var(--warn-bg); color: var(--warn); border-radius: 6px; padding: 8px 12px; }
.status-error { border-color: #c0392b; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.9em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; margin: 8px 0 14px; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px;
             image-rendering: auto; }
figure img.small { width: 184px; image-rendering: pixelated; }
figcaption { font-size: 0.85em; color: var(--muted); max-width: 440px; margin-top: 4px; }
figure:has(img.small) figcaption { max-width: 184px; }
.figs-caption { font-size: 0.9em; color: var(--muted); margin: -6px 0 12px; }
pre { background: #f4f6f8; border-radius: 6px; padding: 10px; overflow-x: auto; font-size: 0.82em; }
nav ol { columns: 2; padding-left: 1.3em; }
.meta td:first-child { color: var(--muted); }
"""

_SCRIPT_RE = re.compile(r"([_^])\{([^{}]*)\}")


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def equation_html(line: str) -> str:
    """An equation line as HTML: escaped, with ``_{..}`` and ``^{..}`` as sub- and superscripts."""
    text = _esc(line)
    return _SCRIPT_RE.sub(lambda m: f"<{'sub' if m.group(1) == '_' else 'sup'}>{m.group(2)}"
                                    f"</{'sub' if m.group(1) == '_' else 'sup'}>", text)


def data_uri(path: Path) -> str:
    """The file as a ``data:`` URI (PNG, JPEG or SVG by suffix)."""
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
    kind = mime.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _cell(v) -> str:
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, (int, float)):
        return f'<td class="num">{_esc(format_number(v))}</td>'
    return f"<td>{_esc('–' if v is None else v)}</td>"


def format_number(v) -> str:
    """Numbers as a report shows them: integers as they are, floats with 4 significant digits."""
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "∞" if v > 0 else "−∞"
    return f"{v:.4g}"


def _block(block: dict, folder: Path) -> str:
    kind = block["kind"]
    if kind == "text":
        return f"<p>{_esc(block['text'])}</p>"
    if kind == "note":
        return f'<p class="note">{_esc(block["text"])}</p>'
    if kind == "pre":
        return f"<pre>{_esc(block['text'])}</pre>"
    if kind == "equations":
        cap = f"<p>{_esc(block['caption'])}</p>" if block.get("caption") else ""
        lines = "".join(f"<div>{equation_html(x)}</div>" for x in block["lines"])
        return f'{cap}<div class="eq">{lines}</div>'
    if kind == "table":
        cap = f"<caption>{_esc(block['caption'])}</caption>" if block.get("caption") else ""
        head = "".join(f"<th>{_esc(c)}</th>" for c in block["columns"])
        body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block["rows"])
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if kind == "figures":
        items = []
        for item in block["items"]:
            cls = ' class="small"' if item.get("small") else ""
            items.append(f'<figure><img{cls} src="{data_uri(folder / item["file"])}" alt="{_esc(item["caption"])}" '
                         f'data-file="{_esc(item["file"])}"><figcaption>{_esc(item["caption"])}</figcaption></figure>')
        cap = f'<p class="figs-caption">{_esc(block["caption"])}</p>' if block.get("caption") else ""
        return f'<div class="figs">{"".join(items)}</div>{cap}'
    raise ValueError(f"unknown report block kind {kind!r}")


def _settings(settings: dict) -> str:
    if not settings:
        return ""
    parts = [f"{_esc(k)}={_esc(format_number(v) if isinstance(v, float) else v)}" for k, v in settings.items()]
    return f'<div class="settings">settings: {"; ".join(parts)}</div>'


def render(report: dict, folder: str | Path) -> str:
    """The report as one HTML document; figure files are read from ``folder`` and embedded."""
    folder = Path(folder)
    meta = report["meta"]
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in meta["summary"].items())
    toc = "".join(f'<li><a href="#{_esc(s["id"])}">{_esc(s["title"])}</a></li>' for s in report["sections"])
    parts = []
    for s in report["sections"]:
        status = s.get("status", "ok")
        tag = f'<span class="tag">{_esc(s["problem"])}</span>' if s.get("problem") else ""
        head = (f'<header>{tag}<h2>{_esc(s["title"])}</h2>'
                f'<span class="time">{s["seconds"]:.1f} s</span></header>')
        body = "".join(_block(b, folder) for b in s["blocks"])
        parts.append(f'<section id="{_esc(s["id"])}" class="status-{_esc(status)}" data-status="{_esc(status)}">'
                     f'{head}{_settings(s.get("settings", {}))}{body}</section>')
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
        f'initial-scale=1"><title>{_esc(meta["title"])}</title><style>{_CSS}</style></head>\n'
        f"<body><main><h1>{_esc(meta['title'])}</h1>"
        f'<table class="meta"><tbody>{rows}</tbody></table>'
        f"<nav><ol>{toc}</ol></nav>\n" + "\n".join(parts) + "\n</main></body></html>\n"
    )
