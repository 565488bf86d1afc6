"""`lolctl gate`: requirement parsing and evaluation, JUnit and SARIF files, exit codes, failing checks on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from clitools import cli_app, invoke
from hubserver import peft_files, tiny_checkpoint, write_files
from typer.testing import CliRunner

from lolctl.errors import LolctlError
from lolctl.gate import evaluate, parse_requirement, sarif_document, write_junit
from lolctl.report.records import ErrorRecord, ScoreRecord


def _record(source="a", findings=(), prediction=None, notes=()):
    return ScoreRecord(source, source, source, {}, list(findings), None, prediction, list(notes))


PRED = {"checkpoint": "ck", "tasks": {
    "quality": {"kind": "regression", "value": 0.7, "interval": [0.55, 0.85]},
    "membership": {"kind": "multilabel", "probs": {"noun.animal": 0.2, "noun.food": 0.9}},
}, "ood": {"flag": False, "reasons": []}}


@pytest.mark.parametrize(
    "text, task, label, field, op, threshold",
    [
        ("quality>=0.6", "quality", None, "value", ">=", 0.6),
        (" quality.lower > .5 ", "quality", None, "lower", ">", 0.5),
        ("quality.hi<=1e0", "quality", None, "upper", "<=", 1.0),
        ("membership[noun.animal]<0.5", "membership", "noun.animal", "value", "<", 0.5),
        ("membership[a b]!=-1", "membership", "a b", "value", "!=", -1.0),
    ],
)
def test_parse_requirement(text, task, label, field, op, threshold):
    req = parse_requirement(text)
    assert (req.task, req.label, req.field, req.op, req.threshold) == (task, label, field, op, threshold)


@pytest.mark.parametrize("text", ["quality", "quality=>0.6", ">=0.6", "quality>=high", "m[x].lower<1", "q>=0.6x"])
def test_bad_requirements_are_l181(text):
    with pytest.raises(LolctlError) as err:
        parse_requirement(text)
    assert err.value.code == "L181" and err.value.exit_code == 2


def test_evaluate_requirements_and_findings():
    reqs = [parse_requirement(t) for t in ("quality>=0.6", "quality.lower>=0.6", "membership[noun.animal]<0.5",
                                           "membership[noun.food]<0.5")]
    findings = [{"code": "H201", "severity": "warning", "message": "m"}]
    checks = evaluate(_record(prediction=PRED, findings=findings), reqs, "error")
    assert [(c.name, c.passed) for c in checks] == [
        ("findings<error", True), ("quality>=0.6", True), ("quality.lower>=0.6", False),
        ("membership[noun.animal]<0.5", True), ("membership[noun.food]<0.5", False)]
    assert checks[2].actual == pytest.approx(0.55) and "0.55" in checks[2].message
    strict = evaluate(_record(prediction=PRED, findings=findings), [], "warning")
    assert not strict[0].passed and "H201" in strict[0].message
    assert evaluate(_record(findings=findings), [], "never") == []


def test_evaluate_without_prediction_fails_with_the_reason():
    reqs = [parse_requirement("quality>=0.1")]
    (sev, check) = evaluate(_record(notes=["no checkpoint fits base model x"]), reqs)
    assert sev.passed and not check.passed and "no checkpoint fits" in check.message


def test_evaluate_error_record_is_an_input_error():
    rec = ErrorRecord.of("b", "b", LolctlError("L120", "f", "short"))
    (check,) = evaluate(rec, [parse_requirement("quality>=0.1")])
    assert check.error and not check.passed and "L120" in check.message


@pytest.mark.parametrize("text", ["accuracy>=0.5", "membership[noun.plant]<0.5", "quality[x]>0", "membership<0.5"])
def test_unknown_task_or_label_is_an_input_error(text):
    with pytest.raises(LolctlError) as err:
        evaluate(_record(prediction=PRED), [parse_requirement(text)])
    assert err.value.code == "L181"


def test_ood_check():
    pred = {**PRED, "ood": {"flag": True, "reasons": ["rank 8 not seen in training"]}}
    checks = evaluate(_record(prediction=pred), [], "never", fail_on_ood=True)
    assert [c.passed for c in checks] == [False] and "rank 8" in checks[0].message


def test_junit_and_sarif_documents(tmp_path):
    reqs = [parse_requirement("quality>=0.8")]
    findings = [{"code": "H202", "severity": "error", "message": "inert", "remedy": "train it"}]
    records = [_record("good", prediction=PRED), _record("bad", findings=findings, prediction=PRED),
               ErrorRecord.of("broken", "broken", LolctlError("L120", "w", "r"))]
    checks = [c for r in records for c in evaluate(r, reqs)]
    write_junit(tmp_path / "j.xml", checks)
    root = ET.parse(tmp_path / "j.xml").getroot()
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "3", "1")
    failing = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failing == {("good", "quality>=0.8"), ("bad", "quality>=0.8"), ("bad", "findings<error")}
    doc = sarif_document(records, checks)
    assert doc["version"] == "2.1.0"
    results = doc["runs"][0]["results"]
    assert {(r["ruleId"], r["level"]) for r in results} == {("H202", "error"), ("gate", "error"),
                                                            ("input-error", "error")}
    assert {r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]} >= {"H202", "gate"}


def test_sarif_points_at_repo_relative_weights_files_and_does_not_repeat_the_check(tmp_path, monkeypatch):
    run = tmp_path / "repo" / "out" / "run1"
    run.mkdir(parents=True)
    (run / "adapter_config.json").write_text("{}")
    (run / "adapter_model.safetensors").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "lora.safetensors").write_bytes(b"x")
    (tmp_path / "repo" / "linked").symlink_to(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.delenv("GITHUB_WORKSPACE", raising=False)
    finding = [{"code": "H202", "severity": "error", "message": "m"}]
    records = [_record("out/run1", findings=finding, prediction=PRED),
               _record(str(tmp_path / "repo" / "linked" / "lora.safetensors"), findings=finding),
               _record(str(tmp_path / "elsewhere" / "lora.safetensors"), findings=finding)]
    checks = evaluate(records[0], [parse_requirement("quality>=0.8")])
    doc = sarif_document(records, checks)
    locs = [r["locations"][0]["physicalLocation"]["artifactLocation"] for r in doc["runs"][0]["results"]]
    assert locs[0] == {"uri": "out/run1/adapter_model.safetensors", "uriBaseId": "%SRCROOT%"}
    assert locs[1] == {"uri": "linked/lora.safetensors", "uriBaseId": "%SRCROOT%"}
    assert locs[2] == {"uri": (tmp_path / "elsewhere" / "lora.safetensors").as_uri()}
    gate = [r for r in doc["runs"][0]["results"] if r["ruleId"] == "gate"]
    assert [r["message"]["text"] for r in gate] == ["quality>=0.8: got 0.7"]
    assert locs[-1] == locs[0]
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    doc = sarif_document(records[2:], [])
    assert doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "elsewhere/lora.safetensors")


def test_sarif_locations_are_relative_inside_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "out" / "run1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    rec = _record(str(tmp_path / "out" / "run1"), findings=[{"code": "H202", "severity": "error", "message": "m"}])
    doc = sarif_document([rec], [])
    assert doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "out/run1"
    other = sarif_document([_record("someuser/repo", findings=rec.findings)], [])
    assert other["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "someuser/repo")


# ---------------------------------------------------------------------- CLI
@pytest.fixture
def setup(tmp_path):
    good = write_files(tmp_path / "good", peft_files(1))
    inert = write_files(tmp_path / "inert", peft_files(2, zero_b=True))
    ckpt = tiny_checkpoint(tmp_path / "ckpt", good)
    code, res = invoke(["score", str(good), "-c", str(ckpt), "-f", "json", "--device", "cpu"])
    value = json.loads(res.stdout)["records"][0]["prediction"]["tasks"]["quality"]["value"]
    return {"good": good, "inert": inert, "ckpt": ckpt, "quality": value, "tmp": tmp_path}


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_gate_pass(setup):
    junit = setup["tmp"] / "pass.xml"
    code, res = invoke(["gate", str(setup["good"]), "-c", str(setup["ckpt"]), "--device", "cpu",
                        "--require", f"quality>={setup['quality'] - 0.5:.4f}", "--require",
                        "membership[noun.animal]<=1", "--junit", str(junit), "-f", "json"])
    assert code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "lolctl.gate/v1" and doc["passed"] and len(doc["checks"]) == 3
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_gate_fail_prints_failing_checks_and_writes_junit(setup):
    junit, sarif = setup["tmp"] / "out" / "fail.xml", setup["tmp"] / "out" / "fail.sarif"
    req = f"quality>={setup['quality'] + 0.5:.4f}"
    code, res = invoke(["gate", str(setup["good"]), str(setup["inert"]), "-c", str(setup["ckpt"]), "--device",
                        "cpu", "--require", req, "--junit", str(junit), "--sarif", str(sarif)])
    assert code == 1, res.output
    assert f"FAIL {setup['good']}: {req}" in res.stderr  # the failing checks are in the log, not only in files
    assert "findings<error" in res.stderr and "H20" in res.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "3"  # the requirement on both adapters, the inert adapter's findings
    assert json.loads(sarif.read_text())["runs"][0]["results"]


def test_gate_table_fits_80_columns(setup):
    res = CliRunner().invoke(cli_app(), ["gate", str(setup["good"]), str(setup["inert"]), "-c", str(setup["ckpt"]),
                                      "--device", "cpu", "-r", "membership[noun.animal]<=1"],
                             env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 1 and "FAIL" in res.stdout and "pass" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_gate_input_errors_exit_2(setup, tmp_path):
    assert invoke(["gate", str(setup["good"]), "--require", "quality>>1"])[0] == 2
    code, res = invoke(["gate", str(setup["good"]), "-c", str(setup["ckpt"]), "--device", "cpu",
                        "--require", "accuracy>0.5"])
    assert code == 2 and res.exception.code == "L181" and "quality" in res.exception.remedy
    broken = write_files(tmp_path / "broken", {**peft_files(3), "adapter_model.safetensors": b"\x00" * 5})
    code, res = invoke(["gate", str(broken), str(setup["good"]), "--junit", str(tmp_path / "e.xml")])
    assert code == 2 and "ERROR" in res.stderr
    assert ET.parse(tmp_path / "e.xml").getroot().find("testsuite").get("errors") == "1"


@pytest.mark.slow  # a Python subprocess
def test_gate_subprocess(setup):
    junit = setup["tmp"] / "sub.xml"
    proc = subprocess.run([sys.executable, "-m", "lolctl", "gate", str(setup["good"]), "-c", str(setup["ckpt"]),
                           "--device", "cpu", "-r", f"quality<{setup['quality'] - 0.5:.4f}", "--junit", str(junit)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "FAIL" in proc.stderr and "quality<" in proc.stderr and "Traceback" not in proc.stderr
    case = ET.parse(junit).getroot().find("testsuite").find("testcase[@name='quality<" +
                                                             f"{setup['quality'] - 0.5:.4f}']")
    assert case is not None and case.find("failure") is not None
    assert Path(junit).stat().st_size > 0


def test_fail_on_ood_fails_a_record_without_prediction_with_the_reason():
    rec = _record(notes=["checkpoint ck does not fit this adapter: L171 ..."])
    (check,) = evaluate(rec, [], "never", fail_on_ood=True)
    assert check.name == "in-distribution" and not check.passed and "does not fit" in check.message
    (check,) = evaluate(_record(), [], "never", fail_on_ood=True)  # no notes at all: still fails, still says why
    assert not check.passed and "no prediction" in check.message


@pytest.mark.parametrize("case", ["no-checkpoint", "spec-mismatch"])
@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_gate_fails_adapters_without_prediction(setup, tmp_path, monkeypatch, case):
    monkeypatch.setenv("LOLCTL_MODELS", str(tmp_path / "no-models"))
    if case == "no-checkpoint":  # base model tiny/base: no built-in checkpoint fits
        args, why = [str(setup["good"])], "no checkpoint fits base model tiny/base"
    else:  # one layer instead of two: the checkpoint's input spec does not fit
        one = write_files(tmp_path / "one", peft_files(4, layers=1))
        args, why = [str(one), "-c", str(setup["ckpt"]), "--device", "cpu"], "does not fit"
    junit, sarif = tmp_path / "g.xml", tmp_path / "g.sarif"
    code, res = invoke(["gate", *args, "--fail-on-ood", "--junit", str(junit), "--sarif", str(sarif)])
    assert code == 1, res.output
    assert "FAIL" in res.stderr and "in-distribution" in res.stderr and why in res.stderr
    assert "no prediction" in res.stdout  # the gate table's detail column (the reason wraps in it)
    case_el = ET.parse(junit).getroot().find("testsuite").find("testcase[@name='in-distribution']")
    assert why in case_el.find("failure").get("message")
    results = json.loads(sarif.read_text())["runs"][0]["results"]
    assert any(r["ruleId"] == "gate" and why in r["message"]["text"] for r in results)
    code, res = invoke(["gate", *args, "--require", "quality>=0", "-f", "json"])
    assert code == 1 and not json.loads(res.stdout)["passed"]
    (req,) = [c for c in json.loads(res.stdout)["checks"] if c["check"] == "quality>=0"]
    assert not req["passed"] and why in req["message"]
