"""`lolctl gate`: stop a CI pipeline when an adapter is predicted to be bad or has severe findings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lolctl.cli.options import (
    CheckpointOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    HtmlOpt,
    SeverityLevel,
    TrustPickleOpt,
)
from lolctl.cli.score import MaxBytesOpt

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
    from rich.markup import escape

    from lolctl.cli.options import parse_size
    from lolctl.cli.score import cli_hub, log_notes, nothing_found
    from lolctl.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_OK
    from lolctl.gate import evaluate, parse_requirement, write_junit, write_sarif
    from lolctl.output import Output
    from lolctl.score import Scorer, check_device
    from lolctl.sources import resolve

    out = Output(fmt.value)
    requirements = [parse_requirement(text) for text in require or []]  # bad syntax: exit 2 before any work
    limit = parse_size(max_bytes)
    check_device(device.value, bool(requirements) or fail_on_ood)
    hub = cli_hub()
    items = resolve(sources, hub=hub)
    nothing_found(items, sources)
    scorer = Scorer(checkpoint=checkpoint, device=device.value, trust_pickle=trust_pickle, max_bytes=limit,
                    predict=bool(requirements) or fail_on_ood, modules=False, hub=hub)
    scorer.load_explicit_checkpoint()
    records = [rec for item in items for rec in scorer.score_item(item)]
    ceiling = (fail_on_severity or fail_on).value  # --fail-on-severity: the old spelling, still accepted
    checks = [c for rec in records for c in evaluate(rec, requirements, ceiling, fail_on_ood)]
    log_notes(out, scorer)
    if junit is not None:
        write_junit(junit, checks)
    if sarif is not None:
        write_sarif(sarif, records, checks)
    failed = [c for c in checks if not c.passed]
    document = {"schema": "lolctl.gate/v1", "passed": not failed, "checks": [c.to_dict() for c in checks],
                "records": records}
    if html is not None:
        from lolctl.report.html import save_document

        save_document(html, document, origin="lolctl gate " + " ".join(sources))
    for c in failed:
        kind = "ERROR" if c.error else "FAIL"
        out.log(escape(f"{kind} {c.source}: {c.name} — {c.message}"))
    if out.human:
        out.print(checks_table(checks))
    else:
        out.records(document["checks"], document)
    if any(c.error for c in checks):
        code = EXIT_INPUT
    else:
        code = EXIT_FINDINGS if failed else EXIT_OK
    out.log(f"gate: {len(checks) - len(failed)}/{len(checks)} checks passed: exit {code}")
    raise typer.Exit(code)


def checks_table(checks: list[Any]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="gate", title_justify="left")
    table.add_column("adapter", overflow="fold", ratio=2)
    table.add_column("check", overflow="fold", ratio=2)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=3)
    for c in checks:
        result = Text("pass", "green") if c.passed else Text("error" if c.error else "FAIL", "bold red")
        table.add_row(Text(c.source), Text(c.name), result, Text(c.message))
    return table


def register(app: typer.Typer) -> None:
    app.command("gate", epilog=EPILOG)(gate)
