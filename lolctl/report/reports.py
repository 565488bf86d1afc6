"""What each command reports, in every format: a document (``--format json``), rows (``jsonl``, ``csv``) and Rich
renderables (``table``). :class:`lolctl.report.output.Output` picks one; commands never branch on the format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import RenderableType

from lolctl.report.records import INSPECT, SCAN, SCORE_REPORT, GateResult, Record, ScoreRecord, inspect_dict


class BaseReport:
    """Defaults: the rows are the document, csv flattens the rows, nothing on stderr in data modes."""

    origin: str = ""  # what produced the report (e.g. "lolctl scan ./adapters"); set by the command when it matters

    def document(self) -> dict[str, Any]:
        raise NotImplementedError

    def rows(self) -> list[dict[str, Any]]:
        return [self.document()]

    def flat_rows(self) -> list[dict[str, Any]]:
        """The rows ``--format csv`` flattens (the same as jsonl's unless a report says otherwise)."""
        return self.rows()

    def human(self) -> list[RenderableType]:
        raise NotImplementedError

    def footer(self) -> list[RenderableType]:
        return []


@dataclass
class ScoreReport(BaseReport):
    """`lolctl score`: every adapter's health and prediction, then what the checkpoints' tasks mean."""

    records: list[Record]

    def document(self) -> dict[str, Any]:
        return {"schema": SCORE_REPORT, "records": self.rows()}

    def rows(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]

    def human(self) -> list[RenderableType]:
        from lolctl.report.tables import about_tables, score_renderables

        shown = [x for r in self.records if isinstance(r, ScoreRecord) for x in score_renderables(r)]
        return shown + about_tables(self.records)


@dataclass
class InspectReport(BaseReport):
    """`lolctl inspect`: health and reader facts per adapter, modules grouped by layer unless ``grouped`` is off."""

    records: list[Record]
    grouped: bool = True

    def document(self) -> dict[str, Any]:
        return {"schema": INSPECT, "adapters": self.rows()}

    def rows(self) -> list[dict[str, Any]]:
        return [inspect_dict(r) for r in self.records]

    def human(self) -> list[RenderableType]:
        from lolctl.report.tables import inspect_renderables

        return [x for r in self.records if isinstance(r, ScoreRecord) for x in inspect_renderables(r, self.grouped)]


@dataclass
class ScanReport(BaseReport):
    """`lolctl scan`: this run's records and the summary of the whole scan (resumed records included)."""

    summary: dict[str, Any]
    records: list[Record]
    output: str | None = None  # the --output file, named in the summary table

    def document(self) -> dict[str, Any]:
        return {"schema": SCAN, "summary": self.summary, "records": self.rows()}

    def rows(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]

    def human(self) -> list[RenderableType]:
        from lolctl.report.tables import duplicate_lines, results_table

        return [results_table(self.records), *duplicate_lines(self.records), *self.footer()]

    def footer(self) -> list[RenderableType]:
        from lolctl.report.tables import scan_summary_table

        return [scan_summary_table(self.summary, self.output)]


@dataclass
class GateReport(BaseReport):
    """`lolctl gate`: one row per check (jsonl, csv, table); the json document also holds the records."""

    result: GateResult

    def document(self) -> dict[str, Any]:
        return self.result.to_dict()

    def rows(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.result.checks]

    def human(self) -> list[RenderableType]:
        from lolctl.report.tables import checks_table

        return [checks_table(self.result.checks)]


@dataclass
class DiffReport(BaseReport):
    """`lolctl diff`: the diff document (lolctl.diff/v1)."""

    doc: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return self.doc

    def human(self) -> list[RenderableType]:
        from lolctl.report.diff import diff_renderables

        return diff_renderables(self.doc)


@dataclass
class Document(BaseReport):
    """Any other command's result (train, eval, compare, zoo): a JSON document, its rows and its tables."""

    doc: dict[str, Any]
    renderables: list[RenderableType] = field(default_factory=list)
    records: list[dict[str, Any]] | None = None  # jsonl rows; None: the document is the one row
    csv_records: list[dict[str, Any]] | None = None  # csv rows when they differ from the jsonl rows

    def document(self) -> dict[str, Any]:
        return self.doc

    def rows(self) -> list[dict[str, Any]]:
        return self.records if self.records is not None else [self.doc]

    def flat_rows(self) -> list[dict[str, Any]]:
        return self.csv_records if self.csv_records is not None else self.rows()

    def human(self) -> list[RenderableType]:
        return self.renderables
