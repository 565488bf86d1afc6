"""Base-model names an adapter config may record for the same model (bare name, HF / sentence-transformers cache
folders, none), the opt-in hint when only the shapes fit, task meanings shown with predictions, and doc thresholds
that the built-in checkpoint can reach."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from clitools import cli_app, invoke
from hubserver import peft_files, tiny_checkpoint, write_files
from typer.testing import CliRunner

from lolctl.nn.about import matches_base, task_descriptions

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SAME = [
    MINILM, "Sentence-Transformers/all-MiniLM-L6-v2/", "all-MiniLM-L6-v2",
    "/root/.cache/torch/sentence_transformers/sentence-transformers_all-MiniLM-L6-v2",
    "/root/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/8b3219a92973c328a8e22fa",
    "./models/all-MiniLM-L6-v2", "C:\\models\\all-MiniLM-L6-v2",
]
OTHER = ["someone/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L12-v2", "all-MiniLM-L6", "bert-base-uncased",
         "/root/.cache/huggingface/hub/models--someone--all-MiniLM-L6-v2/snapshots/abc", "", None]


@pytest.mark.parametrize("name", SAME)
def test_forms_of_the_same_base_model_match(name):
    assert matches_base(name, {"base_model": MINILM})


@pytest.mark.parametrize("name", OTHER)
def test_other_models_do_not_match(name):
    assert not matches_base(name, {"base_model": MINILM})


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A built-in checkpoint (via $LOLCTL_MODELS) for base model org/tiny-base."""
    ref = write_files(tmp_path / "ref", peft_files(1, base="org/tiny-base"))
    tiny_checkpoint(tmp_path / "models" / "tiny-ckpt", ref, base="org/tiny-base")
    monkeypatch.setenv("LOLCTL_MODELS", str(tmp_path / "models"))
    return tmp_path


@pytest.mark.parametrize("base", ["tiny-base", "/home/me/.cache/torch/sentence_transformers/org_tiny-base",
                                  "/home/me/.cache/huggingface/hub/models--org--tiny-base/snapshots/0a1b2c"])
def test_an_alias_finds_the_builtin_checkpoint_and_is_not_ood_for_its_name(models, base):
    adapter = write_files(models / "a", peft_files(2, base=base))
    code, res = invoke(["score", str(adapter), "-f", "json", "--device", "cpu"])
    assert code == 0, res.output
    pred = json.loads(res.stdout)["records"][0]["prediction"]
    assert pred is not None and pred["checkpoint"] == "tiny-ckpt"
    assert not any("base model" in r for r in pred["ood"]["reasons"])


@pytest.mark.parametrize("base", [None, "someone/my-copy"])
def test_shapes_fit_but_the_name_does_not_gives_the_opt_in(models, base):
    files = peft_files(3, base="x")
    cfg = json.loads(files["adapter_config.json"])
    cfg["base_model_name_or_path"] = base
    files["adapter_config.json"] = json.dumps(cfg).encode()
    adapter = write_files(models / "b", files)
    code, res = invoke(["score", str(adapter), "-f", "json", "--device", "cpu"])
    assert code == 0, res.output
    rec = json.loads(res.stdout)["records"][0]
    assert rec["prediction"] is None
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("note: no prediction")]
    assert "fit the built-in checkpoint tiny-ckpt" in line and "-c tiny-ckpt" in line and "org/tiny-base" in line
    assert (base or "records no base model") in line and line.endswith(rec["notes"][0])
    code, res = invoke(["score", str(adapter), "-c", "tiny-ckpt", "-f", "json", "--device", "cpu"])
    assert code == 0 and json.loads(res.stdout)["records"][0]["prediction"]["checkpoint"] == "tiny-ckpt"
    other = write_files(models / "c", peft_files(4, base=None, n=12))  # other shapes: the plain note, no opt-in
    code, res = invoke(["score", str(other), "-f", "json"])
    assert "no checkpoint fits" in res.stderr and "-c tiny-ckpt" not in res.stderr


def test_task_meanings_come_from_the_checkpoint_config(models):
    ckpt = models / "models" / "tiny-ckpt"
    config = json.loads((ckpt / "config.json").read_text())
    config["task_descriptions"] = {"quality": "a made-up meaning, 0.123 for the base model",
                                   "membership": "another one"}
    (ckpt / "config.json").write_text(json.dumps(config))
    adapter = write_files(models / "d", peft_files(5, base="org/tiny-base"))
    res = CliRunner().invoke(cli_app(), ["score", str(adapter), "--device", "cpu"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "what the tasks of tiny-ckpt mean" in res.stdout and "a made-up meaning, 0.123" in res.stdout
    code, res = invoke(["score", str(adapter), "-f", "json", "--device", "cpu"])
    assert json.loads(res.stdout)["records"][0]["prediction"]["about"] == config["task_descriptions"]


def _builtin_minilm():
    from lolctl.nn.checkpoint import find_checkpoint_for

    found = find_checkpoint_for(MINILM)
    if found is None:
        pytest.skip("no built-in MiniLM checkpoint in this installation")
    return json.loads((Path(found) / "config.json").read_text())


def test_builtin_quality_is_described_with_the_recorded_base_quality():
    config = _builtin_minilm()
    base_quality = config["training_data"]["recipe"]["facts"]["base_quality"]
    about = task_descriptions(config)
    assert "definition → lemma retrieval" in about["quality"] and f"{base_quality:.3f}" in about["quality"]
    recipe_only = {k: v for k, v in config.items() if k != "task_descriptions"}  # a config without its own texts
    recipe_only["training_data"]["recipe"]["facts"]["base_quality"] = 0.25  # read from the config, not hard-coded
    assert "0.250" in task_descriptions(recipe_only)["quality"]
    assert set(about) == {t["name"] for t in config["tasks"]}


def test_doc_thresholds_are_reachable_by_the_builtin_checkpoint():
    base_quality = _builtin_minilm()["training_data"]["recipe"]["facts"]["base_quality"]
    files = [ROOT / "README.md", ROOT / "action.yml", ROOT / ".pre-commit-hooks.yaml", *ROOT.glob("docs/*.md"),
             *ROOT.glob("lolctl/cli/*.py"), ROOT / "lolctl" / "gate.py"]
    found = []
    for f in files:
        for m in re.finditer(r"quality(?:\.lower|\.upper)?\s*>=?\s*([0-9.]+)", f.read_text(encoding="utf-8")):
            found.append((f.name, float(m.group(1))))
    assert found and all(value < base_quality for _, value in found), found
