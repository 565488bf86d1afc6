"""The one output object: the only code that knows ``--format``. stdout carries data; logs, warnings, hints and
progress go to stderr.

A command builds a :class:`Report` (what it has to say, in every format) and hands it to :meth:`Output.emit`, which
picks the writer of the chosen format from :data:`WRITERS`. A writer is ``write(report, stream)``; writers of formats
with their own module (e.g. ``html``) are named as ``"module:function"`` and imported on first use. Adding a format
is one writer and one line in :data:`WRITERS` (plus the ``--format`` choice in ``lolctl/cli/options.py`` when it is
offered on stdout); :meth:`Output.save` writes any format to a file (``--html FILE``).
"""

from __future__ import annotations

import csv as _csv
import importlib
import io
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TextIO

from lolctl.report.encode import dumps, flatten


class Report(Protocol):
    origin: str  # what produced the report (a command line), for formats that name it (html)

    """What a command reports. ``document`` is the ``--format json`` document (it carries its ``schema``), ``rows``
    the records of ``jsonl`` (one a line), ``flat_rows`` those ``csv`` flattens (usually the same), ``human`` the
    Rich renderables of the table mode, ``footer`` what data modes show on stderr instead (a scan's summary)."""

    def document(self) -> dict[str, Any]: ...

    def rows(self) -> list[dict[str, Any]]: ...

    def flat_rows(self) -> list[dict[str, Any]]: ...

    def human(self) -> list[Any]: ...

    def footer(self) -> list[Any]: ...


Writer = Callable[[Report, TextIO], None]


def write_table(report: Report, stream: TextIO) -> None:
    """Human mode: the report's Rich renderables, in order (80 columns stay readable)."""
    from rich.console import Console

    console = Console(file=stream, soft_wrap=False)
    for renderable in report.human():
        console.print(renderable)


def write_json(report: Report, stream: TextIO) -> None:
    stream.write(dumps(report.document(), indent=2) + "\n")


def write_jsonl(report: Report, stream: TextIO) -> None:
    write_lines(report.rows(), stream)


def write_lines(rows: Iterable[dict[str, Any]], stream: TextIO) -> None:
    for row in rows:
        stream.write(dumps(row) + "\n")
    stream.flush()


def write_csv(report: Report, stream: TextIO) -> None:
    """One row per record, nested keys joined with dots; the columns are the union of every row's keys in order."""
    rows = [flatten(r) for r in report.flat_rows()]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = _csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    stream.write(buf.getvalue())


# format name -> writer (or "module:function", imported on first use)
WRITERS: dict[str, Writer | str] = {
    "table": write_table,
    "json": write_json,
    "jsonl": write_jsonl,
    "csv": write_csv,
    "html": "lolctl.report.html:write_report",  # a self-contained HTML page (scan/gate --html FILE, lolctl report)
}


def writer(fmt: str) -> Writer:
    found = WRITERS.get(fmt)
    if found is None:
        raise ValueError(f"no writer for format {fmt!r}; known: {', '.join(WRITERS)}")
    if isinstance(found, str):
        module, _, name = found.partition(":")
        found = WRITERS[fmt] = getattr(importlib.import_module(module), name)
    return found


def write_atomic(path: Path, text: str) -> None:
    """Write a file atomically: a reader never sees half of it, and a failed write leaves the old file as it was."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Output:
    """Writes reports to stdout in one format; logs, warnings and hints to stderr."""

    def __init__(self, fmt: str = "table", stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        from rich.console import Console

        self.format = fmt
        self.stdout = stdout or sys.stdout
        self.console = Console(file=self.stdout, soft_wrap=False)
        self.err = Console(file=stderr or sys.stderr, soft_wrap=True)
        self.streamed = False  # jsonl rows already written by stream(): emit() does not repeat them

    @property
    def human(self) -> bool:
        return self.format == "table"

    # ------------------------------------------------------------------ stderr
    def log(self, message: str) -> None:
        self.err.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def note(self, message: str) -> None:
        """A note on stderr (every mode); the text is shown as is (names from the input carry no markup)."""
        from rich.markup import escape

        self.log(f"[cyan]note:[/cyan] {escape(message)}")

    def line(self, text: str) -> None:
        """One plain line on stderr (an error line, a skipped file): markup in names from the input is not applied."""
        from rich.markup import escape

        self.log(escape(text))

    # ------------------------------------------------------------------ stdout
    def emit(self, report: Report) -> None:
        """The report on stdout in this output's format; in data formats its footer goes to stderr."""
        if self.format == "jsonl" and self.streamed:
            pass  # written row by row as the work finished
        elif self.human:
            for renderable in report.human():
                self.console.print(renderable)
        else:
            writer(self.format)(report, self.stdout)
        if not self.human:
            for renderable in report.footer():
                self.err.print(renderable)

    def stream(self, rows: list[dict[str, Any]]) -> None:
        """jsonl: write rows as soon as they exist (a long scan); other formats wait for :meth:`emit`."""
        if self.format == "jsonl":
            write_lines(rows, self.stdout)
            self.streamed = True

    def save(self, report: Report, path: Path, fmt: str) -> None:
        """The report in format ``fmt`` written to a file (``--html FILE``), atomically."""
        buf = io.StringIO()
        writer(fmt)(report, buf)
        write_atomic(Path(path), buf.getvalue())

    def print(self, renderable: Any) -> None:
        """Human-mode rendering (a Rich table, a line) on stdout."""
        self.console.print(renderable)
