"""Record files -> one document for the HTML report (``lolctl report FILE... --html OUT``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.report.records import SCORE_REPORT
from lolctl.scan import load_records


def load(paths: list[Path]) -> dict[str, Any]:
    """One document from record files: JSONL of score records (``scan -o``, ``scan``/``score -f jsonl``) or JSON
    documents (``scan``/``gate``/``score -f json``). Several files (e.g. the shards of a scan) are joined; a summary
    is kept only from a single scan document (the report recomputes it otherwise, without the skipped files)."""
    records: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] | None = None
    docs: list[dict[str, Any]] = []
    for path in paths:
        if not path.is_file():
            raise LolctlError("L100", str(path), "no such file",
                              "pass a scan output (scan -o FILE) or a --format json file")
        try:
            whole = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError:
            whole = None  # several lines: JSONL
        if isinstance(whole, dict) and isinstance(whole.get("records"), list):
            docs.append(whole)
            records += [r for r in whole["records"] if isinstance(r, dict)]
            if isinstance(whole.get("checks"), list):
                checks = (checks or []) + whole["checks"]
        elif (isinstance(whole, dict) and "check" in whole) or _first_is_check(path):
            raise LolctlError("L180", str(path), "gate checks, not score records (gate --format jsonl)",
                              "write the gate's records with gate --format json, or pass gate --html FILE")
        else:
            records += load_records(path, repair=False)
    summary = docs[0].get("summary") if len(paths) == 1 and docs else None
    schema = str(docs[0].get("schema")) if len(docs) == len(paths) == 1 else SCORE_REPORT
    return {"schema": schema, "records": records, "summary": summary, "checks": checks}


def _first_is_check(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        try:
            first = json.loads(fh.readline() or "null")
        except json.JSONDecodeError:
            return False
    return isinstance(first, dict) and "check" in first and "status" not in first
