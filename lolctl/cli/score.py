"""`lolctl score`: the health report plus predictions (quality with an interval, attribute and membership
probabilities, out-of-distribution flag) for each adapter. Also holds the renderers scan and gate reuse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lolctl.cli.options import (
    CheckpointOpt,
    Device,
    DeviceOpt,
    FailOnOpt,
    Format,
    FormatOpt,
    HealthOnlyOpt,
    MaxBytesOpt,
    SeverityLevel,
    TrustPickleOpt,
)

EPILOG = """
[bold]Examples[/bold]

  lolctl score                          [dim]# the bundled MiniLM examples[/dim]
  lolctl score ./my-adapter             [dim]# checkpoint picked by base model[/dim]
  lolctl score ./a -c models/NAME       [dim]# a given checkpoint[/dim]
  lolctl score user/lora@v1.0 -f json   [dim]# Hub repo at a revision, JSON[/dim]
  lolctl score 'runs/*/adapter' -f csv  [dim]# many adapters, a CSV row each[/dim]
  lolctl score ./a --health-only        [dim]# no predictions, no checkpoint loaded[/dim]
"""

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples"

TriageOpt = Annotated[
    bool,
    typer.Option("--triage/--no-triage", help="Hub: read safetensors headers (ranged reads) before downloading."),
]


def score(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="Adapter folders, files, globs or Hub repos (user/repo@rev). None: the bundled example adapters.",
            show_default=False,
        ),
    ] = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto,
    fmt: FormatOpt = Format.table,
    fail_on: FailOnOpt = SeverityLevel.error,
    trust_pickle: TrustPickleOpt = False,
    max_bytes: MaxBytesOpt = None,
    triage: TriageOpt = False,
    health_only: HealthOnlyOpt = False,
) -> None:
    """Score adapters: health findings plus predictions of quality, attributes and training-data membership.

    Predictions come from a checkpoint trained on adapters of the same base model.

    When none fits, the health report is printed with a note on how to get or train one.
    """

    from rich.markup import escape

    from lolctl.cli.options import parse_size
    from lolctl.errors import printable
    from lolctl.output import Output
    from lolctl.score import Scorer, check_device
    from lolctl.sources import resolve

    out = Output(fmt.value)
    if not sources:
        import os

        here = os.path.relpath(EXAMPLES)
        sources = [here if not here.startswith("..") else str(EXAMPLES)]
        out.log(f"no SOURCE given: scoring the bundled example adapters in {sources[0]} (see its README.md)")
    limit = parse_size(max_bytes)
    check_device(device.value, not health_only)
    hub = cli_hub()
    scorer = Scorer(checkpoint=checkpoint, device=device.value, trust_pickle=trust_pickle, max_bytes=limit,
                    triage=triage, hub=hub, predict=not health_only)
    skipped: list[tuple[Path, str]] = []
    items = resolve(sources, hub=hub, skipped=skipped)
    nothing_found(items, sources, skipped)
    for path, why in skipped:  # weights files met in folders that are not adapters: never dropped silently
        out.log(escape(printable(f"skipped {path}: {why}")))
    scorer.load_explicit_checkpoint()
    records = [rec for item in items for rec in scorer.score_item(item)]
    for rec in records:
        if rec["status"] == "error":
            out.log(_error_line(rec))
        elif out.human:
            render_record(out, rec)
    if out.human:
        for table in about_tables(records):
            out.print(table)
    log_notes(out, scorer)
    if not out.human:
        out.records(records, {"schema": "lolctl.score-report/v1", "records": records})
    raise typer.Exit(exit_code(records, fail_on.value, out))


def cli_hub() -> Any:
    """The Hub client of a command: huggingface_hub's own retry warnings and download bars silenced (lolctl reports
    Hub trouble itself, as one coded line or a note)."""
    from huggingface_hub.utils import disable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    from lolctl.hub import Hub

    disable_progress_bars()
    hf_logging.set_verbosity_error()
    return Hub()


def log_notes(out: Any, scorer: Any) -> None:
    """Every distinct note once on stderr (every mode), with the adapters it applies to: why there is no prediction.
    Notes of the Hub client come first (e.g. that the Hub was unreachable and the local cache answered)."""
    from rich.markup import escape

    from lolctl.errors import printable

    hub = getattr(scorer, "hub", None)
    for note in getattr(hub, "notes", None) or []:
        out.log(f"[cyan]note:[/cyan] {escape(note)}")
    for note in scorer.notes:
        sources = scorer.note_sources.get(note) or []
        who = ""
        if sources:
            more = f" and {len(sources) - 1} more" if len(sources) > 1 else ""
            who = f"no prediction for {printable(sources[0])}{more}: "
        out.log(f"[cyan]note:[/cyan] {escape(who + note)}")


def nothing_found(items: list[Any], sources: list[str], skipped: list[Any] | None = None) -> None:
    from lolctl.errors import LolctlError

    if not items:
        why = ""
        if skipped:
            path, reason = skipped[0]
            more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
            why = f"; skipped {len(skipped)} weights file(s): {path}: {reason}{more}"
        raise LolctlError("L101", " ".join(sources), "no adapters found at these sources" + why,
                          "point at a PEFT folder, a LoRA .safetensors file, a glob or a Hub repo")


def _error_line(rec: dict[str, Any]) -> str:
    e = rec["error"]
    text = f"error[{e['code']} {e['name']}] {e['where']}: {e['reason']}" + (f" (fix: {e['remedy']})"
                                                                            if e.get("remedy") else "")
    from rich.markup import escape

    from lolctl.errors import printable

    return escape(printable(text))  # one line; markup and terminal control characters from names neutralized


def exit_code(records: list[dict[str, Any]], fail_on: str, out: Any) -> int:
    """3 nothing scannable, 2 any unreadable item, 1 findings at/above --fail-on, else 0."""
    from lolctl.errors import CODES, EXIT_FINDINGS, EXIT_INPUT, EXIT_NOTHING, EXIT_OK
    from lolctl.factors import severity_rank

    errors = [r for r in records if r.get("status") != "ok"]
    if not records or (len(errors) == len(records)
                       and all(CODES[r["error"]["code"]].exit_code == EXIT_NOTHING for r in errors)):
        out.log(f"nothing scannable: exit {EXIT_NOTHING}")
        return EXIT_NOTHING
    if errors:
        out.log(f"{len(errors)} of {len(records)} records are errors: exit {EXIT_INPUT}")
        return EXIT_INPUT
    if fail_on != "never":
        worst = [r for r in records if r.get("max_severity")
                 and severity_rank(r["max_severity"]) >= severity_rank(fail_on)]
        if worst:
            out.log(f"{len(worst)} adapter(s) have findings at or above '{fail_on}': exit {EXIT_FINDINGS}")
            return EXIT_FINDINGS
    return EXIT_OK


# ---------------------------------------------------------------------- human rendering (80 columns)
def prediction_table(pred: dict[str, Any]) -> Any:
    from rich.table import Table
    from rich.text import Text

    from lolctl.render import fmt

    table = Table(title=f"predictions ({pred.get('checkpoint')})", title_justify="left")
    table.add_column("task", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("prediction", overflow="fold")
    for name, task in (pred.get("tasks") or {}).items():
        if task.get("kind") == "regression":
            lo, hi = task.get("interval") or (None, None)
            text = f"{fmt(task.get('value'))}  [{fmt(lo)}, {fmt(hi)}]"
            if task.get("unit") == "log2 pairs" and task.get("value") is not None:
                text += f" log2 pairs (≈ {2 ** task['value']:,.0f})"
            elif task.get("unit"):
                text += f" {task['unit']}"
        else:
            probs = sorted((task.get("probs") or {}).items(), key=lambda kv: -kv[1])
            text = ", ".join(f"{label} {p:.2f}" for label, p in probs[:6]) + (" …" if len(probs) > 6 else "")
        table.add_row(Text(name), task.get("kind", "?"), Text(text))
    return table


def headline(pred: dict[str, Any] | None) -> str:
    """A short text for one-row summaries: the first regression task, else the top label of the first task."""
    if not pred:
        return "-"
    for name, task in (pred.get("tasks") or {}).items():
        if task.get("kind") == "regression":
            return f"{name} {task['value']:.3g}"
    for name, task in (pred.get("tasks") or {}).items():
        probs = task.get("probs") or {}
        if probs:
            label = max(probs, key=lambda k: probs[k])
            return f"{name} {label} {probs[label]:.2f}"
    return "-"


def about_tables(records: list[dict[str, Any]]) -> list[Any]:
    """Once per checkpoint used: what each of its tasks means (from the checkpoint's config, never from here)."""
    from rich.table import Table
    from rich.text import Text

    seen: dict[str, dict[str, str]] = {}
    for rec in records:
        pred = rec.get("prediction") or {}
        if pred.get("about") and pred.get("checkpoint") not in seen:
            seen[pred.get("checkpoint")] = pred["about"]
    tables = []
    for name, about in seen.items():
        table = Table(title=f"what the tasks of {name} mean", title_justify="left", show_header=False)
        table.add_column("task", no_wrap=True)
        table.add_column("meaning", overflow="fold")
        for task, text in about.items():
            table.add_row(Text(task), Text(text))
        tables.append(table)
    return tables


def render_record(out: Any, rec: dict[str, Any]) -> None:
    from rich.text import Text

    from lolctl.render import findings_table, summary_table

    out.print(summary_table(rec["source"], rec["summary"]))
    out.print(findings_table(rec["findings"]) if rec["findings"] else "[green]no findings[/green]")
    pred = rec.get("prediction")
    if pred:
        out.print(prediction_table(pred))
        ood = pred.get("ood") or {}
        if ood.get("flag"):
            out.print(Text("out of distribution: ", "yellow") + Text("; ".join(ood.get("reasons") or [])))
        else:
            out.print("[green]in distribution[/green] for this checkpoint")
    elif rec.get("notes"):
        out.print(Text("no prediction: ", "yellow") + Text("; ".join(rec["notes"])))
    out.print("")


def register(app: typer.Typer) -> None:
    app.command("score", epilog=EPILOG)(score)
