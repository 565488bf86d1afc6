"""The HTML report in a real headless browser (Debian's chromium): it renders, with every adapter section and chart
in the DOM and no console error. Skipped when chromium is not installed (`apt-get install chromium`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_html import HOSTILE, _error, _ok

from lolctl.report.html import render, write

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]
CONSOLE = re.compile(r":CONSOLE[:(]|Uncaught ")


def _browse(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM chromium built from ``page``, and the console messages it logged."""
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if CONSOLE.search(line)]


def test_console_errors_are_seen(tmp_path: Path):
    """The checker itself: a page with a script error is caught (so a clean result below means something)."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>no_such_function()</script></body></html>")
    _, console = _browse(bad, tmp_path)
    assert any("no_such_function" in line for line in console)


def test_report_renders_without_console_errors(tmp_path: Path):
    recs = [_ok(f"adapters/a{i:02d}", quality=0.2 + i / 50, ood=i == 4) for i in range(12)]
    recs += [_ok(HOSTILE, quality=None, notes=["no checkpoint fits base model gpt2"]), _error("adapters/broken")]
    page = tmp_path / "report.html"
    write(page, render(recs, checks=[{"source": "adapters/a00", "check": "quality>=0.3", "passed": False,
                                      "message": "got 0.2"}]))
    dom, console = _browse(page, tmp_path)
    assert console == []
    assert dom.count('class="adapter"') == len(recs)  # the browser's own serialisation: every section was built
    assert dom.count("<svg") >= 14 and "<script" not in dom
    assert "Gate FAILED" in dom and "&lt;script&gt;alert" in dom
