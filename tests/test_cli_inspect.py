"""`lolctl inspect` end to end on adapters built by PEFT itself: JSON singular values equal a dense SVD of PEFT's
own delta weight; table mode groups layers; --fail-on drives the exit code."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("peft")
from test_read_peft import as_matrix, build, peft_deltas  # noqa: E402

from lolctl.cli import _register, app  # noqa: E402

_register()
runner = CliRunner()


@pytest.mark.parametrize("case", ["llama-rslora", "qwen2-patterns", "gpt2-conv1d-fan-in-fan-out", "conv2d"])
def test_json_singular_values_match_dense_svd_of_peft_delta(tmp_path, case):
    pm, adapter_name = build(tmp_path, case)
    res = runner.invoke(app, ["inspect", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "lolctl.inspect/v1"
    (rec,) = doc["adapters"]
    deltas = peft_deltas(pm, adapter_name)
    fan_in_fan_out = rec["meta"]["fan_in_fan_out"]
    assert {m["name"] for m in rec["modules"]} == set(deltas)
    for m in rec["modules"]:
        dense = torch.linalg.svdvals(as_matrix(deltas[m["name"]], m["kind"], fan_in_fan_out))[: m["rank"]]
        got = torch.tensor(m["singular_values"], dtype=torch.float64)
        torch.testing.assert_close(got, dense, rtol=1e-5, atol=1e-6)
        assert abs(m["fro_norm"] - float(dense.norm())) <= 1e-5 * max(1.0, float(dense.norm()))


def test_table_mode_groups_layers_and_lists_modules(tmp_path):
    build(tmp_path, "llama-rslora")
    res = runner.invoke(app, ["inspect", str(tmp_path)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "modules under model.layers.*.self_attn." in out and "no findings" in out
    rows = [line for line in out.splitlines() if line.startswith("│ ")]
    assert [r.split("│")[1].strip() for r in rows] == ["o_proj", "q_proj", "v_proj"]
    assert [r.split("│")[2].strip() for r in rows] == ["2", "2", "2"]  # two layers folded into each row
    assert max(len(line) for line in out.splitlines()) <= 80
    res = runner.invoke(app, ["inspect", str(tmp_path), "--modules"], env={"COLUMNS": "120"})
    assert "modules under model.layers." in res.stdout and "1.self_attn.o_proj" in res.stdout


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_inert_adapter_fails_at_default_severity(tmp_path):
    from peft import LoraConfig, get_peft_model
    from test_read_peft import tiny_bert

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(tiny_bert(), LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
        pm.save_pretrained(tmp_path)  # B is zero: saved before training
    res = runner.invoke(app, ["inspect", str(tmp_path), "--format", "json"])
    assert res.exit_code == 1
    codes = {f["code"]: f for f in json.loads(res.stdout)["adapters"][0]["findings"]}
    assert codes["H202"]["severity"] == "error"
    assert runner.invoke(app, ["inspect", str(tmp_path), "--fail-on", "never"]).exit_code == 0


def test_batch_continues_past_a_bad_item(tmp_path):
    good = tmp_path / "good"
    build(good, "llama-rslora")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    (bad / "adapter_model.safetensors").write_bytes(b"")
    res = runner.invoke(app, ["inspect", str(bad), str(good), "--format", "jsonl"])
    assert res.exit_code == 2
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["status"] for r in recs] == ["error", "ok"]
    assert recs[0]["error"]["code"].startswith("L1")


def _default_and_named(folder):
    """A PEFT model saved with its default adapter (r=2 on query) and a named one, "other" (r=3 on value)."""
    from peft import LoraConfig, get_peft_model
    from test_read_peft import tiny_bert

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(tiny_bert(), LoraConfig(r=2, target_modules=["query"], init_lora_weights=False))
        pm.add_adapter("other", LoraConfig(r=3, target_modules=["value"], init_lora_weights=False))
        pm.save_pretrained(folder)
    return folder


def test_a_named_adapter_beside_the_default_one_is_inspected_too(tmp_path):
    folder = _default_and_named(tmp_path / "saved")
    res = runner.invoke(app, ["inspect", str(folder), "--format", "json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)["adapters"]
    assert [(r["source"], r["summary"]["ranks"]) for r in recs] == [(str(folder), [2]), (str(folder / "other"), [3])]


def test_a_folder_of_several_adapters_is_walked_like_score_does(tmp_path):
    for name, case in (("a", "llama-rslora"), ("b", "conv2d")):
        build(tmp_path / "runs" / name, case)
    (tmp_path / "runs" / "notes.safetensors").write_bytes(b"{}")  # a 2-byte placeholder: an error record
    res = runner.invoke(app, ["inspect", str(tmp_path / "runs"), "--format", "jsonl"])
    assert res.exit_code == 2, res.output  # the placeholder is unreadable; the two adapters are inspected
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["source"].rsplit("/", 1)[1] for r in recs] == ["a", "b", "notes.safetensors"]
    assert [r["status"] for r in recs] == ["ok", "ok", "error"]
    assert "L104" not in res.stderr and "--name" not in res.stderr
    score = runner.invoke(app, ["score", str(tmp_path / "runs"), "-f", "jsonl", "--fail-on", "never"])
    assert [json.loads(line)["source"] for line in score.stdout.splitlines()] == [r["source"] for r in recs]
