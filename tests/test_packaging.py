"""A normal (non-editable) install must predict: the wheel carries the built-in checkpoints and the bundled examples.

The wheel test builds lolctl's wheel, installs it without dependencies into a fresh venv that sees this interpreter's
packages (torch, peft, ... — installing them again would cost minutes and prove nothing about lolctl), and runs the
installed ``lolctl score`` from a folder outside the repo, so nothing of the source tree can be picked up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_folder_is_listed_in_pyproject():
    """The package list is explicit (models/ beside lolctl/ defeats auto-discovery): a new subpackage must be added."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "lolctl").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(on_disk - listed)}"
    assert listed - on_disk == {"lolctl.checkpoints"}, sorted(listed - on_disk)


def test_shipped_checkpoints_map_to_models_folder():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"]["lolctl.checkpoints"] == "models"
    patterns = setuptools["package-data"]["lolctl.checkpoints"]
    from lolctl.nn.checkpoint import FILES, OPTIONAL_FILES

    for folder in (REPO / "models").glob("*/config.json"):
        for name in (*FILES, *OPTIONAL_FILES):
            assert any(Path(folder.parent.name, name).match(p) for p in patterns), (folder.parent.name, name)
        for path in folder.parent.iterdir():  # nothing in a shipped folder is left out of the wheel
            assert any(Path(folder.parent.name, path.name).match(p) for p in patterns), path


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_scores_the_examples_with_predictions(tmp_path):
    if not any((REPO / "models").glob("*/config.json")):
        pytest.skip("no built-in checkpoint in models/")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("lolctl-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the source tree on the path
    where = subprocess.run([str(python), "-c", "import lolctl; print(lolctl.__file__)"], cwd=work, check=True,
                           capture_output=True, text=True, env=env).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"lolctl was imported from {where}, not from the installed wheel"

    proc = subprocess.run([str(env_dir / "bin" / "lolctl"), "score", "--format", "json"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)["records"]
    assert len(records) == 3
    for rec in records:
        pred = rec["prediction"]
        assert pred is not None and pred["checkpoint"] == "minilm-wordnet-glnet", rec
        assert 0.0 <= pred["tasks"]["quality"]["value"] <= 1.0
    for shipped in (REPO / "models").glob("*/*"):  # every file of every checkpoint folder is installed
        assert (Path(where).parent / "checkpoints" / shipped.parent.name / shipped.name).is_file(), shipped

    gate = subprocess.run([str(env_dir / "bin" / "lolctl"), "gate", records[0]["source"], "--require", "quality>=0.0"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert gate.returncode == 0, gate.stdout + gate.stderr
