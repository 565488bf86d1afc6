"""`lolctl scan`: audit many adapters (folders, globs, a Hub user's repos) in parallel, resumable JSONL output."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lolctl.cli.options import (
    CheckpointOpt,
    Device,
    DeviceOpt,
    EngineName,
    EngineOpt,
    FailOnOpt,
    Format,
    FormatOpt,
    HealthOnlyOpt,
    HtmlOpt,
    RayAddressOpt,
    SeverityLevel,
    TrustPickleOpt,
)
from lolctl.cli.score import MaxBytesOpt, TriageOpt

EPILOG = """
[bold]Examples[/bold]

  lolctl scan ./adapters -o scan.jsonl                 [dim]# every adapter below a folder[/dim]
  lolctl scan 'runs/*/checkpoint-*' -f jsonl           [dim]# a glob; records on stdout[/dim]
  lolctl scan 'someuser/*' -o hub.jsonl --triage       [dim]# a Hub user's PEFT/LoRA repos[/dim]
  lolctl scan 'someuser/sd-*' -o hub.jsonl --resume    [dim]# continue a killed scan[/dim]
  lolctl scan 'org/*' --shard 0/4 -o part0.jsonl       [dim]# one of 4 machines[/dim]
  lolctl scan ./adapters -o scan.jsonl --html scan.html [dim]# and an HTML report (lolctl report: later)[/dim]
  lolctl scan 'org/*' -o org.jsonl --engine ray         [dim]# on a Ray cluster (RAY_ADDRESS; docs/scale.md)[/dim]
  HF_HUB_OFFLINE=1 lolctl scan 'someuser/*'            [dim]# only what the HF cache holds[/dim]

In table mode the results and the summary go to stdout; in json/jsonl/csv modes stdout carries the records
and the summary goes to stderr.

Exit codes: 0 ok, 1 findings at/above --fail-on, 2 any item unreadable (an error record; the scan goes on),
3 nothing scannable.
"""


def scan(
    sources: Annotated[list[str], typer.Argument(help="Folders, globs, files, or Hub sources: user/*, user/prefix*, "
                                                 "user/repo\\[@rev] (hf:// forces the Hub).", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Append one JSON record per adapter here "
                                                "as each finishes (fsync'd).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue --output: skip items already recorded.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="Only items whose stable hash falls in shard i of N "
                                              "(i/N, 0-based).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Parallel workers (Hub I/O).")] = 4,
    read_slots: Annotated[int, typer.Option("--read-slots", min=1, max=16,
                                            help="Adapters read and scored at once (memory bound).")] = 1,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto,
    no_predict: HealthOnlyOpt = False,
    duplicates: Annotated[bool, typer.Option("--duplicates/--no-duplicates", help="Mark adapters whose update "
                                             "equals an earlier one's (duplicate_of, docs/cli.md).")] = True,
    fmt: FormatOpt = Format.table,
    fail_on: FailOnOpt = SeverityLevel.error,
    trust_pickle: TrustPickleOpt = False,
    max_bytes: MaxBytesOpt = None,
    triage: TriageOpt = False,
    html: HtmlOpt = None,
    engine: EngineOpt = EngineName.local,
    ray_address: RayAddressOpt = None,
) -> None:
    """Scan many adapters: one record per adapter (health + predictions, or an error record) and a summary.

    Unreadable, private, gated or missing items become error records and the scan goes on.

    A killed scan continues with --resume: no duplicates, no gaps.
    """
    from lolctl.cli import interrupted
    from lolctl.cli.options import parse_size
    from lolctl.cli.score import cli_hub, exit_code, log_notes, nothing_found
    from lolctl.dedup import DuplicateIndex
    from lolctl.output import Output
    from lolctl.scan import ScanInterrupted, run_scan
    from lolctl.score import Scorer, check_device
    from lolctl.sources import parse_shard, resolve, shard_of

    out = Output(fmt.value)
    limit = parse_size(max_bytes)
    check_device(device.value, not no_predict)
    if resume and output is None:
        from lolctl.errors import LolctlError

        raise LolctlError("L180", "--resume", "needs --output FILE to resume from", "add -o scan.jsonl")
    hub = cli_hub()
    skipped: list[tuple[Path, str]] = []
    items = resolve(sources, hub=hub, skipped=skipped)
    nothing_found(items, sources, skipped)
    if shard:
        index, count = parse_shard(shard)
        items = [item for item in items if shard_of(item.id, count) == index]
        out.log(f"shard {index}/{count}: {len(items)} item(s)")
    scorer = Scorer(checkpoint=checkpoint, device=device.value, trust_pickle=trust_pickle, max_bytes=limit,
                    hub=hub, triage=triage, predict=not no_predict, modules=False, read_slots=read_slots,
                    sketch=duplicates)
    scorer.load_explicit_checkpoint()
    runner = _engine(engine, scorer, jobs, ray_address)

    progress = _progress(out, len(items))
    task = progress.add_task("scanning", total=len(items)) if progress else None

    def on_records(records: list[dict[str, Any]]) -> None:
        if runner.name != "local":  # the notes were taken in the workers: the records carry them
            for rec in records:
                for note in rec.get("notes") or []:
                    scorer.add_note(note, rec["source"])
        for rec in records:
            if rec["status"] == "error":
                out.log(_error_line(rec))
        if progress is not None:
            progress.advance(task)
        if out.format == "jsonl":
            out.jsonl(records)  # stream as they finish

    if progress is not None:
        progress.start()
    try:
        summary, fresh = run_scan(items, engine=runner, output=output, resume=resume,
                                  on_records=on_records, duplicates=DuplicateIndex() if duplicates else None)
    except ScanInterrupted as stop:
        if progress is not None:
            progress.stop()
        where = f" in {output}, rerun with --resume to continue" if output is not None else (
            " (no --output: rerun with -o FILE to be able to resume)")
        interrupted(f"interrupted: {stop.recorded} of {stop.total} recorded{where}")
    finally:
        if progress is not None:
            progress.stop()
    summary.skipped = skipped_files(skipped)
    log_notes(out, scorer)
    if out.human:
        out.print(results_table(fresh))
        for line in duplicate_lines(fresh):
            out.print(line)
        out.print(summary_table(summary.to_dict(), output))
    else:
        if out.format == "json":
            out.json({"schema": "lolctl.scan/v1", "summary": summary.to_dict(), "records": fresh})
        elif out.format == "csv":
            out.csv(fresh)
        out.err.print(summary_table(summary.to_dict(), output))
    all_records = fresh if not resume or output is None else _all(output)
    if html is not None:  # every record of the scan, resumed ones included, as the summary counts them
        from rich.markup import escape

        from lolctl.report.html import save_document

        save_document(html, {"schema": "lolctl.scan/v1", "summary": summary.to_dict(), "records": all_records},
                      origin="lolctl scan " + " ".join(sources))
        out.log(f"report: {escape(str(html))}")
    raise typer.Exit(exit_code(all_records, fail_on.value, out))


def _engine(engine: EngineName, scorer: Any, jobs: int, ray_address: str | None) -> Any:
    """The scan engine: ``jobs`` threads here, or Ray workers each with a copy of ``scorer``'s settings."""
    if engine is EngineName.ray:
        from lolctl.ray_engine import RayEngine, ScorerWorker, import_ray

        import_ray()  # not installed: one usage error before any work
        return RayEngine(ScorerWorker(scorer.settings), address=ray_address)
    from lolctl.scan import LocalEngine

    return LocalEngine(scorer.score_items, jobs)


