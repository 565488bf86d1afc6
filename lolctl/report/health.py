"""Rich tables of health reports (human mode only): summary, findings, modules. Readable at 80 columns."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lolctl.errors import printable
from lolctl.factors import Finding

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_LAYER = re.compile(r"(?<=[._])\d+(?=[._]|$)")


def module_group(name: str) -> str:
    """`encoder.layer.3.attention.self.query` -> `encoder.layer.*.attention.self.query` (layers grouped)."""
    return _LAYER.sub("*", name)


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def findings_table(findings: list[Finding] | list[dict[str, Any]]) -> Table:
    table = Table(title="findings", title_justify="left", expand=False, show_lines=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("finding", overflow="fold")
    for f in findings:
        d = f.to_dict() if isinstance(f, Finding) else f
        style = SEVERITY_STYLE.get(d["severity"], "")
        message = escape(d["message"]) + (f"  [dim]→ {escape(d['remedy'])}[/dim]" if d.get("remedy") else "")
        table.add_row(Text(d["severity"], style=style), d["code"], message)
    return table


def summary_table(source: str, summary: dict[str, Any]) -> Group:
    """The source as a heading line (never wrapped into the table's width), then key/value rows."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    ranks = summary.get("ranks") or []
    bad = summary.get("nonfinite_modules") or 0
    over = f" (all but {bad} NaN/Inf)" if bad else " (all)"  # a NaN module is left out of the totals: say so
    rows = [
        ("format", summary.get("format")),
        ("base model", summary.get("base_model")),
        ("modules", f"{summary.get('modules')} (rank {', '.join(map(str, ranks)) or '-'})"),
        ("parameters", f"{summary.get('parameters'):,}" if summary.get("parameters") is not None else None),
        ("tensor bytes", human_bytes(summary.get("bytes"))),
        ("‖ΔW‖_F" + over, fmt(summary.get("delta_fro_norm"))),
        ("max σ₁", fmt(summary.get("max_spectral_norm"))),
        ("stable / eff. rank", f"{fmt(summary.get('mean_stable_rank'))} / {fmt(summary.get('mean_effective_rank'))}"),
    ]
    for key, value in rows:
        table.add_row(key, "-" if value is None else escape(str(value)))
    return Group(Text(printable(source), style="bold underline", overflow="fold"), table)


def common_prefix(names: list[str]) -> str:
    """The dotted prefix shared by every name, ending with a dot; the last segment of a name is never included."""
    if not names:
        return ""
    parts = [n.split(".") for n in names]
    shared: list[str] = []
    for segs in zip(*parts):
        if len(set(segs)) != 1:
            break
        shared.append(segs[0])
    if any(len(p) == len(shared) for p in parts):  # never swallow a whole name
        shared = shared[:-1]
    return ".".join(shared) + "." if shared else ""


def modules_table(modules: list[dict[str, Any]], grouped: bool = True) -> Table:
    """One row per module group (layers folded into `*`), or per module when not grouped. The prefix every row
    shares goes into the title so the names keep their width at 80 columns."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in modules:
        groups[module_group(m["name"]) if grouped else m["name"]].append(m)
    prefix = common_prefix(list(groups))
    title = f"modules under {escape(printable(prefix))}" if prefix else "modules"
    title += " (layers grouped; --modules lists each)" if grouped else ""
    table = Table(title=title, title_justify="left")
    table.add_column("module", overflow="fold", min_width=12)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("r", justify="right", no_wrap=True)
    table.add_column("‖ΔW‖_F", justify="right", no_wrap=True)
    table.add_column("σ₁", justify="right", no_wrap=True)
    table.add_column("st.rk", justify="right", no_wrap=True)
    for name, ms in groups.items():
        shapes = sorted({"×".join(map(str, m["shape"])) for m in ms})
        ranks = sorted({m["rank"] for m in ms})
        table.add_row(
            escape(printable(name[len(prefix):])),
            str(len(ms)),
            ",".join(shapes),
            ",".join(map(str, ranks)),
            _range([m.get("fro_norm") for m in ms]),
            _range([m.get("spectral_norm") for m in ms]),
            _range([m.get("stable_rank") for m in ms]),
        )
    return table


def _range(xs: list[float | None]) -> str:
    vals = [x for x in xs if x is not None]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return fmt(lo) if abs(hi - lo) <= 1e-3 * max(abs(hi), 1e-12) else f"{fmt(lo)}–{fmt(hi)}"
