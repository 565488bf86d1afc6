"""One adapter's folded section of the HTML report: facts, findings, predictions (or why there are none), its
singular-value spectrum, its gate checks. Every text from the record is escaped (:func:`lolctl.report.svg.esc`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lolctl.report.svg import esc, fmt, num, spectrum_chart

Record = dict[str, Any]


def mapping(rec: Record, key: str) -> dict[str, Any]:
    """``rec[key]`` when it is a mapping, else ``{}``: records read back from JSON may lack any field."""
    value = rec.get(key)
    return value if isinstance(value, dict) else {}


def section(rec: Record, anchor: str, status: str, link: Callable[[Any], str],
            checks: list[dict[str, Any]] | None) -> str:
    """``status``: the badges (HTML); ``link``: source → a link to its section; ``checks``: None when no gate ran."""
    worst = (rec.get("max_severity") or "none") if rec.get("status") == "ok" else "unreadable"
    parts = [f"<details class='adapter' id='{anchor}'><summary><span class='name'>{esc(rec.get('source', '?'))}"
             f"</span>{status} <span class='badge sev-{worst}'>{esc(worst)}</span></summary><div class='body'>"]
    if rec.get("status") != "ok":
        parts.append(_error(rec))
    else:
        parts += [_facts(rec), _findings(rec), _prediction(rec), _spectrum(rec)]
        if rec.get("duplicate_of"):
            parts.append(f"<p class='note'>Same update as {link(rec['duplicate_of'])} "
                         f"(cosine {cosine_text(rec.get('similarity'))}).</p>")
    if checks is not None:
        parts.append(_checks(checks))
    return "".join(parts) + "</div></details>"


def _dl(rows: list[tuple[str, Any]]) -> str:
    return "<dl class='facts'>" + "".join(f"<dt>{k}</dt><dd>{esc(v)}</dd>" for k, v in rows if v not in (None, "")) + \
        "</dl>"


def _error(rec: Record) -> str:
    e = mapping(rec, "error")
    return (f"<div class='errbox'><b>{esc(e.get('code', '?'))} {esc(e.get('name', ''))}</b>: "
            f"{esc(e.get('reason', ''))}</div>"
            + _dl([("where", e.get("where")), ("remedy", e.get("remedy")), ("item", rec.get("item"))]))


def _facts(rec: Record) -> str:
    s = mapping(rec, "summary")
    ranks = ", ".join(map(str, s.get("ranks") or [])) or "–"
    bad = s.get("nonfinite_modules") or 0
    hub = mapping(rec, "hub")
    return _dl([
        ("path", rec.get("path")),
        ("format", s.get("format")),
        ("base model", s.get("base_model") or "not recorded"),
        ("PEFT type", s.get("peft_type")),
        ("modules", f"{s.get('modules', '–')} (rank {ranks})"),
        ("parameters", f"{s['parameters']:,}" if isinstance(s.get("parameters"), int) else None),
        ("tensor bytes", _bytes(s.get("bytes"))),
        ("‖ΔW‖_F" + (f" (all but {bad} NaN/Inf modules)" if bad else ""), fmt(s.get("delta_fro_norm"))),
        ("max σ₁", fmt(s.get("max_spectral_norm"))),
        ("stable / effective rank", f"{fmt(s.get('mean_stable_rank'))} / {fmt(s.get('mean_effective_rank'))}"),
        ("Hub", f"{hub.get('repo_id')} @ {hub.get('sha') or hub.get('revision') or 'default'}" if hub else None),
    ])


def _bytes(n: Any) -> str | None:
    value = num(n)
    if value is None:
        return None
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _findings(rec: Record) -> str:
    findings = [f for f in rec.get("findings") or [] if isinstance(f, dict)]
    if not findings:
        return "<h4>Findings</h4><p class='muted'>No findings.</p>"
    rows = "".join(
        f"<tr><td><span class='badge sev-{esc(f.get('severity'))}'>{esc(f.get('severity'))}</span></td>"
        f"<td><code>{esc(f.get('code'))}</code></td><td>{esc(f.get('message'))}"
        + (f"<div class='muted small'>fix: {esc(f['remedy'])}</div>" if f.get("remedy") else "") + "</td></tr>"
        for f in findings)
    return (f"<h4>Findings ({len(findings)})</h4><table><thead><tr><th>severity</th><th>code</th><th>finding</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _prediction(rec: Record) -> str:
    pred = mapping(rec, "prediction")
    notes = [str(n) for n in rec.get("notes") or []]
    if not pred:
        reason = "; ".join(notes) or "no reason recorded (predictions skipped: --health-only, or a gate without " \
                                    "--require)"
        return f"<h4>Prediction</h4><p class='note'>No prediction: {esc(reason)}</p>"
    ood = mapping(pred, "ood")
    if ood.get("flag"):
        why = "; ".join(map(str, ood.get("reasons") or [])) or "no reason recorded"
        status = f"<p class='note'><b>Out of distribution</b> (score {fmt(ood.get('score'))}): {esc(why)}</p>"
    else:
        status = f"<p class='muted'>In distribution (score {fmt(ood.get('score'))}).</p>"
    if ood.get("kind") == "inert":
        status += "<p class='note'>ΔW = 0 in every module: the predictions are the base model's recorded facts.</p>"
    about = mapping(pred, "about")
    rows = []
    for name, task in (pred.get("tasks") or {}).items():
        task = task if isinstance(task, dict) else {}
        rows.append(f"<tr><td><b>{esc(name)}</b><div class='muted small'>{esc(about.get(name, ''))}</div></td>"
                    f"<td>{_task_value(task)}</td></tr>")
    extra = "".join(f"<p class='muted small'>{esc(n)}</p>" for n in notes)
    return (f"<h4>Prediction <span class='muted small'>checkpoint {esc(pred.get('checkpoint', '?'))}</span></h4>"
            f"{status}<table><thead><tr><th>task</th><th>prediction</th></tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table>{extra}")


def _task_value(task: dict[str, Any]) -> str:
    if task.get("kind") == "regression":
        value = num(task.get("value"))
        if value is None:
            return f"<span class='muted'>no value: {esc(task.get('note') or 'not recorded')}</span>"
        lo, hi = (list(task.get("interval") or []) + [None, None])[:2]
        interval = f" <span class='muted'>interval {fmt(lo)} – {fmt(hi)}</span>" if num(lo) is not None else ""
        return f"<b>{value:.3g}</b>{interval}"
    probs = sorted(((str(k), p) for k, v in (task.get("probs") or {}).items() if (p := num(v)) is not None),
                   key=lambda kv: -kv[1])
    if not probs:
        return f"<span class='muted'>no value: {esc(task.get('note') or 'not recorded')}</span>"
    return "".join(f"<div class='prob'><span class='pbar' style='width:{max(2.0, 120 * p):.0f}px'></span>{p:.2f} "
                   f"{esc(label)}</div>" for label, p in probs)


def _spectrum(rec: Record) -> str:
    spec = rec.get("spectrum")
    if not isinstance(spec, dict) and isinstance(rec.get("modules"), list):
        from lolctl.spectrum import spectrum  # a score record: the full module statistics are there

        spec = spectrum([m for m in rec["modules"] if isinstance(m, dict)])
    if not isinstance(spec, dict):
        return ("<h4>Singular values</h4><p class='muted'>Not in this record (written by an older lolctl, or no "
                "module has finite factors): rescan to draw the spectrum.</p>")
    svg, legend = spectrum_chart(spec)
    keys = "".join(f"<span><i class='sw' style='background:{color}'></i>{esc(role)}</span>" for color, role in legend)
    return (f"<h4>Singular values <span class='muted small'>{esc(spec.get('modules', '?'))} module(s), log scale"
            f"</span></h4><div class='chartbox'>{svg}</div><p class='legend'>{keys}</p>")


def _checks(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return "<h4>Gate checks</h4><p class='muted'>No checks for this adapter.</p>"
    rows = "".join(
        f"<tr><td>{esc(c.get('check'))}</td><td><span class='badge "
        f"{'sev-none' if c.get('passed') else 'sev-error'}'>{_verdict(c)}</span></td>"
        f"<td>{esc(c.get('message'))}</td></tr>" for c in checks)
    return (f"<h4>Gate checks</h4><table><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def cosine_text(x: Any) -> str:
    value = num(x)
    return "–" if value is None else f"{value:.6f}"


def _verdict(check: dict[str, Any]) -> str:
    return "pass" if check.get("passed") else "error" if check.get("error") else "FAIL"
