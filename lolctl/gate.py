"""Gate checks over score records: ``--require`` expressions, a findings severity ceiling, JUnit and SARIF writers.

Requirement grammar (docs/cli.md)::

    TASK [ '[' LABEL ']' ] [ '.lower' | '.upper' ] OP NUMBER        OP in  >=  <=  >  <  ==  !=

- ``quality>=0.3``: a regression task's predicted value (``.lower`` / ``.upper``: its interval bounds);
- ``membership[noun.animal]<0.5``: a label's probability in a multilabel or multiclass task.

A requirement on a task the checkpoint does not predict (or a label it does not know) is an input error (L181, exit 2):
it is a typo, not a failing adapter. A record without predictions (no checkpoint fits, or its input spec does not
fit the adapter) fails every requirement and the ``--fail-on-ood`` check, with the reason. Error records (unreadable
adapters) are input errors, reported as JUnit ``<error>``.
"""

from __future__ import annotations

import operator
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.factors import severity_rank
from lolctl.report.records import Check, ErrorRecord, Record, ScoreRecord

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
_REQ = re.compile(
    r"^\s*(?P<task>[A-Za-z_][\w-]*)\s*(?:\[(?P<label>[^\]]+)\])?(?:\.(?P<field>lower|upper|lo|hi|value))?"
    r"\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Requirement:
    text: str
    task: str
    label: str | None
    field: str  # value | lower | upper
    op: str
    threshold: float

    def holds(self, actual: float) -> bool:
        return bool(OPS[self.op](actual, self.threshold))


def parse_requirement(text: str) -> Requirement:
    m = _REQ.match(text)
    if not m:
        raise LolctlError("L181", f"--require {text!r}", "expected TASK[LABEL] OP NUMBER",
                          "e.g. --require 'quality>=0.3' or --require 'membership[noun.animal]<0.5'")
    field = {"lo": "lower", "hi": "upper", None: "value"}.get(m.group("field"), m.group("field"))
    if m.group("label") and field != "value":
        raise LolctlError("L181", f"--require {text!r}", ".lower/.upper apply to regression tasks, not labels",
                          "drop the suffix")
    return Requirement(text.strip(), m.group("task"), m.group("label"), field, m.group("op"),
                       float(m.group("value")))


def _actual(req: Requirement, prediction: dict[str, Any], source: str) -> float | None:
    """The predicted number the requirement compares, or None when the prediction has none for it (``note`` says
    why, e.g. the size of an inert adapter's training data)."""
    tasks = prediction.get("tasks") or {}
    if req.task not in tasks:
        raise LolctlError("L181", f"--require {req.text!r}", f"checkpoint {prediction.get('checkpoint')} predicts "
                          f"no task {req.task!r}", f"known tasks: {', '.join(sorted(tasks)) or 'none'}")
    task = tasks[req.task]
    if task.get("kind") == "regression":
        if req.label is not None:
            raise LolctlError("L181", f"--require {req.text!r}", f"{req.task} is a regression task; it has no labels",
                              f"write {req.task}{req.op}{req.threshold:g}")
        if task.get("value") is None:
            return None
        if req.field == "value":
            return float(task["value"])
        lo, hi = task.get("interval") or (task["value"], task["value"])
        return float(lo if req.field == "lower" else hi)
    probs = task.get("probs") or {}
    if not probs and task.get("note"):
        return None
    if req.label is None:
        raise LolctlError("L181", f"--require {req.text!r}", f"{req.task} is a {task.get('kind')} task; name a label",
                          f"e.g. {req.task}[{next(iter(probs), 'LABEL')}]{req.op}{req.threshold:g}")
    if req.label not in probs:
        raise LolctlError("L181", f"--require {req.text!r}", f"{req.task} has no label {req.label!r}",
                          f"labels: {', '.join(list(probs)[:12])}")
    return float(probs[req.label])


def evaluate(record: Record, requirements: list[Requirement], fail_on_severity: str = "error",
             fail_on_ood: bool = False) -> list[Check]:
    """Every check for one score record (an error record gives one failed 'readable' check marked as error)."""
    source = record.source
    if isinstance(record, ErrorRecord):
        err = record.error
        message = f"error[{err.get('code')} {err.get('name')}] {err.get('where')}: {err.get('reason')}"
        return [Check(source, "readable", False, message, error=True)]
    checks: list[Check] = []
    if fail_on_severity != "never":
        ceiling = severity_rank(fail_on_severity)
        bad = [f for f in record.findings if severity_rank(f["severity"]) >= ceiling]
        message = "; ".join(f"{f['code']} {f['severity']}: {f['message']}" for f in bad) or "no such findings"
        checks.append(Check(source, f"findings<{fail_on_severity}", not bad, message, float(len(bad))))
    prediction = record.prediction
    ood = (prediction or {}).get("ood") or {}
    why = no_prediction_reason(record)
    if fail_on_ood:  # no prediction is not "in distribution": nothing vouches for the adapter
        if prediction:
            reasons = "; ".join(ood.get("reasons") or []) or "in distribution"
            checks.append(Check(source, "in-distribution", not ood.get("flag"), reasons))
        else:
            checks.append(Check(source, "in-distribution", False, f"no prediction: {why}"))
    for req in requirements:
        if not prediction:
            checks.append(Check(source, req.text, False, f"cannot evaluate, no prediction: {why}"))
            continue
        actual = _actual(req, prediction, source)
        if actual is None:
            why = (prediction.get("tasks") or {}).get(req.task, {}).get("note") or "no value"
            checks.append(Check(source, req.text, False, f"cannot evaluate: {why}"))
            continue
        passed = req.holds(actual)
        note = f" (out of distribution: {'; '.join(ood.get('reasons') or [])})" if ood.get("flag") else ""
        checks.append(Check(source, req.text, passed, f"got {actual:.4g}{note}", actual))  # the check names itself
    return checks


def no_prediction_reason(record: ScoreRecord) -> str:
    """Why an ok record has no prediction (its notes), never empty."""
    return "; ".join(record.notes) or "no checkpoint was run on this adapter"


# ---------------------------------------------------------------------- reports
def write_junit(path: Path, checks: list[Check]) -> None:
    """One <testcase> per check: classname = adapter source, name = check; failures and errors carry the message."""
    failures = sum(not c.passed and not c.error for c in checks)
    errors = sum(c.error for c in checks)
    suite = ET.Element("testsuite", name="lolctl gate", tests=str(len(checks)), failures=str(failures),
                       errors=str(errors), skipped="0")
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=c.source, name=c.name)
        if c.error:
            ET.SubElement(case, "error", message=c.message, type="input-error").text = c.message
        elif not c.passed:
            ET.SubElement(case, "failure", message=c.message, type="gate").text = c.message
        else:
            ET.SubElement(case, "system-out").text = c.message
    root = ET.Element("testsuites", name="lolctl", tests=str(len(checks)), failures=str(failures),
                      errors=str(errors))
    root.append(suite)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def sarif_document(records: list[Record], checks: list[Check]) -> dict[str, Any]:
    """SARIF 2.1.0: one result per finding (its code as rule) and per failed gate check (rule 'gate')."""
    from lolctl import __version__

    rules: dict[str, dict[str, Any]] = {
        "gate": {"id": "gate", "shortDescription": {"text": "a --require check failed"}},
        "input-error": {"id": "input-error", "shortDescription": {"text": "the adapter could not be read"}},
    }
    results: list[dict[str, Any]] = []

    paths = {rec.source: rec.path for rec in records if isinstance(rec, ScoreRecord)}

    def location(source: str) -> list[dict[str, Any]]:
        return [{"physicalLocation": {"artifactLocation": artifact(paths.get(source) or source)}}]

    for rec in records:
        for f in rec.findings if isinstance(rec, ScoreRecord) else []:
            rules.setdefault(f["code"], {"id": f["code"], "shortDescription": {"text": f["code"]}})
            text = f["message"] + (f" (fix: {f['remedy']})" if f.get("remedy") else "")
            results.append({"ruleId": f["code"], "level": _SARIF_LEVEL.get(f["severity"], "note"),
                            "message": {"text": text}, "locations": location(rec.source)})
    for c in checks:
        if c.passed or c.name.startswith("findings<"):
            continue  # findings are reported one by one above
        rule = "input-error" if c.error else "gate"
        results.append({"ruleId": rule, "level": "error", "message": {"text": f"{c.name}: {c.message}"},
                        "locations": location(c.source)})
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "lolctl", "version": __version__,
                                      "informationUri": "https://arxiv.org/abs/2410.04207",
                                      "rules": list(rules.values())}},
                  "results": results}],
    }


