"""`lolctl diff A B`: how two adapters' updates relate (lolctl.diff), as a table or JSON."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

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
    from lolctl.output import Output

    out = Output(fmt.value)
    limit = parse_size(max_bytes)
    first = read_source(a, trust_pickle=trust_pickle, max_bytes=limit)
    second = read_source(b, trust_pickle=trust_pickle, max_bytes=limit)
    result = diff_adapters(first, second)
    if out.human:
        render(out, result.to_dict())
    else:
        out.json(result.to_dict())


def _angle(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}°"


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _rel(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2e}" if x < 0.01 else f"{x:.3f}")


def common_prefix(names: list[str]) -> str:
    """The longest common dotted prefix of module names ("encoder.layer."), or "" when there is one name only."""
    import os

    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(names)
    return prefix[: prefix.rfind(".") + 1]


def render(out: Any, doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from lolctl.errors import printable

    o = doc["overall"]
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column("key", style="bold", no_wrap=True)
    head.add_column("value", overflow="fold")
    rows = [
        ("a", printable(doc["a"])),
        ("b", printable(doc["b"])),
        ("cosine", _num(o["cosine"], 6)),
        ("‖ΔW_a − ΔW_b‖/‖ΔW_a‖", _rel(o["rel_diff"])),
        ("‖ΔW_a‖, ‖ΔW_b‖", f"{o['norm_a']:.4g}, {o['norm_b']:.4g}"),
        ("largest angle", f"columns {_angle(o['max_col_angle_deg'])}, rows {_angle(o['max_row_angle_deg'])}"),
        ("modules", "; ".join([f"{o['common_modules']} in both"] + [
            f"{n} {label}" for n, label in ((len(doc["only_a"]), "in a only"), (len(doc["only_b"]), "in b only"),
                                           (len(doc["mismatched"]), "of different shapes")) if n])),
    ]
    for key, value in rows:
        head.add_row(key, Text(value))
    out.print(head)
    if doc["modules"]:
        prefix = common_prefix([m["name"] for m in doc["modules"]])
        title = "per module" + (f" after '{printable(prefix)}'" if prefix else "")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        table.add_column("module", overflow="fold", ratio=1)
        table.add_column("cosine", no_wrap=True, justify="right")
        table.add_column("rel. diff", no_wrap=True, justify="right")
        table.add_column("∠col", no_wrap=True, justify="right")
        table.add_column("∠row", no_wrap=True, justify="right")
        table.add_column("ranks", no_wrap=True, justify="right")
        for m in doc["modules"]:
            table.add_row(Text(printable(m["name"][len(prefix):])), _num(m["cosine"], 6), _rel(m["rel_diff"]),
                          _angle(max(m["col_angles_deg"], default=None)),
                          _angle(max(m["row_angles_deg"], default=None)), f"{m['rank_a']}/{m['rank_b']}")
        out.print(table)
    for label, names in (("only in a", doc["only_a"]), ("only in b", doc["only_b"]),
                         ("different shapes", [d["name"] for d in doc["mismatched"]])):
        if names:
            out.print(Text(f"{label}: " + ", ".join(printable(n) for n in names)))


def register(app: typer.Typer) -> None:
    app.command("diff", epilog=EPILOG)(diff)
