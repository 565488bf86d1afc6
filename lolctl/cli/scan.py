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
    MaxBytesOpt,
    RayAddressOpt,
    SeverityLevel,
    TriageOpt,
    TrustPickleOpt,
)

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
    from lolctl.dedup import DuplicateIndex
    from lolctl.pipeline import Pipeline
    from lolctl.report import Output
    from lolctl.report.records import parse_record
    from lolctl.report.reports import ScanReport
    from lolctl.scan import ScanInterrupted, load_records, run_scan
    from lolctl.sources import parse_shard, shard_of

    out = Output(fmt.value)
    limit = parse_size(max_bytes)
    if resume and output is None:
        from lolctl.errors import LolctlError

        raise LolctlError("L180", "--resume", "needs --output FILE to resume from", "add -o scan.jsonl")
    run = Pipeline(out, predict=not no_predict, checkpoint=checkpoint, device=device.value, trust_pickle=trust_pickle,
                   max_bytes=limit, triage=triage, modules=False, read_slots=read_slots, sketch=duplicates)
    items = run.expand(sources)
    if shard:
        index, count = parse_shard(shard)
        items = [item for item in items if shard_of(item.id, count) == index]
        out.log(f"shard {index}/{count}: {len(items)} item(s)")
    run.start()
    runner = _engine(engine, run.scorer, jobs, ray_address)
    progress = _progress(out, len(items))
    task = progress.add_task("scanning", total=len(items)) if progress else None

    def on_records(records: list[Any]) -> None:
        if runner.name != "local":  # the notes were taken in the workers: the records carry them
            for rec in records:
                for note in getattr(rec, "notes", None) or []:
                    run.scorer.add_note(note, rec.source)
        run.log_errors(records)
        if progress is not None:
            progress.advance(task)
        out.stream([r.to_dict() for r in records])  # jsonl: each record as it finishes

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
    summary.skipped = run.skipped_files()
    run.log_notes()
    out.emit(ScanReport(summary.to_dict(), fresh, None if output is None else str(output)))
    every = fresh if not resume or output is None else list(map(parse_record, load_records(output, repair=False)))
    if html is not None:  # every record of the scan, resumed ones included, as the summary counts them
        report = ScanReport(summary.to_dict(), every, None if output is None else str(output))
        report.origin = "lolctl scan " + " ".join(sources)
        out.save(report, html, "html")
        out.line(f"report: {html}")
    raise typer.Exit(run.exit_code(every, fail_on.value))


def _engine(engine: EngineName, scorer: Any, jobs: int, ray_address: str | None) -> Any:
    """The scan engine: ``jobs`` threads here, or Ray workers each with a copy of ``scorer``'s settings."""
    if engine is EngineName.ray:
        from lolctl.ray_engine import RayEngine, ScorerWorker, import_ray

        import_ray()  # not installed: one usage error before any work
        return RayEngine(ScorerWorker(scorer.settings), address=ray_address)
    from lolctl.scan import LocalEngine

    return LocalEngine(scorer.score_items, jobs)


def _progress(out: Any, total: int) -> Any:
    """A Rich progress bar on stderr, in human mode on a terminal only."""
    if not out.human or not out.err.is_terminal or total < 2:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=out.err, transient=True)


def register(app: typer.Typer) -> None:
    app.command("scan", epilog=EPILOG)(scan)
