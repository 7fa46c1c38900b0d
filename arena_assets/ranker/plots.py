"""Small charts for metadata: an SVG line chart embedded in markdown (no plotting dependency)."""

from __future__ import annotations

import base64
from collections.abc import Sequence


def line_chart_svg(
    points: Sequence[tuple[float, float]], *, width: int = 480, height: int = 160, label: str = "loss"
) -> str:
    """An SVG polyline of (x, y) points with min/max labels."""
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 28
    coords = " ".join(
        f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},"
        f"{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}"
        for x, y in zip(xs, ys, strict=True)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>'
        f'<polyline fill="none" stroke="#4f43dd" stroke-width="1.5" points="{coords}"/>'
        f'<text x="2" y="{pad - 6}">{label} {y1:.3g}</text><text x="2" y="{height - 6}">{y0:.3g} '
        f"(step {x0:g}..{x1:g})</text></svg>"
    )


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
    svg = base64.b64encode(line_chart_svg(sampled).encode()).decode()
    return (
        f"![training loss](data:image/svg+xml;base64,{svg})\n\n"
        f"Loss {curve[0][1]:.4f} at step {curve[0][0]} → {curve[-1][1]:.4f} at step {curve[-1][0]}."
    )
