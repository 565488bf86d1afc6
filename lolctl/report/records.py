"""Typed records: one class per kind of record lolctl writes, one ``to_dict`` each (the JSON of docs/schema.md).

- :class:`ScoreRecord`: one readable adapter (health, prediction, notes; ``lolctl.score/v1``);
- :class:`ErrorRecord`: one adapter or source that could not be read (same schema, ``"status": "error"``);
- :class:`Check` and :class:`GateResult`: one gate check, and the gate's verdict over all of them.

The pipeline passes these objects around; dicts exist only at the JSON boundary (``to_dict`` when writing,
:func:`parse_record` when reading a scan file back). Each schema string is defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from lolctl.errors import CODES, LolctlError, printable

SCORE = "lolctl.score/v1"  # one record per adapter (score, scan, gate; each line of scan --output)
SCORE_REPORT = "lolctl.score-report/v1"  # score --format json
SCAN = "lolctl.scan/v1"  # scan --format json
GATE = "lolctl.gate/v1"  # gate --format json
INSPECT = "lolctl.inspect/v1"  # inspect --format json
INSPECT_RECORD = "lolctl.inspect-record/v1"  # each adapter of inspect (its --format jsonl lines)
DIFF = "lolctl.diff/v1"  # diff --format json
TRAIN = "lolctl.train/v1"  # train --format json
EVAL = "lolctl.eval/v1"  # eval --format json
COMPARE = "lolctl.compare/v1"  # compare --format json
CALIBRATE = "lolctl.calibrate/v1"  # calibrate --format json


@dataclass
class ErrorRecord:
    """An item that could not be read or scored: the error's code, where, reason and remedy (``LolctlError``)."""

    source: str  # what the user named (a path as given, user/repo[@rev][:FILE])
    item: str  # stable id of the scanned item (absolute path or hf://...), the key of --resume and --shard
    error: dict[str, Any]  # LolctlError.to_dict(): code, name, where, reason, remedy, exit_code
    hub: dict[str, Any] | None = None  # Hub facts when the repo was fetched before the error

    ok: ClassVar[bool] = False
    status: ClassVar[Literal["error"]] = "error"

    @classmethod
    def of(cls, source: str, item: str, err: LolctlError, hub: dict[str, Any] | None = None) -> ErrorRecord:
        return cls(source, item, err.to_dict(), hub)

    @property
    def code(self) -> str:
        return str(self.error.get("code", "?"))

    @property
    def exit_code(self) -> int:
        code = CODES.get(self.code)
        return code.exit_code if code is not None else int(self.error.get("exit_code", 2))

    def line(self) -> str:
        """The one-line message (as ``LolctlError.one_line``): code, where, reason, remedy; terminal-safe."""
        e = self.error
        text = f"error[{e.get('code')} {e.get('name')}] {e.get('where')}: {e.get('reason')}"
        return printable(text + (f" (fix: {e['remedy']})" if e.get("remedy") else ""))

    def to_dict(self) -> dict[str, Any]:
        out = {"schema": SCORE, "source": self.source, "item": self.item, "status": self.status, "error": self.error}
        if self.hub:
            out["hub"] = self.hub
        return out


@dataclass
class ScoreRecord:
    """One readable adapter: its health (summary, findings, modules) and, when a checkpoint ran, its prediction."""

    source: str
    item: str
    path: str  # the local path that was read (inside the HF cache for Hub items)
    summary: dict[str, Any]  # adapter-level health summary (docs/findings.md)
    findings: list[dict[str, Any]]  # each {code, severity, message, module?, remedy?}
    max_severity: str | None
    prediction: dict[str, Any] | None  # {checkpoint, base_model, tasks, ood, about}; None: notes say why
    notes: list[str] = field(default_factory=list)
    hub: dict[str, Any] | None = None
    spectrum: dict[str, Any] | None = None  # the singular values in brief (lolctl/spectrum.py), for the HTML report
    modules: list[dict[str, Any]] | None = None  # per-module statistics (score and inspect, not scan or gate)
    sketch: dict[str, Any] | None = None  # lolctl.dedup's GL-invariant sketch (scan)
    meta: dict[str, Any] | None = None  # what the reader found (inspect): format, files, config fields, payload
    duplicate_of: str | None = None  # scan: the source of an earlier adapter with the same update
    similarity: float | None = None  # with duplicate_of: the exact cosine of the two updates

    ok: ClassVar[bool] = True
    status: ClassVar[Literal["ok"]] = "ok"

    @property
    def ood(self) -> bool:
        """Predicted, and flagged out of the checkpoint's training distribution."""
        return bool(((self.prediction or {}).get("ood") or {}).get("flag"))

    def to_dict(self) -> dict[str, Any]:
        """The ``lolctl.score/v1`` record; optional fields only when present (``meta`` belongs to inspect's
        records, see :meth:`inspect_dict`)."""
        out: dict[str, Any] = {
            "schema": SCORE, "source": self.source, "item": self.item, "status": self.status, "path": self.path,
            "summary": self.summary, "findings": self.findings, "max_severity": self.max_severity,
            "prediction": self.prediction, "notes": self.notes,
        }
        if self.hub is not None:
            out["hub"] = self.hub
        out["spectrum"] = self.spectrum
        for key in ("modules", "sketch"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.duplicate_of is not None:
            out["duplicate_of"] = self.duplicate_of
            out["similarity"] = self.similarity
        return out


Record = ScoreRecord | ErrorRecord


def inspect_dict(record: Record) -> dict[str, Any]:
    """The ``lolctl.inspect-record/v1`` entry of a record: health and reader facts, no prediction."""
    if isinstance(record, ErrorRecord):
        return {"schema": INSPECT_RECORD, "source": record.source, "status": record.status, "error": record.error}
    return {"schema": INSPECT_RECORD, "source": record.source, "summary": record.summary,
            "findings": record.findings, "modules": record.modules or [], "status": record.status,
            "meta": record.meta}


_SCORE_FIELDS = ("source", "item", "path", "summary", "findings", "max_severity", "prediction", "notes", "hub",
                 "spectrum", "modules", "sketch", "meta", "duplicate_of", "similarity")


def parse_record(data: dict[str, Any]) -> Record:
    """A record read back from JSON (a scan file): fields this version does not know are ignored."""
    if data.get("status") == "ok":
        kwargs: dict[str, Any] = {k: data.get(k) for k in _SCORE_FIELDS}
        kwargs["findings"] = kwargs["findings"] or []
        kwargs["notes"] = kwargs["notes"] or []
        kwargs["summary"] = kwargs["summary"] or {}
        kwargs["path"] = kwargs["path"] or ""
        return ScoreRecord(**kwargs)
    return ErrorRecord(data.get("source", "?"), data.get("item", ""), data.get("error") or {}, data.get("hub"))


@dataclass(frozen=True)
class Check:
    """One gate check of one adapter."""

    source: str
    name: str  # the requirement text, or "findings<SEVERITY", "in-distribution", "readable"
    passed: bool
    message: str
    actual: float | None = None
    error: bool = False  # an input error (unreadable adapter), not a failed check

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "check": self.name, "passed": self.passed, "actual": self.actual,
                "message": self.message, "error": self.error}


@dataclass
class GateResult:
    """The gate's verdict: every check, and the records they were computed from."""

    checks: list[Check]
    records: list[Record]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"schema": GATE, "passed": self.passed, "checks": [c.to_dict() for c in self.checks],
                "records": [r.to_dict() for r in self.records]}
