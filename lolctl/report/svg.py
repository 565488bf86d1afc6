"""Inline SVG charts for the HTML report: no scripts, no fonts, no network; every text from the input escaped.

Charts take plain numbers and labels; the page (``lolctl.report.html``) decides what to draw. Each chart's size is
linear in its input (one element per point, module role or label).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lolctl.errors import printable

PALETTE = ("#1f6fb2", "#e07b00", "#2e8b57", "#b03a8e", "#6a5acd", "#8c6d1f", "#00838f", "#c0392b")
SEVERITY_COLOR = {"error": "#c62828", "warning": "#e08e00", "info": "#1f6fb2", "none": "#2e8b57",
                  "unreadable": "#6d4c41"}


def esc(text: Any) -> str:
    """Untrusted text for HTML or SVG: one printable line (no control characters), markup characters escaped."""
    return html.escape(printable(str(text)), quote=True)


def num(x: Any) -> float | None:
    """A finite number from a record, else None (records are read from files: never trust a field's type)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def fmt(x: Any, digits: int = 3) -> str:
    value = num(x)
    return "–" if value is None else f"{value:.{digits}g}"


def _svg(width: int, height: int, body: list[str], label: str, cls: str = "chart") -> str:
    return (f'<svg class="{cls}" role="img" aria-label="{esc(label)}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}">' + "".join(body) + "</svg>")


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    decades = list(range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1))
    ticks = [10.0**d for d in decades if lo <= 10.0**d <= hi]
    if len(ticks) < 2:  # less than a decade: 1-2-5 steps
        ticks = [m * 10.0**d for d in decades for m in (1, 2, 5) if lo <= m * 10.0**d <= hi]
    return ticks


