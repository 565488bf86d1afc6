"""`scan --html`, `gate --html` and `lolctl report FILE... --html OUT`: the HTML report from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import invoke
from hubserver import peft_files, write_files

HOSTILE = "evil<script>alert(1)</script>"


def _adapters(root: Path) -> Path:
    for i, name in enumerate(["a", "b", HOSTILE]):
        write_files(root / name, peft_files(i))
    write_files(root / "a-copy", peft_files(0))  # the same update as a
    (root / "broken").mkdir()
    (root / "broken" / "adapter_model.safetensors").write_bytes(b"{}")
    return root


def _sections(page: str) -> int:
    return page.count("<details class='adapter'")


def test_scan_html_and_report_from_its_jsonl(tmp_path: Path):
    root = _adapters(tmp_path / "in")
    html, jsonl = tmp_path / "scan.html", tmp_path / "scan.jsonl"
    code, res = invoke(["scan", str(root), "--health-only", "-o", str(jsonl), "--html", str(html), "-f", "jsonl"])
    assert code == 2, res.output  # the broken file is an error record; the report is written all the same
    page = html.read_text()
    assert _sections(page) == 5 and "Unreadable (1)" in page and "Duplicates (1)" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "1 skipped" not in page and "Skipped files: not recorded" not in page  # a scan knows its skipped files
    assert "lolctl scan report" in page

    again = tmp_path / "again.html"
    code, res = invoke(["report", str(jsonl), "--html", str(again)])
    assert code == 0, res.output
    page = again.read_text()
    assert _sections(page) == 5 and "Duplicates (1)" in page and "Skipped files: not recorded" in page


def test_resumed_scan_report_holds_every_record(tmp_path: Path):
    root = tmp_path / "in"
    write_files(root / "first", peft_files(1))
    jsonl, html = tmp_path / "scan.jsonl", tmp_path / "scan.html"
    assert invoke(["scan", str(root), "--health-only", "-o", str(jsonl), "-f", "json"])[0] == 0
    write_files(root / "second", peft_files(2))
    code, res = invoke(["scan", str(root), "--health-only", "-o", str(jsonl), "--resume", "--html", str(html),
                        "-f", "json"])
    assert code == 0, res.output
    assert len(json.loads(res.stdout)["records"]) == 1  # this run scored one...
    page = html.read_text()
    assert _sections(page) == 2 and "/first<" in page and "/second<" in page  # ...the report shows both


def test_gate_html(tmp_path: Path):
    root = tmp_path / "in"
    write_files(root / "a", peft_files(1))
    html = tmp_path / "gate.html"
    code, res = invoke(["gate", str(root / "a"), "--fail-on", "never", "--html", str(html)])
    assert code == 0, res.output
    page = html.read_text()
    assert "Gate passed" in page and "lolctl gate report" in page and _sections(page) == 1


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_report_joins_shards_and_gate_documents(tmp_path: Path):
    root = _adapters(tmp_path / "in")
    parts = [tmp_path / f"part{i}.jsonl" for i in range(2)]
    for i, part in enumerate(parts):
        invoke(["scan", str(root), "--health-only", "--shard", f"{i}/2", "-o", str(part), "-f", "json"])
    html = tmp_path / "all.html"
    assert invoke(["report", *map(str, parts), "--html", str(html)])[0] == 0
    assert _sections(html.read_text()) == 5

    gate_json = tmp_path / "gate.json"
    code, res = invoke(["gate", str(root / "a"), str(root / "b"), "-f", "json"])
    gate_json.write_text(res.stdout)
    assert invoke(["report", str(gate_json), "--html", str(html)])[0] == 0
    assert "Gate passed" in html.read_text() and _sections(html.read_text()) == 2


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_report_refuses_what_is_not_records(tmp_path: Path):
    checks = tmp_path / "checks.jsonl"
    checks.write_text(json.dumps({"source": "a", "check": "findings<error", "passed": True}) + "\n")
    code, res = invoke(["report", str(checks), "--html", str(tmp_path / "x.html")])
    assert code == 2 and "gate --format json" in str(res.exception)
    code, res = invoke(["report", str(tmp_path / "missing.jsonl"), "--html", str(tmp_path / "x.html")])
    assert code == 2 and "L100" in res.exception.code
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    code, res = invoke(["report", str(text), "--html", str(tmp_path / "x.html")])
    assert code == 2 and res.exception.code == "L180"
    assert not (tmp_path / "x.html").exists()
