"""One self-contained HTML audit report from score records (scan, gate or score; docs/schema.md).

The page has no scripts, no external fonts, styles or images and makes no request: charts are inline SVG
(:mod:`lolctl.report.svg`), sections fold with ``<details>``. Every text from the records (adapter names, findings,
notes, labels: all of it comes from files users download) is escaped. The page grows linearly with the records.

Sections: summary (counts, worst finding per adapter, error codes, out of distribution, duplicates, skipped files),
the gate verdict (gate only), predictions (one chart per task, and why adapters have none), duplicates, unreadable
adapters, an overview table, then one folded section per adapter (facts, findings, predictions, spectrum).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from lolctl.report.adapter import cosine_text, mapping, section
from lolctl.report.output import write_atomic
from lolctl.report.records import GATE, SCAN
from lolctl.report.style import CSS
from lolctl.report.svg import Point, esc, fmt, interval_chart, label_chart, num, severity_bar

Record = dict[str, Any]
SEVERITY_ORDER = ("error", "warning", "info", "none", "unreadable")


def render(records: list[Record], *, summary: dict[str, Any] | None = None, checks: list[dict[str, Any]] | None = None,
           title: str = "lolctl audit report", origin: str = "") -> str:
    """The page for ``records``. ``summary``: a scan summary (``lolctl.scan/v1``; recomputed from the records when
    absent, without the skipped files only a scan knows); ``checks``: gate checks (``lolctl.gate/v1``), if any."""
    from lolctl import __version__

    recs = sorted((r for r in records if isinstance(r, dict)), key=lambda r: str(r.get("source", "")))
    page = _Page(recs, checks)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        f"<header><h1>{esc(title)}</h1><p class='muted'>{len(recs)} record(s) · generated {stamp} by lolctl "
        f"{esc(__version__)}{' · from ' + esc(origin) if origin else ''}</p></header>",
        page.summary(summary if summary is not None else _summary(recs)),
        page.gate() if checks is not None else "",
        page.predictions(),
        page.duplicates(),
        page.errors(),
        page.overview(),
        page.adapters(),
        "<footer class='muted'>Self-contained report: no scripts, no network. Records: docs/schema.md; "
        "findings: docs/findings.md.</footer>",
    ]
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


TITLES = {SCAN: "lolctl scan report", GATE: "lolctl gate report"}


def render_document(document: dict[str, Any], origin: str = "") -> str:
    """The page for a JSON document (``lolctl.scan/v1``, ``lolctl.gate/v1``, ``lolctl.score-report/v1``): its
    records, with the scan's summary and the gate's checks when it has them."""
    checks = document.get("checks")
    return render(document.get("records") or [], summary=document.get("summary"),
                  checks=checks if isinstance(checks, list) else None,
                  title=TITLES.get(str(document.get("schema")), "lolctl audit report"), origin=origin)


def write_report(report: Any, stream: TextIO) -> None:
    """The ``html`` writer of :mod:`lolctl.report.output` (``Output.save(report, FILE, "html")``): the page of the
    report's JSON document, naming the report's origin."""
    stream.write(render_document(report.document(), origin=getattr(report, "origin", "")))


def write(path: Path, text: str) -> None:
    """Write a page atomically (lolctl.report.output.write_atomic)."""
    write_atomic(Path(path), text)


def _summary(records: list[Record]) -> dict[str, Any]:
    from lolctl.report.records import parse_record
    from lolctl.scan import ScanSummary

    summary = ScanSummary(items=len({r.get("item") for r in records}))
    for rec in records:
        summary.add(parse_record(rec))
    out = summary.to_dict()
    out["skipped"] = None  # unknown: only a scan that walked the folders knows them
    return out


def _ok(rec: Record) -> bool:
    return rec.get("status") == "ok"


def _pred(rec: Record) -> dict[str, Any]:
    return mapping(rec, "prediction")


def _ood(rec: Record) -> bool:
    return bool((_pred(rec).get("ood") or {}).get("flag"))


def _worst(rec: Record) -> str:
    return (rec.get("max_severity") or "none") if _ok(rec) else "unreadable"


def _no_prediction_reason(rec: Record) -> str:
    notes = [str(n) for n in rec.get("notes") or []]
    return "; ".join(notes) or "no reason recorded (predictions skipped: --health-only, or a gate without --require)"


def _badge(text: str, kind: str) -> str:
    return f"<span class='badge {kind}'>{esc(text)}</span>"


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``rows`` hold HTML already escaped by the caller."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


class _Page:
    def __init__(self, records: list[Record], checks: list[dict[str, Any]] | None) -> None:
        self.records = records
        self.anchor: dict[str, str] = {}
        for i, rec in enumerate(records):
            self.anchor.setdefault(str(rec.get("source", "")), f"a{i}")
        self.checks: dict[str, list[dict[str, Any]]] = {}
        for c in checks or []:
            self.checks.setdefault(str(c.get("source", "")), []).append(c)
        self.has_checks = checks is not None

    def link(self, source: Any) -> str:
        anchor = self.anchor.get(str(source))
        return f"<a href='#{anchor}'>{esc(source)}</a>" if anchor else esc(source)

    # ------------------------------------------------------------------------------------------------ summary
    def summary(self, s: dict[str, Any]) -> str:
        worst = Counter(_worst(r) for r in self.records)
        dup_checked = any("sketch" in r or r.get("duplicate_of") for r in self.records)
        skipped = s.get("skipped")
        cards = [
            ("adapters", len(self.records), f"{s.get('items', '–')} item(s) scanned"),
            ("readable", s.get("ok", 0), "health report"),
            ("unreadable", s.get("errors", 0), "error records"),
            ("predicted", s.get("predicted", 0), "with a prediction"),
            ("out of distribution", s.get("ood", 0), "predictions to distrust"),
            ("duplicates", s.get("duplicates", 0) if dup_checked else "–",
             "same update as another" if dup_checked else "not checked (scan only)"),
            ("skipped files", "–" if skipped is None else len(skipped), "weights files, not adapters"),
        ]
        html = ["<section><h2>Summary</h2><div class='cards'>"]
        for label, value, note in cards:
            alert = " alert" if label in ("unreadable", "out of distribution") and value not in (0, "–") else ""
            html.append(f"<div class='card{alert}'><div class='v'>{esc(value)}</div><div class='k'>{esc(label)}"
                        f"</div><div class='muted small'>{esc(note)}</div></div>")
        html.append("</div><h3>Worst finding per adapter</h3>")
        html.append(severity_bar([(k, worst.get(k, 0)) for k in SEVERITY_ORDER]))
        html.append("<p class='legend'>" + " ".join(
            f"<span><i class='sw sev-{k}'></i>{esc(k)} {worst.get(k, 0)}</span>" for k in SEVERITY_ORDER) + "</p>")
        codes = s.get("error_codes") or {}
        if codes:
            html.append("<h3>Error codes</h3>" + _table(["code", "records"], [[esc(k), esc(v)] for k, v in
                                                                          sorted(codes.items())], "narrow"))
        if skipped is None:
            html.append("<p class='muted'>Skipped files: not recorded (this report was made from records; "
                        "<code>lolctl scan --html</code> lists the weights files that are not adapters).</p>")
        elif skipped:
            rows = [[esc(x.get("path")), esc(x.get("reason"))] for x in skipped if isinstance(x, dict)]
            html.append(f"<details><summary>{len(rows)} skipped weights file(s): not adapters</summary>"
                        + _table(["file", "why it was skipped"], rows) + "</details>")
        return "".join(html) + "</section>"

    def gate(self) -> str:
        checks = [c for cs in self.checks.values() for c in cs]
        failed = [c for c in checks if not c.get("passed")]
        verdict = ("<div class='verdict fail'>Gate FAILED" if failed else "<div class='verdict pass'>Gate passed")
        html = [f"<section><h2>Gate</h2>{verdict}: {len(checks) - len(failed)}/{len(checks)} checks passed</div>"]
        if failed:
            rows = [[self.link(c.get("source")), esc(c.get("check")), _badge("error" if c.get("error") else "FAIL",
                     "sev-error"), esc(c.get("message"))] for c in failed]
            html.append(_table(["adapter", "check", "result", "detail"], rows))
        return "".join(html) + "</section>"

    # ------------------------------------------------------------------------------------------------ predictions
    def predictions(self) -> str:
        html = ["<section><h2>Predictions</h2>"]
        tasks: dict[tuple[str, str], list[tuple[Record, dict[str, Any]]]] = {}
        about: dict[tuple[str, str], str] = {}
        for rec in self.records:
            pred = _pred(rec)
            for name, task in (pred.get("tasks") or {}).items():
                if isinstance(task, dict):
                    key = (str(pred.get("checkpoint", "?")), str(name))
                    tasks.setdefault(key, []).append((rec, task))
                    about.setdefault(key, str((pred.get("about") or {}).get(name, "")))
        for (ckpt, name), items in tasks.items():
            html.append(f"<h3>{esc(name)} <span class='muted small'>checkpoint {esc(ckpt)}</span></h3>")
            if about[(ckpt, name)]:
                html.append(f"<p class='muted'>{esc(about[(ckpt, name)])}</p>")
            html.append(self._task_chart(name, items))
        unpredicted = Counter(_no_prediction_reason(r) for r in self.records if _ok(r) and not _pred(r))
        if unpredicted:
            html.append(f"<h3>No prediction ({sum(unpredicted.values())} readable adapter(s))</h3>")
            html.append(_table(["reason", "adapters"], [[esc(k), str(v)] for k, v in unpredicted.most_common()]))
        if not tasks and not unpredicted:
            html.append("<p class='muted'>No readable adapter: nothing to predict.</p>")
        ood = [r for r in self.records if _ood(r)]
        if ood:
            rows = [[self.link(r.get("source")), fmt((_pred(r).get("ood") or {}).get("score")),
                     esc("; ".join(map(str, (_pred(r).get("ood") or {}).get("reasons") or [])) or "–")] for r in ood]
            html.append(f"<h3>Out of distribution ({len(ood)})</h3>"
                        "<p class='muted'>These adapters are unlike the checkpoint's training adapters: their "
                        "predictions are extrapolations.</p>" + _table(["adapter", "score", "why"], rows))
        return "".join(html) + "</section>"

    def _task_chart(self, name: str, items: list[tuple[Record, dict[str, Any]]]) -> str:
        kind = items[0][1].get("kind")
        missing = 0
        if kind == "regression":
            points = []
            for rec, task in items:
                value, interval = num(task.get("value")), task.get("interval") or [None, None]
                if value is None:
                    missing += 1
                    continue
                lo, hi = (num(interval[0]), num(interval[1])) if len(interval) == 2 else (None, None)
                points.append(Point(str(rec.get("source")), self.anchor[str(rec.get("source", ""))], value, lo, hi,
                                    _ood(rec)))
            chart = interval_chart(points, self._thresholds(name)) if points else ""
        else:
            sums: dict[str, float] = {}
            hits: Counter = Counter()
            for _, task in items:
                probs = {str(k): p for k, v in (task.get("probs") or {}).items() if (p := num(v)) is not None}
                if not probs:
                    missing += 1
                    continue
                for label, p in probs.items():
                    sums[label] = sums.get(label, 0.0) + p
                    hits[label] += p >= 0.5 if kind == "multilabel" else 0
                if kind != "multilabel":
                    hits[max(probs, key=lambda k: probs[k])] += 1
            n = len(items) - missing
            what = "have p ≥ 0.5" if kind == "multilabel" else "rank it first"
            chart = label_chart([(k, v / n, hits[k]) for k, v in sums.items()], n, what) if n else ""
        note = f"<p class='muted'>{missing} adapter(s) have no value for this task: see their notes.</p>" * bool(
            missing)
        return f"<div class='chartbox'>{chart}</div>{note}"

    def _thresholds(self, task: str) -> list[tuple[str, float]]:
        """Gate requirements on this regression task, drawn as lines."""
        from lolctl.errors import LolctlError
        from lolctl.gate import parse_requirement

        out = {}
        for c in (c for cs in self.checks.values() for c in cs):
            try:
                req = parse_requirement(str(c.get("check", "")))
            except LolctlError:
                continue
            if req.task == task and req.label is None:
                out[req.text] = req.threshold
        return list(out.items())

    # ------------------------------------------------------------------------------------------------ lists
    def duplicates(self) -> str:
        dups = [r for r in self.records if r.get("duplicate_of")]
        if not dups:
            checked = any("sketch" in r for r in self.records)
            text = "No two adapters have the same update." if checked else (
                "Not checked: these records carry no sketch (duplicates are found by <code>lolctl scan</code>, "
                "unless <code>--no-duplicates</code>).")
            return f"<section><h2>Duplicates</h2><p class='muted'>{text}</p></section>"
        rows = [[self.link(r.get("source")), self.link(r.get("duplicate_of")), cosine_text(r.get("similarity"))]
                for r in dups]
        return (f"<section><h2>Duplicates ({len(dups)})</h2><p class='muted'>Adapters whose update ΔW equals an "
                "earlier one's (bytes-identical or re-factored).</p>"
                + _table(["adapter", "same update as", "cosine"], rows) + "</section>")

    def errors(self) -> str:
        bad = [r for r in self.records if not _ok(r)]
        if not bad:
            return ""
        rows = []
        for r in bad:
            e = mapping(r, "error")
            code = f"<code>{esc(e.get('code', '?'))}</code> {esc(e.get('name', ''))}"
            rows.append([self.link(r.get("source")), code, esc(e.get("reason", "")), esc(e.get("remedy", ""))])
        return (f"<section><h2>Unreadable ({len(bad)})</h2>"
                + _table(["adapter", "error", "reason", "remedy"], rows) + "</section>")

    def overview(self) -> str:
        head = ["adapter", "status", "worst finding", "prediction"] + ["gate"] * self.has_checks
        rows = []
        for rec in self.records:
            row = [self.link(rec.get("source")), self._status(rec), _badge(_worst(rec), f"sev-{_worst(rec)}"),
                   esc(_headline(rec))]
            if self.has_checks:
                cs = self.checks.get(str(rec.get("source", "")), [])
                bad = sum(not c.get("passed") for c in cs)
                row.append(_badge(f"{bad} failed" if bad else "passed", "sev-error" if bad else "sev-none"))
            rows.append(row)
        return f"<section><h2>Adapters</h2>{_table(head, rows, 'overview')}</section>"

    def _status(self, rec: Record) -> str:
        if not _ok(rec):
            return _badge("unreadable", "sev-unreadable")
        badges = [_badge("ok", "ok")]
        if _ood(rec):
            badges.append(_badge("OOD", "sev-warning"))
        if rec.get("duplicate_of"):
            badges.append(_badge("duplicate", "dup"))
        return " ".join(badges)

    def adapters(self) -> str:
        body = "".join(section(rec, self.anchor[str(rec.get("source", ""))], self._status(rec), self.link,
                               self.checks.get(str(rec.get("source", "")), []) if self.has_checks else None)
                       for rec in self.records)
        return f"<section><h2>Details</h2><p class='muted'>Click an adapter to unfold it.</p>{body}</section>"


def _headline(rec: Record) -> str:
    """A short text for the overview: the first regression task with its interval, else the first task's top label."""
    if not _ok(rec):
        e = mapping(rec, "error")
        return f"{e.get('code', '?')} {e.get('name', '')}"
    tasks = _pred(rec).get("tasks") or {}
    if not tasks:
        return "no prediction"
    for name, task in tasks.items():
        if isinstance(task, dict) and num(task.get("value")) is not None:
            lo, hi = (list(task.get("interval") or []) + [None, None])[:2]
            return f"{name} {fmt(task['value'])}" + (f" [{fmt(lo)}, {fmt(hi)}]" if num(lo) is not None else "")
    for name, task in tasks.items():
        probs = {k: p for k, v in ((task or {}).get("probs") or {}).items() if (p := num(v)) is not None}
        if probs:
            label = max(probs, key=lambda k: probs[k])
            return f"{name} {label} {probs[label]:.2f}"
    return "no value (see notes)"