# ---------------------------------------------------------------------------------------------------- spectrum
def spectrum_chart(spec: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Two panels: σ_k over the modules (median line, min-max band, log scale) and σ₁ per module role over depth.
    Returns the SVG and the legend of the second panel as (colour, role) pairs."""
    lows, mids, highs = ([num(v) or 0.0 for v in spec.get(key) or []] for key in ("min", "median", "max"))
    roles = {str(k): [num(v) or 0.0 for v in vs]
             for k, vs in (spec.get("sigma1") or {}).items() if isinstance(vs, list)}
    top = max([*highs, *(v for vs in roles.values() for v in vs)], default=0.0)
    if top <= 0 or not mids or len(lows) != len(mids) or len(highs) != len(mids):
        return '<p class="muted">ΔW = 0 in every module: no singular values to draw.</p>', []
    floor = top * 1e-4
    lo_v, hi_v = max(floor, min([*lows, *(v for vs in roles.values() for v in vs)])), top
    lo_v, hi_v = 10 ** (math.log10(lo_v) - 0.05), 10 ** (math.log10(hi_v) + 0.05)
    W, H, top_m, bot_m = 660, 200, 22, 34
    panels = ((52, 300), (388, 636))

    def y(v: float) -> float:
        t = (math.log10(max(v, lo_v)) - math.log10(lo_v)) / (math.log10(hi_v) - math.log10(lo_v))
        return H - bot_m - t * (H - top_m - bot_m)

    body: list[str] = []
    for (x0, x1), title in zip(panels, ("σₖ over modules (median, min–max)", "σ₁ per module, by role")):
        body.append(f'<text x="{x0}" y="13" class="ct">{title}</text>')
        body.append(f'<line x1="{x0}" y1="{H - bot_m}" x2="{x1}" y2="{H - bot_m}" class="ax"/>')
        for t in _log_ticks(lo_v, hi_v):
            body.append(f'<line x1="{x0}" x2="{x1}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                        f'<text x="{x0 - 4}" y="{y(t) + 3:.1f}" class="tk" text-anchor="end">{t:.3g}</text>')
    (ax0, ax1), (bx0, bx1) = panels
    k = len(mids)

    def xk(i: int) -> float:
        return ax0 + (ax1 - ax0) * (0.5 if k == 1 else i / (k - 1))

    band = [f"{xk(i):.1f},{y(v):.1f}" for i, v in enumerate(highs)]
    band += [f"{xk(i):.1f},{y(v):.1f}" for i, v in reversed(list(enumerate(lows)))]
    body.append(f'<polygon points="{" ".join(band)}" class="band"/>' if k > 1 else
                f'<line x1="{xk(0)}" x2="{xk(0)}" y1="{y(lows[0]):.1f}" y2="{y(highs[0]):.1f}" class="whisk"/>')
    body.append(f'<polyline points="{" ".join(f"{xk(i):.1f},{y(v):.1f}" for i, v in enumerate(mids))}" class="med"/>')
    for i, v in enumerate(mids):
        body.append(f'<circle cx="{xk(i):.1f}" cy="{y(v):.1f}" r="2.2" class="medpt"><title>σ{i + 1}: median '
                    f"{v:.4g}, min {lows[i]:.4g}, max {highs[i]:.4g}</title></circle>")
    for i in sorted({0, k - 1, *range(0, k, max(1, math.ceil(k / 8)))}):
        body.append(f'<text x="{xk(i):.1f}" y="{H - bot_m + 13}" class="tk" text-anchor="middle">{i + 1}</text>')
    body.append(f'<text x="{(ax0 + ax1) / 2}" y="{H - 6}" class="tk" text-anchor="middle">index k</text>')
    legend = []
    for j, (role, vs) in enumerate(roles.items()):
        color = PALETTE[j % len(PALETTE)]
        legend.append((color, role))
        xs = [bx0 + (bx1 - bx0) * (0.5 if len(vs) == 1 else i / (len(vs) - 1)) for i in range(len(vs))]
        pts = " ".join(f"{x:.1f},{y(v):.1f}" for x, v in zip(xs, vs))
        body.append(f'<g><title>{esc(role)}: {len(vs)} module(s), σ₁ {min(vs):.4g} … {max(vs):.4g}</title>'
                    f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.6"/>'
                    + "".join(f'<circle cx="{x:.1f}" cy="{y(v):.1f}" r="1.8" fill="{color}"/>' for x, v in zip(xs, vs))
                    + "</g>")
    body.append(f'<text x="{bx0}" y="{H - bot_m + 13}" class="tk">first layer</text>'
                f'<text x="{bx1}" y="{H - bot_m + 13}" class="tk" text-anchor="end">last layer</text>')
    return _svg(W, H, body, "singular-value spectrum"), legend


# ---------------------------------------------------------------------------------------------------- predictions
@dataclass(frozen=True)
class Point:
    label: str  # the adapter's source (untrusted)
    anchor: str  # id of its section in the page (made by the page, never from the input)
    value: float
    lo: float | None
    hi: float | None
    ood: bool


def interval_chart(points: Sequence[Point], thresholds: Sequence[tuple[str, float]] = ()) -> str:
    """One mark per adapter, sorted by predicted value, with its interval; OOD adapters in orange; gate thresholds
    as dashed lines. Each mark links to the adapter's section and names it on hover."""
    pts = sorted(points, key=lambda p: p.value)
    ys = [v for p in pts for v in (p.value, p.lo, p.hi) if v is not None] + [t for _, t in thresholds]
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.06 or max(abs(hi) * 0.1, 0.05)
    lo, hi = lo - pad, hi + pad
    W, H, L, R, T, B = 1000, 250, 56, 12, 12, 34

    def y(v: float) -> float:
        return T + (hi - v) / (hi - lo) * (H - T - B)

    step = (W - L - R) / len(pts)
    radius = 3.2 if step >= 8 else 2.2 if step >= 3 else 1.4
    body = []
    for t in _nice_ticks(lo, hi):
        body.append(f'<line x1="{L}" x2="{W - R}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                    f'<text x="{L - 5}" y="{y(t) + 3:.1f}" class="tk" text-anchor="end">{t:.3g}</text>')
    body.append(f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" class="ax"/>')
    for text, t in thresholds:
        body.append(f'<line x1="{L}" x2="{W - R}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="thr"/>'
                    f'<text x="{W - R - 2}" y="{y(t) - 4:.1f}" class="thrt" text-anchor="end">{esc(text)}</text>')
    for i, p in enumerate(pts):
        x = L + (i + 0.5) * step
        interval = "" if p.lo is None or p.hi is None else f" [{p.lo:.3g}, {p.hi:.3g}]"
        whisker = "" if p.lo is None or p.hi is None else (
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(p.lo):.1f}" y2="{y(p.hi):.1f}" class="whisk"/>')
        body.append(f'<a href="#{p.anchor}"><g class="{"pt ood" if p.ood else "pt"}"><title>{esc(p.label)}: '
                    f'{p.value:.3g}{interval}{" (out of distribution)" if p.ood else ""}</title>{whisker}'
                    f'<circle cx="{x:.1f}" cy="{y(p.value):.1f}" r="{radius}"/></g></a>')
    body.append(f'<text x="{(L + W - R) / 2}" y="{H - 10}" class="tk" text-anchor="middle">{len(pts)} adapter(s), '
                "sorted by predicted value · orange: out of distribution · lines: intervals · hover a mark for its "
                "name, click it to open its section</text>")
    return _svg(W, H, body, "predictions with intervals")


def label_chart(rows: Sequence[tuple[str, float, int]], total: int, what: str) -> str:
    """Horizontal bars, one per label: the mean probability over the adapters, and how many adapters ``what``
    (e.g. 'have p ≥ 0.5' or 'rank it first')."""
    W, row, L = 1000, 20, 200
    H = row * len(rows) + 24
    body = []
    for x in (0.0, 0.25, 0.5, 0.75, 1.0):
        gx = L + x * (W - L - 170)
        body.append(f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="4" y2="{H - 18}" class="grid"/>'
                    f'<text x="{gx:.1f}" y="{H - 6}" class="tk" text-anchor="middle">{x:g}</text>')
    for i, (label, mean, count) in enumerate(rows):
        top = 6 + i * row
        shown = label if len(label) <= 30 else label[:29] + "…"
        body.append(f'<g><title>{esc(label)}: mean probability {mean:.2f}; {count}/{total} {esc(what)}</title>'
                    f'<text x="{L - 6}" y="{top + 12}" class="lb" text-anchor="end">{esc(shown)}</text>'
                    f'<rect x="{L}" y="{top + 2}" width="{mean * (W - L - 170):.1f}" height="{row - 6}" class="bar"/>'
                    f'<text x="{W - 162}" y="{top + 12}" class="tk">{mean:.2f} · {count}/{total} {esc(what)}</text>'
                    "</g>")
    return _svg(W, H, body, "label probabilities")


def severity_bar(counts: Sequence[tuple[str, int]]) -> str:
    """One stacked bar: adapters by their worst finding (and unreadable ones), each segment titled."""
    total = sum(c for _, c in counts) or 1
    W, x, body = 1000, 0.0, []
    for name, count in counts:
        if count:
            width = W * count / total
            body.append(f'<rect x="{x:.2f}" y="0" width="{width:.2f}" height="18" fill="{SEVERITY_COLOR[name]}">'
                        f"<title>{esc(name)}: {count}</title></rect>")
            x += width
    return _svg(W, 18, body, "adapters by worst finding", "chart stretch")
