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

from lolctl.report.output import write_csv
from lolctl.report.reports import Document

COMMANDS = ("inspect", "score", "scan", "gate", "train", "eval", "compare", "zoo build", "zoo info", "zoo pack",
            "zoo probes", "calibrate")


def _help(cmd: str) -> str:
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "lolctl", *cmd.split(), "--help"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow  # a Python subprocess
@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_has_no_python_type_names_and_one_set_of_examples(cmd):
    text = _help(cmd)
    assert "<bool>" not in text and "list[" not in text, text
    assert text.count("Examples") == 1, text


@pytest.mark.slow  # a Python subprocess
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
    write_csv(Document({"a": True, "b": {"c": False}, "n": 1}), buf)
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert row == {"a": "true", "b.c": "false", "n": "1"}


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
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


@pytest.mark.parametrize("text, expected", [("4096", 4096), ("10MB", 10_000_000), ("10 mb", 10_000_000),
                                            ("1.5GiB", 1_610_612_736), ("512KiB", 524_288), ("2e3", 2000),
                                            (None, None)])
def test_sizes_with_units(text, expected):
    from lolctl.cli.options import parse_size

    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-5", "0", "0.5", "ten", "10XB", "", "nan", "1e400"])
def test_bad_sizes_are_usage_errors(text):
    from lolctl.cli.options import parse_size
    from lolctl.errors import LolctlError

    with pytest.raises(LolctlError) as err:
        parse_size(text)
    assert err.value.code == "L180" and err.value.exit_code == 2


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_max_bytes_on_the_command_line(tmp_path):
    from tests.clitools import invoke

    folder = tmp_path / "a"
    _write_inert_adapter(folder)  # 56 bytes of tensors
    code, res = invoke(["inspect", str(folder)])  # inspect has no budget option: sanity of the fixture
    assert code == 1
    code, res = invoke(["score", str(folder), "--max-bytes", "-5"])
    assert code == 2 and "L180" in str(res.exception)
    code, res = invoke(["score", str(folder), "--max-bytes", "1kB", "--fail-on", "never", "-f", "json"])
    assert code == 0, res.output
    code, res = invoke(["score", str(folder), "--max-bytes", "40", "-f", "json"])
    assert code == 2 and json.loads(res.stdout)["records"][0]["error"]["code"] == "L125"


@pytest.mark.slow  # a Python subprocess
@pytest.mark.parametrize("command", ["score", "scan", "gate"])
def test_cuda_without_cuda_is_one_usage_error_up_front(tmp_path, command):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for i in range(3):
        _write_inert_adapter(tmp_path / f"a{i}")
    args = [sys.executable, "-m", "lolctl", command, str(tmp_path), "--device", "cuda"]
    if command == "gate":
        args += ["--require", "quality>=0.1"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("L182") == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


@pytest.mark.slow  # a Python subprocess
def test_errors_name_the_path_as_typed_not_the_link_target(tmp_path, monkeypatch):
    real = tmp_path / "store" / "adapter-7f3a"
    real.mkdir(parents=True)
    (real / "adapter_config.json").write_text("{}")
    (real / "adapter_model.safetensors").write_bytes(b"xx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").symlink_to(real)
    for command in ("inspect", "score"):
        proc = subprocess.run([sys.executable, "-m", "lolctl", command, "mine"], capture_output=True, text=True)
        assert proc.returncode == 2
        assert "error[L120 file-truncated] mine/adapter_model.safetensors:" in proc.stderr, proc.stderr
        assert "adapter-7f3a" not in proc.stderr


def test_interval_ends_keep_the_value_decimals():
    """"0.363  [0.326, 0.400]", never "[0.326, 0.4]": the ends are printed to the decimals of the 3-digit value."""
    from rich.console import Console

    from lolctl.report.tables import prediction_table, same_decimals

    assert same_decimals(0.363, 0.326, 0.4) == ["0.363", "0.326", "0.400"]
    assert same_decimals(8.57, 7.59, 9.5) == ["8.57", "7.59", "9.50"]
    assert same_decimals(0.0, 0.0, 0.044) == ["0.000", "0.000", "0.044"]
    assert same_decimals(None, 0.1, 0.2) == ["-", "0.1", "0.2"]
    assert same_decimals(1.5, float("nan"), None) == ["1.50", "-", "-"]
    pred = {"checkpoint": "c", "tasks": {"quality": {"kind": "regression", "value": 0.363, "interval": [0.326, 0.4]}}}
    console = Console(width=80, record=True)
    console.print(prediction_table(pred))
    assert "0.363  [0.326, 0.400]" in console.export_text()
