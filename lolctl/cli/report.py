"""`lolctl report`: the HTML audit report of records already written (a scan's -o file, its shards, a --format json
document), without reading any adapter again: no sources, no Hub, no checkpoint, no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EPILOG = """
[bold]Examples[/bold]

  lolctl report scan.jsonl --html scan.html             [dim]# a scan's -o file (a killed one too)[/dim]
  lolctl report part0.jsonl part1.jsonl --html all.html [dim]# the shards of a scan, as one report[/dim]
  lolctl gate ./out/* -r 'quality>=0.3' -f json > gate.json && lolctl report gate.json --html gate.html

The same page as scan --html / gate --html. From JSONL files the summary is counted from the records (the weights
files a scan skipped are only in scan --html and scan --format json).
"""


def report(
    files: Annotated[list[Path], typer.Argument(help="Record files: JSONL of score records (scan -o, --format "
                                                "jsonl) or --format json documents of scan, gate or score.",
                                                show_default=False)],
    html: Annotated[Path, typer.Option("--html", metavar="FILE", help="Write the self-contained HTML report here.",
                                       show_default=False)],
) -> None:
    """Write the HTML audit report of records already on disk."""
    from lolctl.errors import printable
    from lolctl.report import Output
    from lolctl.report.documents import load
    from lolctl.report.reports import Document

    document = Document(load(files))
    document.origin = " ".join(str(f) for f in files)
    out = Output()
    out.save(document, html, "html")
    out.line(printable(f"report: {len(document.doc['records'])} record(s) in {html}"))


def register(app: typer.Typer) -> None:
    app.command("report", epilog=EPILOG)(report)
