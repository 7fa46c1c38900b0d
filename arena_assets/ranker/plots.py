"""Small charts for metadata: SVG line charts with axes, embedded in markdown (no plotting dependency)."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    span = (high - low) or abs(high) or 1.0
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def line_chart_svg(
    series: Sequence[Sequence[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    width: int = 520,
    height: int = 240,
    colors: Sequence[str] = ("#4f43dd", "#999999"),
    dashed: Sequence[bool] = (False, True),
) -> str:
    """An SVG line chart of one or more (x, y) series, with labelled, ticked axes."""
    points = [p for line in series for p in line]
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    left, right, top, bottom = 56, 12, 12, 40
    x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
    y0, y1 = min(y for _, y in points), max(y for _, y in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif"'
        f' font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
    ]
    for x in _ticks(x0, x1):
        parts.append(
            f'<line x1="{sx(x):.1f}" y1="{height - bottom}" x2="{sx(x):.1f}" y2="{height - bottom + 4}" '
            f'stroke="#333"/><text x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:g}'
            "</text>"
        )
    for y in _ticks(y0, y1):
        parts.append(
            f'<line x1="{left - 4}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">{x_label}</text>'
    )
    parts.append(
        f'<text transform="translate(14,{(top + height - bottom) / 2}) rotate(-90)" '
        f'text-anchor="middle">{y_label}</text>'
    )
    for line, color, dash in zip(series, colors, dashed, strict=False):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        style = ' stroke-dasharray="4 3"' if dash else ""
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{style} points="{coords}"/>')
    return "".join(parts) + "</svg>"


def svg_markdown(svg: str, alt: str) -> str:
    """An SVG as an inline markdown image."""
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


def smoothed(curve: Sequence[tuple[int, float]], *, window: int) -> list[tuple[int, float]]:
    """Trailing moving average over `window` steps (per-step loss on small batches is noisy)."""
    out, total = [], 0.0
    for i, (step, value) in enumerate(curve):
        total += value
        if i >= window:
            total -= curve[i - window][1]
        out.append((step, total / min(i + 1, window)))
    return out


def loss_curve_markdown(curve: Sequence[tuple[int, float]], *, max_points: int = 200) -> str:
    """Markdown with the loss curve (moving average) as an inline SVG image and a first/last summary line."""
    if not curve:
        return "No training steps were run."
    window = max(1, len(curve) // 50)
    stride = max(1, len(curve) // max_points)
    sampled = list(smoothed(curve, window=window)[::stride])
    if sampled[-1][0] != curve[-1][0]:
        sampled.append(smoothed(curve, window=window)[-1])
    svg = line_chart_svg([sampled], x_label="optimizer step", y_label=f"loss (mean of {window} steps)")
    return (
        f"{svg_markdown(svg, 'training loss')}\n\n"
        f"Loss {curve[0][1]:.4f} at step {curve[0][0]} → {curve[-1][1]:.4f} at step {curve[-1][0]}."
    )


def reliability_markdown(bins: Sequence[tuple[float, float, int]]) -> str:
    """A reliability diagram: accuracy against confidence per bin ((confidence, accuracy, rows) each)."""
    used = [(c, a) for c, a, n in bins if n]
    if not used:
        return "No rows to plot."
    svg = line_chart_svg(
        [used, [(0.5, 0.5), (1.0, 1.0)]], x_label="confidence (both orders averaged)", y_label="accuracy"
    )
    rows = "\n".join(f"| {c:.3f} | {a:.3f} | {n} |" for c, a, n in bins if n)
    return (
        f"{svg_markdown(svg, 'reliability')}\n\nThe dashed line is perfect calibration.\n\n"
        f"| confidence | accuracy | rows |\n|---|---|---|\n{rows}"
    )
