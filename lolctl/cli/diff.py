"""`lolctl diff A B`: how two adapters' updates relate (lolctl.diff), as a table or JSON."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from lolctl.cli.options import MaxBytesOpt, TrustPickleOpt

EPILOG = """
[bold]Examples[/bold]

  lolctl diff ./run-a ./run-b               [dim]# two adapter folders[/dim]
  lolctl diff ./a.safetensors user/lora@v2  [dim]# a file and a Hub repo[/dim]
  lolctl diff ./a ./b -f json | jq .overall [dim]# overall figures as JSON[/dim]

From the factors only (ΔW is never formed) and invariant to how each side
factors its update: a re-factored copy (B g, g⁻¹ A) has cosine 1, relative
difference 0 and angles 0°. ∠col / ∠row: the largest principal angle between
the column / row spaces of the two updates. Modules pair by name; those on
one side only are listed. Exit codes: 0 compared, 2 a source unreadable or
naming several adapters.
"""


class DiffFormat(str, Enum):
    table = "table"
    json = "json"


def diff(
    a: Annotated[str, typer.Argument(help="First adapter: folder, file or Hub repo (user/repo[@rev]).",
                                     show_default=False)],
    b: Annotated[str, typer.Argument(help="Second adapter, the same kinds of source.", show_default=False)],
    fmt: Annotated[DiffFormat, typer.Option("--format", "-f", help="Output on stdout: a Rich table, or json.")
                   ] = DiffFormat.table,
    trust_pickle: TrustPickleOpt = False,
    max_bytes: MaxBytesOpt = None,
) -> None:
    """Compare two adapters' weight updates ΔW: cosine similarity, relative difference, principal angles.

    Overall and per module; modules present in one adapter only are listed.
    """
    from lolctl.cli.options import parse_size
    from lolctl.diff import diff_adapters, read_source
    from lolctl.report import Output
    from lolctl.report.reports import DiffReport

    out = Output(fmt.value)
    limit = parse_size(max_bytes)
    first = read_source(a, trust_pickle=trust_pickle, max_bytes=limit)
    second = read_source(b, trust_pickle=trust_pickle, max_bytes=limit)
    out.emit(DiffReport(diff_adapters(first, second).to_dict()))


def register(app: typer.Typer) -> None:
    app.command("diff", epilog=EPILOG)(diff)
