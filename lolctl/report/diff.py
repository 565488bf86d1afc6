"""Rich rendering of a diff document (`lolctl diff`, human mode): overall figures, then one row per module."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from lolctl.errors import printable
from lolctl.report.health import common_prefix


def _angle(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}°"


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _rel(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2e}" if x < 0.01 else f"{x:.3f}")


def diff_renderables(doc: dict[str, Any]) -> list[RenderableType]:
    """A diff document (lolctl.diff/v1) as Rich renderables: overall figures, per-module table, one-sided modules."""
    out: list[RenderableType] = []
    o = doc["overall"]
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column("key", style="bold", no_wrap=True)
    head.add_column("value", overflow="fold")
    rows = [
        ("a", printable(doc["a"])),
        ("b", printable(doc["b"])),
        ("cosine", _num(o["cosine"], 6)),
        ("‖ΔW_a − ΔW_b‖/‖ΔW_a‖", _rel(o["rel_diff"])),
        ("‖ΔW_a‖, ‖ΔW_b‖", f"{o['norm_a']:.4g}, {o['norm_b']:.4g}"),
        ("largest angle", f"columns {_angle(o['max_col_angle_deg'])}, rows {_angle(o['max_row_angle_deg'])}"),
        ("modules", "; ".join([f"{o['common_modules']} in both"] + [
            f"{n} {label}" for n, label in ((len(doc["only_a"]), "in a only"), (len(doc["only_b"]), "in b only"),
                                           (len(doc["mismatched"]), "of different shapes")) if n])),
    ]
    for key, value in rows:
        head.add_row(key, Text(value))
    out.append(head)
    if doc["modules"]:
        names = [m["name"] for m in doc["modules"]]
        prefix = common_prefix(names) if len(names) > 1 else ""
        title = "per module" + (f" after '{printable(prefix)}'" if prefix else "")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        table.add_column("module", overflow="fold", ratio=1)
        table.add_column("cosine", no_wrap=True, justify="right")
        table.add_column("rel. diff", no_wrap=True, justify="right")
        table.add_column("∠col", no_wrap=True, justify="right")
        table.add_column("∠row", no_wrap=True, justify="right")
        table.add_column("ranks", no_wrap=True, justify="right")
        for m in doc["modules"]:
            table.add_row(Text(printable(m["name"][len(prefix):])), _num(m["cosine"], 6), _rel(m["rel_diff"]),
                          _angle(max(m["col_angles_deg"], default=None)),
                          _angle(max(m["row_angles_deg"], default=None)), f"{m['rank_a']}/{m['rank_b']}")
        out.append(table)
    for label, names in (("only in a", doc["only_a"]), ("only in b", doc["only_b"]),
                         ("different shapes", [d["name"] for d in doc["mismatched"]])):
        if names:
            out.append(Text(f"{label}: " + ", ".join(printable(n) for n in names)))
    return out
