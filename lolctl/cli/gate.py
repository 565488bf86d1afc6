"""`lolctl gate`: stop a CI pipeline when an adapter is predicted to be bad or has severe findings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lolctl.cli.options import (
    CheckpointOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    HtmlOpt,
    MaxBytesOpt,
    SeverityLevel,
    TrustPickleOpt,
)

EPILOG = """
[bold]Examples[/bold]

  lolctl gate ./adapter --require 'quality>=0.3'
  lolctl gate ./adapter --require 'quality.lower>=0.25' --require 'membership\\[noun.animal]<0.5'
  lolctl gate out/*/adapter --fail-on warning --junit gate.xml --sarif gate.sarif
  lolctl gate out/*/adapter -r 'quality>=0.3' --html gate.html   [dim]# a report to open in a browser[/dim]

Exit codes: 0 every check holds, 1 a check failed (each failing check is printed on stderr),
2 input error (unreadable adapter, bad --require, unknown task or label), 3 nothing scannable.
"""


def gate(
    sources: Annotated[list[str], typer.Argument(help="Adapter folders, files, globs or Hub repos.",
                                                 show_default=False)],
    require: Annotated[list[str] | None, typer.Option("--require", "-r", metavar="EXPR",
                                                      help="A check such as 'quality>=0.3' or "
                                                      "'membership\\[noun.animal]<0.5' (repeatable).")] = None,
    fail_on: Annotated[SeverityLevel, typer.Option("--fail-on", help="Fail when a finding is at or above this "
                                                   "severity ('never' to ignore).")] = SeverityLevel.error,
    fail_on_severity: Annotated[SeverityLevel | None, typer.Option("--fail-on-severity", hidden=True,
                                                                   help="Old spelling of --fail-on.")] = None,
    fail_on_ood: Annotated[bool, typer.Option("--fail-on-ood", help="Fail when an adapter is out of distribution "
                                              "for the checkpoint.")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here.")] = None,
    sarif: Annotated[Path | None, typer.Option("--sarif", help="Write a SARIF 2.1.0 report here.")] = None,
    html: HtmlOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto,
    fmt: FormatOpt = Format.table,
    trust_pickle: TrustPickleOpt = False,
    max_bytes: MaxBytesOpt = None,
) -> None:
    """Check adapters against requirements on predictions and findings; exit 1 when any check fails."""
    from lolctl.cli.options import parse_size
    from lolctl.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_OK
    from lolctl.gate import evaluate, parse_requirement, write_junit, write_sarif
    from lolctl.pipeline import Pipeline
    from lolctl.report import Output
    from lolctl.report.records import GateResult
    from lolctl.report.reports import GateReport

    out = Output(fmt.value)
    requirements = [parse_requirement(text) for text in require or []]  # bad syntax: exit 2 before any work
    limit = parse_size(max_bytes)
    run = Pipeline(out, predict=bool(requirements) or fail_on_ood, checkpoint=checkpoint, device=device.value,
                   trust_pickle=trust_pickle, max_bytes=limit, modules=False)
    items = run.expand(sources)
    records = run.score(items)
    ceiling = (fail_on_severity or fail_on).value  # --fail-on-severity: the old spelling, still accepted
    result = GateResult([c for rec in records for c in evaluate(rec, requirements, ceiling, fail_on_ood)], records)
    run.log_notes()
    if junit is not None:
        write_junit(junit, result.checks)
    if sarif is not None:
        write_sarif(sarif, records, result.checks)
    report = GateReport(result)
    if html is not None:
        report.origin = "lolctl gate " + " ".join(sources)
        out.save(report, html, "html")
    for c in result.failed:
        out.line(f"{'ERROR' if c.error else 'FAIL'} {c.source}: {c.name} — {c.message}")
    out.emit(report)
    code = EXIT_INPUT if any(c.error for c in result.checks) else EXIT_FINDINGS if result.failed else EXIT_OK
    out.log(f"gate: {len(result.checks) - len(result.failed)}/{len(result.checks)} checks passed: exit {code}")
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("gate", epilog=EPILOG)(gate)
