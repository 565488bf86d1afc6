"""Shell completion: `lolctl --install-completion bash` installs a script that completes commands and options."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_help_offers_completion_without_type_names():
    proc = subprocess.run([sys.executable, "-m", "lolctl", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--install-completion" in proc.stdout and "--show-completion" in proc.stdout
    assert "<bool>" not in proc.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_installed_bash_completion_completes(tmp_path: Path):
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    shim = bin_dir / "lolctl"  # the `lolctl` the completion script calls: this checkout
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lolctl "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "SHELL": "/bin/bash"}
    # from a bash, as a user runs it: typer detects the calling shell (shellingham); a shell name after the flag is
    # not read by every typer version. A second command keeps bash from exec'ing lolctl, so bash is its parent.
    proc = subprocess.run(["bash", "-c", "lolctl --install-completion; exit $?"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    script = home / ".bash_completions" / "lolctl.sh"
    assert script.is_file() and str(script) in (home / ".bashrc").read_text()

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        run = subprocess.run(
            ["bash", "-c", f'source "{script}"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; '
             '_lolctl_completion lolctl; printf "%s\\n" "${COMPREPLY[@]}"'],
            capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    assert complete("lolctl", "sc") == ["score", "scan"]
    assert "--html" in complete("lolctl", "scan", "--ht")
