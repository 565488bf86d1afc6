"""A small singular-value spectrum per adapter, kept in scan / score / gate records (`spectrum`, docs/schema.md) so
the HTML report can draw it without the per-module statistics that scan and gate records leave out.

From the per-module statistics of :func:`lolctl.health.module_stats` (finite modules only):
- ``min`` / ``median`` / ``max``: for each singular-value index k = 1 … K (K ≤ ``MAX_INDEX``), σ_k over the modules
  that have a k-th singular value;
- ``sigma1``: σ₁ of every module grouped by role (layer numbers folded, ``layer.*.attention.self.query``), in the
  adapter's module order, so a role reads as a profile over depth.

Values keep ``DIGITS`` significant digits. Pure Python on plain dicts: no torch, so reports render without it.
"""

from __future__ import annotations

import statistics
from typing import Any

from lolctl.report.health import module_group

MAX_INDEX = 64  # singular-value indices kept (ranks above this are cut: the tail is drawn from the first 64)
DIGITS = 4


def _round(x: float) -> float:
    return float(f"{x:.{DIGITS}g}")


def spectrum(modules: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record's ``spectrum`` from per-module statistics; None when no module has singular values."""
    values = [m["singular_values"] for m in modules if m.get("singular_values")]
    if not values:
        return None
    depth = min(MAX_INDEX, max(len(s) for s in values))
    columns = [[float(s[k]) for s in values if len(s) > k] for k in range(depth)]
    sigma1: dict[str, list[float]] = {}
    for m in modules:
        if m.get("singular_values"):
            sigma1.setdefault(module_group(m["name"]), []).append(_round(float(m["singular_values"][0])))
    return {
        "modules": len(values),
        "min": [_round(min(c)) for c in columns],
        "median": [_round(statistics.median(c)) for c in columns],
        "max": [_round(max(c)) for c in columns],
        "sigma1": sigma1,
    }
