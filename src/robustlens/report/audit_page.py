"""The audit page: one self-contained HTML file (inline style and script, figures as ``data:`` PNG URIs) from
``audit.json``'s dict. The leaderboard table sorts on a click on its headers (plain JavaScript, numbers by
their ``data-v`` value)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from robustlens.report.html import _CSS

_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, col) {
    th.style.cursor = 'pointer';
    th.addEventListener('click', function () {
      var body = t.tBodies[0], rows = Array.from(body.rows);
      var dir = th.getAttribute('data-dir') === 'desc' ? 'asc' : 'desc';
      t.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', dir);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y), c;
        if (!isNaN(nx) && !isNaN(ny)) { c = nx - ny; } else { c = String(x).localeCompare(String(y)); }
        return dir === 'asc' ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
_EXTRA_CSS = ("th[data-dir=desc]::after { content: ' ▼'; } th[data-dir=asc]::after { content: ' ▲'; } "
              ".wide { overflow-x: auto; } td small { color: var(--muted); white-space: nowrap; }")


def _png(fig) -> str:
    from robustlens.plots import plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _pct(a: dict) -> str:
    lo, hi = a["ci95"]
    return f"{100 * a['accuracy']:.1f}% <small>[{100 * lo:.1f}, {100 * hi:.1f}]</small>"


def curve_figure(result: dict) -> str:
    """Robust accuracy against ε (AutoAttack solid with 95% interval bars, PGD dashed), every model."""
    from robustlens.plots import plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (label, m) in enumerate(result["models"].items()):
        xs = [0.0] + [a["eps"] for a in m["autoattack"]]
        rows = [m["clean"]] + [a["robust"] for a in m["autoattack"]]
        ys = [r["accuracy"] for r in rows]
        err = [[y - r["ci95"][0] for y, r in zip(ys, rows)], [r["ci95"][1] - y for y, r in zip(ys, rows)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=f"C{k}", label=f"{label} AutoAttack")
        ax.plot(xs, [m["clean"]["accuracy"]] + [r["accuracy"] for r in m["pgd"]["robust"]], "--", marker="x",
                color=f"C{k}", alpha=0.7, label=f"{label} PGD-{m['pgd']['steps']}")
    ax.set_xlabel(f"ε ({result['norm']}, pixel units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def breakdown_figure(m: dict) -> str:
    """Accuracy after each attack of AutoAttack, one line per ε."""
    from robustlens.plots import plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for a in m["autoattack"]:
        names = list(a["after"])
        ax.plot(["clean", *names], [m["clean"]["accuracy"]] + [a["after"][n]["accuracy"] for n in names],
                marker="o", label=f"ε={a['eps']:g}")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def reliability_figure(m: dict) -> str:
    """Reliability diagrams: accuracy against confidence per bin, clean and under attack at each ε."""
    from robustlens.plots import plt

    cal = m["calibration"]
    panels = [("clean", cal["clean"])] + [(f"AutoAttack ε={c['eps']:g}", c) for c in cal["under_attack"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 2.9), squeeze=False)
    for ax, (title, c) in zip(axes[0], panels):
        bins = [b for b in c["bins"] if b["count"]]
        ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=1 / len(c["bins"]),
               edgecolor="k", linewidth=0.4, alpha=0.8)
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}\nECE {c['ece']:.3f}", fontsize=8)
        ax.set_xlabel("confidence", fontsize=7)
    axes[0][0].set_ylabel("accuracy", fontsize=7)
    return _png(fig)


def maps_figure(ex: dict) -> str:
    """The first images and their |saliency| (scaled by its 99th percentile)."""
    import numpy as np

    from robustlens.plots import plt

    k = len(ex["maps"])
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k, 3.3), squeeze=False)
    for c in range(k):
        img = np.asarray(ex["inputs"][c], dtype=np.uint8).transpose(1, 2, 0)
        axes[0][c].imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray")
        axes[1][c].imshow(np.asarray(ex["maps"][c], dtype=np.uint8), cmap="gray")
        for r in (0, 1):
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
    axes[0][0].set_ylabel("image", fontsize=7)
    axes[1][0].set_ylabel("|saliency|", fontsize=7)
    return _png(fig)


def sanity_figure(ex: dict) -> str:
    from robustlens.plots import plt

    s = ex["sanity"]
    ys = s["mean_spearman"]["cascading"]["saliency"]
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    ax.plot(range(len(ys)), ys, "-o")
    ax.axhline(s["threshold"], color="grey", ls=":")
    ax.set_xticks(range(len(ys)))
    ax.set_xticklabels(s["stages"], rotation=60, fontsize=7)
    ax.set_ylabel("Spearman with the original map")
    ax.set_ylim(-0.2, 1.05)
    ax.set_title(f"saliency, cascading randomisation: {s['verdict']['saliency']}", fontsize=8)
    return _png(fig)


def leaderboard(result: dict) -> str:
    """The side-by-side table: one row per model, sortable."""
    eps = result["eps"]
    head = ["model", "clean"] + [f"AutoAttack ε={e:g}" for e in eps] + [f"PGD ε={e:g}" for e in eps] + \
        ["ECE clean", f"ECE ε={eps[-1]:g}", "gradient–edge ρ", "sanity", "flags", "seconds"]
    rows = []
    for label, m in result["models"].items():
        ex = m.get("explain") or {}
        cells = [(label, label), (m["clean"]["accuracy"], _pct(m["clean"]))]
        cells += [(a["robust"]["accuracy"], _pct(a["robust"])) for a in m["autoattack"]]
        cells += [(r["accuracy"], _pct(r)) for r in m["pgd"]["robust"]]
        ece = [m["calibration"]["clean"]["ece"], m["calibration"]["under_attack"][-1]["ece"]]
        cells += [(v, f"{v:.3f}") for v in ece]
        rho = ex.get("alignment", {}).get("spearman", {}).get("mean")
        cells.append((rho if rho is not None else "", f"{rho:.3f}" if rho is not None else "–"))
        verdict = ex.get("sanity", {}).get("verdict", {}).get("saliency", "–")
        cells += [(verdict, verdict), (len(m["flags"]), ", ".join(f["code"] for f in m["flags"]) or "none")]
        cells.append((m["cost"]["total"]["seconds"], f"{m['cost']['total']['seconds']:.1f}"))
        rows.append("<tr>" + "".join(f'<td data-v="{html.escape(str(v))}">{t if i else html.escape(t)}</td>'
                                     for i, (v, t) in enumerate(cells)) + "</tr>")
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return (f'<div class="wide"><table class="sortable" id="leaderboard"><thead><tr>{heads}</tr></thead><tbody>'
            f'{"".join(rows)}</tbody></table></div>')


def _model_section(label: str, m: dict) -> str:
    parts = [f"<section><header><h2>{html.escape(label)}</h2><span class='tag'>{html.escape(str(m['weights']))}"
             "</span></header>"]
    parts.append("<table><tr><th>ε</th><th>after " + "</th><th>after ".join(m["autoattack"][0]["after"]) +
                 "</th><th>broken by (clean / attack / robust)</th></tr>")
    for a, bd in zip(m["autoattack"], m["breakdown"]):
        tally = ", ".join(f"{k} {v}" for k, v in bd["broken_by"].items())
        parts.append(f"<tr><td>{a['eps']:g}</td>" + "".join(f"<td>{_pct(v)}</td>" for v in a["after"].values())
                     + f"<td>{html.escape(tally)}</td></tr>")
    parts.append("</table>")
    flags = "".join(f"<li><b>{html.escape(f['code'])}</b>: {html.escape(f['message'])}</li>" for f in m["flags"])
    parts.append(f"<p>Gradient-masking flags: {'<ul>' + flags + '</ul>' if flags else 'none raised.'}</p>")
    figs = [_img(breakdown_figure(m), "accuracy after each attack"),
            _img(reliability_figure(m), "reliability diagrams (clean, under attack)")]
    ex = m.get("explain")
    if ex:
        al = ex["alignment"]
        parts.append(f"<p>Gradient alignment on {ex['images']} images: Spearman(|saliency|, Sobel edges) "
                     f"{al['spearman']['mean']:.3f} ± {al['spearman']['sd']:.3f}, SSIM {al['ssim']['mean']:.3f}, "
                     f"|cos(gradient, centred image)| {al['cosine']['mean']:.3f}. Saliency randomisation check: "
                     f"cascade mean Spearman {ex['sanity']['cascade_mean_spearman']['saliency']:.3f} "
                     f"(pass below {ex['sanity']['threshold']:g}): <b>{ex['sanity']['verdict']['saliency']}</b>.</p>")
        figs += [_img(maps_figure(ex), "images and |saliency|"), _img(sanity_figure(ex), "randomisation check")]
    parts.append(f"<div class='figs'>{''.join(figs)}</div>")
    cost = "".join(f"<tr><td>{html.escape(k)}</td><td class='num'>{v['seconds']:.1f}</td><td class='num'>"
                   f"{v['forward']}</td><td class='num'>{v['backward']}</td><td class='num'>"
                   f"{v.get('incremental', 0)}</td></tr>" for k, v in m["cost"]["parts"].items())
    ips = m["cost"]["autoattack_images_per_second"]
    parts.append("<details><summary>cost</summary><table><tr><th>part</th><th>seconds</th><th>image-forward "
                 "passes</th><th>image-backward passes</th><th>incremental image queries (Square L∞: a window of "
                 f"each layer)</th></tr>{cost}</table><p>AutoAttack: "
                 f"{(f'{ips:.2f}' if ips else '–')} images·ε per second.</p></details>")
    per = json.dumps(m["per_example"])
    parts.append(f"<details><summary>which attack broke each example</summary><pre>{html.escape(per)}</pre>"
                 "</details></section>")
    return "".join(parts)


def render(result: dict) -> str:
    eps = ", ".join(f"{e:g}" for e in result["eps"])
    first = next(iter(result["models"].values()))
    body = [f"<h1>robustlens audit</h1><p>{len(result['models'])} model(s), {first['n']} examples, "
            f"{html.escape(result['norm'])} ε = {eps}. Every accuracy has its 95% Wilson score interval in "
            "brackets; AutoAttack is the standard version (APGD-CE, APGD-T, FAB-T, Square), the accuracy at ε the "
            "worst case over every ε' ≤ ε. ECE: 15 equal-width confidence bins.</p>",
            "<section><header><h2>Leaderboard</h2><span class='time'>click a header to sort</span></header>",
            leaderboard(result), f"<div class='figs'>{_img(curve_figure(result), 'robust accuracy against ε')}"
            "</div></section>"]
    body += [_model_section(label, m) for label, m in result["models"].items()]
    manifest, run = (html.escape(json.dumps(result[k], indent=1)) for k in ("manifest", "run"))
    body.append(f"<section><header><h2>Manifest</h2></header><details><summary>every setting, to rerun it exactly"
                f"</summary><pre>{manifest}</pre></details><details><summary>this run: wall time, units computed "
                f"and reused from the journal, load average</summary><pre>{run}</pre></details></section>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>robustlens audit</title>"
            f"<style>{_CSS}{_EXTRA_CSS}</style></head><body><main>{''.join(body)}</main>"
            f"<script>{_SCRIPT}</script></body></html>")


def write_page(result: dict, path: Path) -> Path:
    from robustlens.robust.audit.journal import atomic_write

    atomic_write(path, render(result))
    return path