def _all(output: Path) -> list[dict[str, Any]]:
    from lolctl.scan import load_records

    return load_records(output, repair=False)


def _error_line(rec: dict[str, Any]) -> str:
    from lolctl.cli.score import _error_line as line

    return line(rec)


def _progress(out: Any, total: int) -> Any:
    """A Rich progress bar on stderr, in human mode on a terminal only."""
    if not out.human or not out.err.is_terminal or total < 2:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=out.err, transient=True)


def results_table(records: list[dict[str, Any]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    from lolctl.cli.score import headline
    from lolctl.errors import printable
    from lolctl.render import SEVERITY_STYLE

    table = Table(title="results", title_justify="left")
    table.add_column("adapter", overflow="fold", ratio=3)
    table.add_column("status", no_wrap=True)
    table.add_column("worst / error", overflow="fold", ratio=1)
    table.add_column("prediction", overflow="fold", ratio=2)
    for rec in sorted(records, key=lambda r: r["source"]):
        source = Text(printable(rec["source"]))  # names from the input: no markup, no terminal control characters
        if rec["status"] == "ok":
            sev = rec.get("max_severity") or "none"
            ood = " (OOD)" if ((rec.get("prediction") or {}).get("ood") or {}).get("flag") else ""
            status = Text("dup", "cyan") if rec.get("duplicate_of") else Text("ok", "green")
            table.add_row(source, status, Text(sev, SEVERITY_STYLE.get(sev, "")),
                          Text(headline(rec.get("prediction")) + ood))
        else:
            err = rec["error"]
            table.add_row(source, Text("error", "bold red"), f"{err['code']} {err['name']}", "-")
    return table


def duplicate_lines(records: list[dict[str, Any]]) -> list[Any]:
    """One line per record marked duplicate_of (lolctl.dedup), in source order."""
    from rich.text import Text

    from lolctl.errors import printable

    return [Text(f"dup: {printable(r['source'])} has the update of {printable(r['duplicate_of'])} "
                 f"(cosine {r['similarity']:.6f})") for r in sorted(records, key=lambda r: r["source"])
            if r.get("duplicate_of")]


def summary_table(summary: dict[str, Any], output: Path | None) -> Any:
    from rich.table import Table
    from rich.text import Text

    from lolctl.errors import printable

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
        rows.append(("output", str(output)))
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


SHOW_SKIPPED = 10


def skipped_files(skipped: list[tuple[Path, str]]) -> list[dict[str, str]]:
    """Distinct (path, reason) pairs as summary entries, in path order."""
    seen: dict[str, str] = {}
    for path, reason in skipped:
        seen.setdefault(str(path), reason)
    return [{"path": p, "reason": r} for p, r in sorted(seen.items())]


def register(app: typer.Typer) -> None:
    app.command("scan", epilog=EPILOG)(scan)
