"""The one output sink: stdout carries data only (table / json / jsonl / csv); everything else goes to stderr."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable
from typing import Any, TextIO


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON. NaN and ±Inf (e.g. the scale of an adapter whose alpha is NaN) are written as null."""
    try:
        return json.dumps(obj, default=_json_default, indent=indent, allow_nan=False, ensure_ascii=False)
    except ValueError:
        return json.dumps(_finite(obj), default=lambda o: _finite(_json_default(o)), indent=indent,
                          allow_nan=False, ensure_ascii=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys, lists -> JSON text, booleans -> ``true`` / ``false`` as in JSON (CSV rows)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = dumps(value)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = value
    return out


class Output:
    """Writes records to stdout in one format; logs, warnings and hints to stderr."""

    def __init__(self, fmt: str = "table", stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        from rich.console import Console

        self.format = fmt
        self.stdout = stdout or sys.stdout
        self.console = Console(file=self.stdout, soft_wrap=False)
        self.err = Console(file=stderr or sys.stderr, soft_wrap=True)

    @property
    def human(self) -> bool:
        return self.format == "table"

    def log(self, message: str) -> None:
        self.err.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def print(self, renderable: Any) -> None:
        """Human-mode rendering (Rich tables, panels) on stdout."""
        self.console.print(renderable)

    def json(self, obj: Any) -> None:
        self.stdout.write(dumps(obj, indent=2) + "\n")

    def jsonl(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            self.stdout.write(dumps(rec) + "\n")
        self.stdout.flush()

    def csv(self, records: list[dict[str, Any]]) -> None:
        rows = [flatten(r) for r in records]
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.stdout.write(buf.getvalue())

    def records(self, records: list[dict[str, Any]], document: dict[str, Any] | None = None) -> None:
        """Data modes: json writes ``document`` (or the list), jsonl one record a line, csv flattened rows."""
        if self.format == "json":
            self.json(document if document is not None else records)
        elif self.format == "jsonl":
            self.jsonl(records)
        elif self.format == "csv":
            self.csv(records)
        else:
            raise ValueError(f"records() is for data formats, not {self.format!r}")
