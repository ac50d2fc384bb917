"""Table cells shared by the report and the probes' rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fmt(value: Any) -> str:
    """A number as the tables show it: floats with 2 decimals, None as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def pair(values: Mapping[str, Any], a: str, b: str) -> str:
    """'<a> / <b>' of two entries of `values`."""
    return f"{fmt(values[a])} / {fmt(values[b])}"
