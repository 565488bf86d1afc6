"""Issue #13 polish: help without Python type names, one set of examples, --fail-on everywhere (old spelling kept),
CSV booleans as JSON spells them, inspect records carrying their schema, checkpoint files readable by others."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys

import pytest

from lolctl.output import Output

COMMANDS = ("inspect", "score", "scan", "gate", "train", "eval", "compare", "zoo build", "zoo info", "zoo pack")


def _help(cmd: str) -> str:
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "lolctl", *cmd.split(), "--help"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_has_no_python_type_names_and_one_set_of_examples(cmd):
    text = _help(cmd)
    assert "<bool>" not in text and "list[" not in text, text
    assert text.count("Examples") == 1, text


def test_fail_on_is_the_gate_option_and_the_old_spelling_still_works(tmp_path):
    from tests.clitools import invoke

    text = _help("gate")
    assert "--fail-on " in text and "--fail-on-severity" not in text  # the alias is hidden
    folder = tmp_path / "a"
    _write_inert_adapter(folder)  # an all-zero B: finding H202 (error)
    for flag in ("--fail-on", "--fail-on-severity"):
        code, res = invoke(["gate", str(folder), flag, "never", "-f", "json"])
        assert code == 0, res.output
        code, res = invoke(["gate", str(folder), flag, "error", "-f", "json"])
        assert code == 1, res.output


def _write_inert_adapter(folder):
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2,
                                                            "target_modules": ["q"]}))
    save_file({"base_model.model.l.q.lora_A.weight": torch.ones(2, 4),
               "base_model.model.l.q.lora_B.weight": torch.zeros(3, 2)}, str(folder / "adapter_model.safetensors"))


def test_csv_booleans_are_lowercase():
    buf = io.StringIO()
    Output("csv", stdout=buf).csv([{"a": True, "b": {"c": False}, "n": 1}])
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert row == {"a": "true", "b.c": "false", "n": "1"}


def test_inspect_jsonl_records_carry_schema(tmp_path):
    from tests.clitools import invoke

    folder = tmp_path / "a"
    _write_inert_adapter(folder)
    (tmp_path / "broken.safetensors").write_bytes(b"{}")
    code, res = invoke(["inspect", str(folder), str(tmp_path / "broken.safetensors"), "-f", "jsonl"])
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert [rec["status"] for rec in lines] == ["ok", "error"]
    assert all(rec["schema"] == "lolctl.inspect-record/v1" for rec in lines)


def test_checkpoint_files_are_world_readable(tmp_path):
    from tests.test_nn_checkpoint import write

    old = os.umask(0o022)
    try:
        folder = write(tmp_path)
    finally:
        os.umask(old)
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
