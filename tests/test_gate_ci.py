"""The CI wrappers: the GitHub Action's gate step (run with bash exactly as the runner would, inputs in the
environment) and the pre-commit hooks' entries."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hubserver import peft_files, write_files
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # runs the GitHub action's commands in subprocesses (quick set: pytest -m 'not slow')

REPO = Path(__file__).resolve().parents[1]
yaml = pytest.importorskip("yaml")


def _app():
    from lolctl.cli import _register, app

    _register()
    return app


def _gate_step() -> dict:
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    (step,) = [s for s in action["runs"]["steps"] if s.get("name") == "lolctl gate"]
    assert all("${{" not in line for line in step["run"].splitlines())  # inputs only through env
    return step


def _run_step(step: dict, inputs: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "lolctl"  # `lolctl` as the installed console script would be
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m lolctl \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    for key, template in step["env"].items():
        name = template.strip("${} ").removeprefix("inputs.")
        env[key] = inputs.get(name, "")
    return subprocess.run(["bash", "-c", step["run"]], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_action_gate_step_builds_the_command_and_fails_the_job(tmp_path):
    write_files(tmp_path / "out" / "run1", peft_files(1))
    write_files(tmp_path / "out" / "run2", peft_files(2, zero_b=True))  # inert: an error finding
    step = _gate_step()
    inputs = {"adapters": "out/run*", "require": "", "fail-on-severity": "error", "fail-on-ood": "false",
              "checkpoint": "", "junit": "reports/gate.xml", "sarif": "reports/gate.sarif"}
    proc = _run_step(step, inputs, tmp_path)
    assert proc.returncode == 1, proc.stderr  # the glob reached lolctl unexpanded and matched both runs
    suite = ET.parse(tmp_path / "reports" / "gate.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    assert "FAIL" in proc.stderr and "run2" in proc.stderr
    assert (tmp_path / "reports" / "gate.sarif").is_file()
    # requirements one per line (blank lines and padding ignored); no checkpoint fits tiny/base: they fail
    inputs.update({"adapters": "out/run1", "require": "  quality>=0.5  \n\nmembership[noun.animal] < 0.5\n"})
    proc = _run_step(step, inputs, tmp_path)
    assert proc.returncode == 1 and "cannot evaluate" in proc.stderr
    suite = ET.parse(tmp_path / "reports" / "gate.xml").getroot().find("testsuite")
    assert [c.get("name") for c in suite.iter("testcase")] == ["findings<error", "quality>=0.5",
                                                              "membership[noun.animal] < 0.5"]


def test_pre_commit_hooks_run_on_staged_weight_files(tmp_path):
    import re

    hooks = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"lolctl-inspect", "lolctl-gate"}
    good = write_files(tmp_path / "good", peft_files(1)) / "adapter_model.safetensors"
    inert = write_files(tmp_path / "inert", peft_files(2, zero_b=True)) / "adapter_model.safetensors"
    for hook in hooks.values():
        assert re.search(hook["files"], "models/x/adapter_model.safetensors")
        assert not re.search(hook["files"], "models/x/model.safetensors")
        argv = shlex.split(hook["entry"])
        assert argv[0] == "lolctl"
        res = CliRunner().invoke(_app(), [*argv[1:], str(good)])
        assert res.exit_code == 0, (hook["id"], res.output)
        res = CliRunner().invoke(_app(), [*argv[1:], str(good), str(inert)])
        assert res.exit_code == 1, (hook["id"], res.output)
