"""The loss curve of a run as a standalone SVG (no plotting library, nothing fetched)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

_W, _H = 720, 360
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 24, 40, 48


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def loss_svg(
    title: str,
    train: Sequence[tuple[int, float]],
    heldout: Sequence[tuple[int, float]] = (),
) -> str:
    """Training loss per optimizer step (line) and held-out loss at each epoch's end (dots);
    values that are not finite numbers (a diverged step) are left out."""
    train = [(s, v) for s, v in train if math.isfinite(v)]
    heldout = [(s, v) for s, v in heldout if math.isfinite(v)]
    points = [*train, *heldout]
    if not points:
        raise ValueError("no loss values to plot")
    max_step = max(max(s for s, _ in points), 1)
    low = min(v for _, v in points)
    high = max(v for _, v in points)
    pad = (high - low) * 0.08 or 0.5
    low, high = max(0.0, low - pad), high + pad
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(step: float) -> float:
        return _LEFT + width * step / max_step

    def y(value: float) -> float:
        return _TOP + height * (1 - (value - low) / (high - low))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_LEFT}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in _ticks(low, high):
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#e5e5e5"/>'
            f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    for tick in _ticks(0, max_step):
        parts.append(
            f'<text x="{x(tick):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<text x="{_LEFT + width / 2}" y="{_H - 10}" text-anchor="middle">optimizer step</text>'
        f'<text x="16" y="{_TOP + height / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {_TOP + height / 2})">loss</text>'
        f'<rect x="{_LEFT}" y="{_TOP}" width="{width}" height="{height}" fill="none" '
        'stroke="#999"/>'
    )
    if train:
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in train)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#2b6cb0" stroke-width="1.5"/>')
    if heldout:
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in heldout)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#c05621" stroke-width="2"/>')
        parts += [
            f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="4" fill="#c05621"/>' for s, v in heldout
        ]
    legend_x = _W - _RIGHT - 170
    parts.append(
        f'<line x1="{legend_x}" x2="{legend_x + 24}" y1="{_TOP + 14}" y2="{_TOP + 14}" '
        'stroke="#2b6cb0" stroke-width="2"/>'
        f'<text x="{legend_x + 30}" y="{_TOP + 18}">training loss</text>'
        f'<circle cx="{legend_x + 12}" cy="{_TOP + 32}" r="4" fill="#c05621"/>'
        f'<text x="{legend_x + 30}" y="{_TOP + 36}">held-out loss (epoch end)</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
