"""Rich renderings of score, scan and gate results (human mode only), from typed records. 80 columns stay readable;
names from the input are shown as text (no markup, no terminal control characters)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from lolctl.errors import printable
from lolctl.report.health import SEVERITY_STYLE, findings_table, fmt, modules_table, summary_table
from lolctl.report.records import Check, Record, ScoreRecord
from lolctl.report.svg import num

SHOW_SKIPPED = 10  # skipped files listed in a scan summary table; --format json lists them all


def prediction_table(pred: dict[str, Any]) -> Table:
    ood = (pred.get("ood") or {}).get("flag")
    title = f"predictions ({pred.get('checkpoint')})" + (
        " — extrapolated: the adapter is out of distribution, its card's measurements do not cover it" if ood else "")
    table = Table(title=title, title_justify="left", title_style="yellow" if ood else None)
    table.add_column("task", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("prediction", overflow="fold")
    for name, task in (pred.get("tasks") or {}).items():
        if task.get("kind") == "regression":
            lo, hi = task.get("interval") or (None, None)
            value, lo, hi = same_decimals(task.get("value"), lo, hi)
            text = f"{value}  [{lo}, {hi}]"
            if task.get("unit") == "log2 pairs" and task.get("value") is not None:
                text += f" log2 pairs (≈ {2 ** task['value']:,.0f})"
            elif task.get("unit"):
                text += f" {task['unit']}"
        else:
            probs = sorted((task.get("probs") or {}).items(), key=lambda kv: -kv[1])
            text = ", ".join(f"{label} {p:.2f}" for label, p in probs[:6]) + (" …" if len(probs) > 6 else "")
        table.add_row(Text(name), task.get("kind", "?"), Text(text))
    return table


def same_decimals(value: Any, *ends: Any) -> list[str]:
    """``value`` to 3 significant digits and the interval ``ends`` to as many decimals ("0.363  [0.326, 0.400]", not
    "[0.326, 0.4]"); "-" for a missing number."""
    numbers = [num(x) for x in (value, *ends)]
    v = numbers[0]
    if v is None:
        return [fmt(x) for x in (value, *ends)]
    decimals = min(6, max(0, 2 - math.floor(math.log10(abs(v))))) if v else 3
    return ["-" if x is None else f"{x:.{decimals}f}" for x in numbers]


def headline(pred: dict[str, Any] | None) -> str:
    """A short text for one-row summaries: the first regression task, else the top label of the first task."""
    if not pred:
        return "-"
    for name, task in (pred.get("tasks") or {}).items():
        if task.get("kind") == "regression" and task.get("value") is not None:
            return f"{name} {task['value']:.3g}"
    for name, task in (pred.get("tasks") or {}).items():
        probs = task.get("probs") or {}
        if probs:
            label = max(probs, key=lambda k: probs[k])
            return f"{name} {label} {probs[label]:.2f}"
    return "-"


def about_tables(records: list[Record]) -> list[Table]:
    """Once per checkpoint used: what each of its tasks means (from the checkpoint's config, never from here)."""
    seen: dict[str, dict[str, str]] = {}
    for rec in records:
        pred = (rec.prediction if isinstance(rec, ScoreRecord) else None) or {}
        name = str(pred.get("checkpoint"))
        if pred.get("about") and name not in seen:
            seen[name] = pred["about"]
    tables = []
    for name, about in seen.items():
        table = Table(title=f"what the tasks of {name} mean", title_justify="left", show_header=False)
        table.add_column("task", no_wrap=True)
        table.add_column("meaning", overflow="fold")
        for task, text in about.items():
            table.add_row(Text(task), Text(text))
        tables.append(table)
    return tables


def health_renderables(rec: ScoreRecord) -> list[RenderableType]:
    """The source as a heading, its summary, and its findings (or "no findings")."""
    return [summary_table(rec.source, rec.summary),
            findings_table(rec.findings) if rec.findings else "[green]no findings[/green]"]


def score_renderables(rec: ScoreRecord) -> list[RenderableType]:
    """One adapter as `lolctl score` shows it: health, then its predictions or why there are none."""
    out = health_renderables(rec)
    pred = rec.prediction
    if pred:  # an out-of-distribution reason comes before the figures it qualifies
        if rec.ood:
            out.append(Text("out of distribution: ", "yellow") + Text("; ".join(pred["ood"].get("reasons") or [])))
        out.append(prediction_table(pred))
        if not rec.ood:
            out.append("[green]in distribution[/green] for this checkpoint")
    elif rec.notes:
        out.append(Text("no prediction: ", "yellow") + Text("; ".join(rec.notes)))
    return [*out, ""]


def inspect_renderables(rec: ScoreRecord, grouped: bool) -> list[RenderableType]:
    """One adapter as `lolctl inspect` shows it: health, then its modules (layers grouped unless asked)."""
    out = health_renderables(rec)
    if rec.modules:
        out.append(modules_table(rec.modules, grouped=grouped))
    return [*out, ""]


def results_table(records: list[Record]) -> Table:
    """A scan's records, one row each in source order: status, worst finding or error code, headline prediction."""
    table = Table(title="results", title_justify="left")
    table.add_column("adapter", overflow="fold", ratio=3)
    table.add_column("status", no_wrap=True)
    table.add_column("worst / error", overflow="fold", ratio=1)
    table.add_column("prediction", overflow="fold", ratio=2)
    for rec in sorted(records, key=lambda r: r.source):
        source = Text(printable(rec.source))
        if isinstance(rec, ScoreRecord):
            sev = rec.max_severity or "none"
            status = Text("dup", "cyan") if rec.duplicate_of else Text("ok", "green")
            table.add_row(source, status, Text(sev, SEVERITY_STYLE.get(sev, "")),
                          Text(headline(rec.prediction) + (" (OOD)" if rec.ood else "")))
        else:
            table.add_row(source, Text("error", "bold red"), f"{rec.error.get('code')} {rec.error.get('name')}", "-")
    return table


def duplicate_lines(records: list[Record]) -> list[Text]:
    """One line per record marked duplicate_of (lolctl.dedup), in source order."""
    return [Text(f"dup: {printable(r.source)} has the update of {printable(r.duplicate_of)} "
                 f"(cosine {r.similarity:.6f})") for r in sorted(records, key=lambda r: r.source)
            if isinstance(r, ScoreRecord) and r.duplicate_of]


def scan_summary_table(summary: dict[str, Any], output: str | None) -> Table:
    table = Table(title="scan summary", title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    sev = ", ".join(f"{k} {v}" for k, v in sorted(summary["max_severity"].items())) or "-"
    codes = ", ".join(f"{k} ×{v}" for k, v in sorted(summary["error_codes"].items())) or "-"
    rows = [
        ("items", f"{summary['items']} ({summary['resumed']} already recorded)"),
        ("records", f"{summary['records']}: {summary['ok']} ok, {summary['errors']} error(s)"),
        ("worst finding", sev),
        ("error codes", codes),
        ("predicted", f"{summary['predicted']} ({summary['ood']} out of distribution)"),
        ("duplicates", f"{summary.get('duplicates', 0)} (same update as an earlier adapter: duplicate_of)"),
    ]
    skipped = summary.get("skipped") or []
    if skipped:
        shown = [printable(f"{s['path']} ({s['reason']})") for s in skipped[:SHOW_SKIPPED]]
        more = [f"… and {len(skipped) - SHOW_SKIPPED} more (--format json lists them all)"] * (
            len(skipped) > SHOW_SKIPPED)
        rows.append(("skipped", "\n".join([f"{len(skipped)} weights file(s), not adapters:", *shown, *more])))
    if output is not None:
        rows.append(("output", output))
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="gate", title_justify="left")
    table.add_column("adapter", overflow="fold", ratio=2)
    table.add_column("check", overflow="fold", ratio=2)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=3)
    for c in checks:
        result = Text("pass", "green") if c.passed else Text("error" if c.error else "FAIL", "bold red")
        table.add_row(Text(c.source), Text(c.name), result, Text(c.message))
    return table
