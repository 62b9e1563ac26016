"""Line charts as inline SVG: the HTML page needs no script library and no network."""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]
DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 5"]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def line_chart(series: list[dict], title: str, ylabel: str, xlabel: str = "step", width: int = 560,
               height: int = 300) -> str:
    """series: [{label, color, dash, points: [(x, y)]}]; non-finite y values break the line."""
    left, right, top, bottom = 58, 12, 28, 40
    pts = [(x, y) for s in series for x, y in s["points"] if math.isfinite(y)]
    if not pts:
        return (f'<svg class="chart empty" width="{width}" height="{height}" role="img"><text x="20" y="40">'
                f"{escape(title)}: no finite values</text></svg>")
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    w, h = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / (x1 - x0) * w

    def sy(y):
        return top + (1 - (y - y0) / (y1 - y0)) * h

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text class="title" x="{left}" y="18">{escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#bbb"/>']
    for t in nice_ticks(y0, y1):
        y = sy(t)
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in nice_ticks(x0, x1):
        if float(t).is_integer() or x1 - x0 < 10:
            x = sx(t)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + h}" y2="{top + h + 4}" stroke="#999"/>'
                         f'<text class="tick" x="{x:.1f}" y="{top + h + 16}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<text class="axis" x="{left + w / 2}" y="{height - 6}" text-anchor="middle">{escape(xlabel)}</text>'
                 f'<text class="axis" transform="translate(14 {top + h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(ylabel)}</text>')
    for s in series:
        label = escape(s["label"])
        dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
        parts.append(f'<g class="series" data-run="{label}">')
        segment: list[str] = []
        segments = []
        for x, y in s["points"]:
            if math.isfinite(y):
                segment.append(f"{sx(x):.1f},{sy(y):.1f}")
            elif segment:
                segments.append(segment)
                segment = []
        if segment:
            segments.append(segment)
        for seg in segments:
            parts.append(f'<polyline fill="none" stroke="{s["color"]}" stroke-width="1.8"{dash} '
                         f'points="{" ".join(seg)}"/>')
        for x, y in s["points"]:
            if math.isfinite(y):
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{s["color"]}">'
                             f"<title>{label} · step {_fmt(x)} · {_fmt(y)}</title></circle>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
