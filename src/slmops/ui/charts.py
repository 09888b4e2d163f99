"""Line charts as inline SVG geometry, computed here and drawn by a template macro (so every
label goes through the template's escaping). No JavaScript, no chart library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 560, 170
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 30, 12, 26
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed")


@dataclass
class Point:
    x: float
    y: float
    label: str  # the tooltip: when and the value


@dataclass
class Series:
    name: str
    color: str
    segments: list[list[Point]] = field(default_factory=list)  # broken where data is missing

    @property
    def points(self) -> list[Point]:
        return [point for segment in self.segments for point in segment]

    def polylines(self) -> list[str]:
        """Each segment as the ``points`` attribute of an SVG polyline."""
        return [" ".join(f"{p.x:.1f},{p.y:.1f}" for p in segment) for segment in self.segments]


@dataclass
class Tick:
    y: float
    label: str


@dataclass
class LineChart:
    title: str
    series: list[Series]
    y_ticks: list[Tick]
    x_labels: list[tuple[float, str, str]]  # x, text, text-anchor
    width: int = WIDTH
    height: int = HEIGHT
    left: int = _LEFT
    bottom_y: float = HEIGHT - _BOTTOM
    right_x: float = WIDTH - _RIGHT

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


def line_chart(
    title: str,
    x_labels: Sequence[str],
    values: dict[str, Sequence[float | None]],
    *,
    fmt: Callable[[float], str],
    y_max: float | None = None,
) -> LineChart:
    """A chart of one or more series over the same windows (``x_labels``, oldest first);
    None is a gap. The y axis runs from 0 to ``y_max`` (default: the largest value)."""
    present = [v for series in values.values() for v in series if v is not None]
    top = y_max if y_max is not None else max(present, default=0.0)
    top = top if top > 0 else 1.0
    count = len(x_labels)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x_of(index: int) -> float:
        return _LEFT + (plot_w * index / (count - 1) if count > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        return _TOP + plot_h * (1 - min(value, top) / top)

    drawn = []
    for number, (name, series_values) in enumerate(values.items()):
        series = Series(name, PALETTE[number % len(PALETTE)])
        current: list[Point] = []
        for index, value in enumerate(series_values):
            if value is None:
                if current:
                    series.segments.append(current)
                current = []
                continue
            label = f"{x_labels[index]} · {name}: {fmt(value)}"
            current.append(Point(x_of(index), y_of(value), label))
        if current:
            series.segments.append(current)
        drawn.append(series)
    ticks = [Tick(y_of(top * f), fmt(top * f)) for f in (0.0, 0.5, 1.0)]
    chosen = sorted({0, count // 2, count - 1}) if count else []
    return LineChart(
        title=title,
        series=drawn,
        y_ticks=ticks,
        x_labels=[
            (x_of(i), x_labels[i], "start" if i == 0 else "end" if i == count - 1 else "middle")
            for i in chosen
        ],
    )
