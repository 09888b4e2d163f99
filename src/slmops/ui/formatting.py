"""Template filters: times, durations, shares and JSON the way every console page shows them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def when(seconds: float | None) -> str:
    """A stored unix time as local date and time (as the CLI's listings show it)."""
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def milliseconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def pretty_json(value: Any) -> str:
    """Stored attribute values are often JSON text: shown indented when they parse."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
        if isinstance(value, str):
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def parse_json_object(text: Any) -> dict[str, Any]:
    """A JSON-object attribute (``slmops.stack.corpora``...) as a dict; {} when it is not."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


FILTERS = {
    "when": when,
    "ms": milliseconds,
    "share": share,
    "number": number,
    "pretty_json": pretty_json,
}