# the file a finding about an adapter folder points at (code-scanning UIs annotate files, not folders)
_MAIN_FILES = ("adapter_model.safetensors", "adapters.safetensors", "adapter_model.bin",
               "pytorch_lora_weights.safetensors", "adapter_config.json")


def artifact(source: str) -> dict[str, Any]:
    """SARIF artifactLocation of an adapter: a local file inside the repository (``$GITHUB_WORKSPACE``, else the
    working directory) becomes a repo-relative POSIX path with ``uriBaseId`` %SRCROOT% — what GitHub code scanning
    expects; a folder is replaced by its weights file. A local file outside the repository keeps an absolute
    ``file://`` URI; a Hub source stays as given."""
    path = Path(source)
    if not path.exists():
        return {"uri": source}
    if path.is_dir():
        main = next((path / n for n in _MAIN_FILES if (path / n).is_file()), None)
        main = main or next(iter(sorted(path.glob("*.safetensors"))), None)
        path = main or path
    root = Path(os.path.abspath(os.environ.get("GITHUB_WORKSPACE") or os.getcwd()))
    here = Path(os.path.abspath(path))  # as typed, links not followed: a linked file is annotated where it is linked
    try:
        return {"uri": here.relative_to(root).as_posix(), "uriBaseId": "%SRCROOT%"}
    except ValueError:
        return {"uri": here.as_uri()}


def write_sarif(path: Path, records: list[Record], checks: list[Check]) -> None:
    from lolctl.report.encode import dumps

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(sarif_document(records, checks), indent=2) + "\n", encoding="utf-8")
