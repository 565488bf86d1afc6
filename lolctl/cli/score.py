"""`lolctl score`: the health report plus predictions (quality with an interval, attribute and membership
probabilities, out-of-distribution flag) for each adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    TriageOpt,
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
    from lolctl.cli.options import parse_size
    from lolctl.pipeline import Pipeline
    from lolctl.report import Output
    from lolctl.report.reports import ScoreReport

    out = Output(fmt.value)
    if not sources:
        sources = [_examples()]
        out.log(f"no SOURCE given: scoring the bundled example adapters in {sources[0]} (see its README.md)")
    run = Pipeline(out, predict=not health_only, checkpoint=checkpoint, device=device.value,
                   trust_pickle=trust_pickle, max_bytes=parse_size(max_bytes), triage=triage)
    items = run.expand(sources)
    run.log_skipped()
    records = run.score(items)
    run.log_notes()
    out.emit(ScoreReport(records))
    raise typer.Exit(run.exit_code(records, fail_on.value))


def _examples() -> str:
    """The bundled example adapters, as a relative path when they are below the working directory."""
    import os

    here = os.path.relpath(EXAMPLES)
    return here if not here.startswith("..") else str(EXAMPLES)


def register(app: typer.Typer) -> None:
    app.command("score", epilog=EPILOG)(score)
