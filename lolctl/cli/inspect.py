"""`lolctl inspect`: read adapters and report their health (works for every base model, no checkpoint needed).

The scoring pipeline without predictions, keeping each adapter's modules and the reader's facts (``meta``)."""

from __future__ import annotations

from typing import Annotated

import typer

from lolctl.cli.options import FailOnOpt, Format, FormatOpt, SeverityLevel, TrustPickleOpt

EPILOG = """
[bold]Examples[/bold]

  lolctl inspect ./my-adapter                     [dim]# a PEFT folder: summary, findings, modules[/dim]
  lolctl inspect lora.safetensors --modules       [dim]# a kohya/diffusers file, every module listed[/dim]
  lolctl inspect runs/*/adapter --format json     [dim]# machine-readable (schema: docs/schema.md)[/dim]
  lolctl inspect ./adapter --fail-on warning      [dim]# exit 1 on any warning or error finding[/dim]
  lolctl inspect someuser/my-lora@v1.0            [dim]# a Hub repo (only its adapter files are fetched)[/dim]
"""


def inspect(
    sources: Annotated[list[str], typer.Argument(help="Adapter folders, weight files, globs or Hub repos "
                                                 "(user/repo@rev, user/prefix*).", show_default=False)],
    fmt: FormatOpt = Format.table,
    fail_on: FailOnOpt = SeverityLevel.error,
    modules: Annotated[bool, typer.Option("--modules", help="List every module instead of layer groups.")] = False,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Read LoRA adapters and report their health: singular values, norms, ranks and coded findings.

    Everything reported is invariant to the GL(r) symmetry of LoRA factors and computed without forming ΔW.
    """
    from lolctl.pipeline import Pipeline
    from lolctl.report import Output
    from lolctl.report.reports import InspectReport

    out = Output(fmt.value)
    run = Pipeline(out, predict=False, trust_pickle=trust_pickle, meta=True)
    items = run.expand(sources, explain_empty=True)
    run.log_skipped()
    records = run.score(items)
    run.log_notes()
    out.emit(InspectReport(records, grouped=not modules))
    raise typer.Exit(run.exit_code(records, fail_on.value))


def register(app: typer.Typer) -> None:
    app.command("inspect", epilog=EPILOG)(inspect)
