"""CLI foundations: --help is instant (no torch), errors are one line with stable codes and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lolctl.errors import CODES, EXIT_INPUT, EXIT_NOTHING, LolctlError


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lolctl", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow  # a Python subprocess
def test_help_does_not_import_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lolctl", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "inspect" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported


@pytest.mark.slow  # a Python subprocess
def test_every_command_help_has_examples():
    for cmd in ("inspect", "score", "scan", "gate", "report", "train", "eval", "compare", "zoo build", "zoo info"):
        proc = _run(*cmd.split(), "--help")
        assert proc.returncode == 0 and "Examples" in proc.stdout, cmd


@pytest.mark.slow  # a Python subprocess
def test_error_is_one_line_with_code_and_exit_code(tmp_path):
    missing = tmp_path / "nope"
    proc = _run("inspect", str(missing))
    assert proc.returncode == EXIT_INPUT
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error[L100 source-not-found]") and str(missing) in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.slow  # a Python subprocess
def test_glob_matching_nothing_is_nothing_scannable(tmp_path):
    proc = _run("inspect", str(tmp_path / "*.safetensors"))
    assert proc.returncode == EXIT_NOTHING, proc.stderr
    assert "L101" in proc.stderr


def test_error_catalogue_is_consistent():
    names = [c.name for c in CODES.values()]
    assert len(names) == len(set(names))
    err = LolctlError("L120", "a/b.safetensors", "file is 10 bytes\nshort", "re-download it")
    assert "\n" not in str(err) and err.exit_code == EXIT_INPUT
    assert err.to_dict()["name"] == "file-truncated"
    with pytest.raises(ValueError):
        LolctlError("L999", "x", "y")
