"""`lolctl score`: health-only when no checkpoint fits (with a note on stderr), predictions with a checkpoint,
out-of-distribution reasons, a checkpoint that does not fit, errors and exit codes; in process and as a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import cli_app, invoke
from hubserver import peft_files, tiny_checkpoint, write_files
from typer.testing import CliRunner

MINILM = "sentence-transformers/all-MiniLM-L6-v2"




@pytest.fixture
def adapters(tmp_path) -> dict[str, Path]:
    return {
        "good": write_files(tmp_path / "good", peft_files(1)),
        "rank3": write_files(tmp_path / "rank3", peft_files(2, r=3)),
        "other_base": write_files(tmp_path / "other", peft_files(3, base="someone/else")),
        "one_layer": write_files(tmp_path / "one", peft_files(4, layers=1)),
        "inert": write_files(tmp_path / "inert", peft_files(5, zero_b=True)),
    }


@pytest.fixture
def ckpt(tmp_path, adapters) -> Path:
    return tiny_checkpoint(tmp_path / "ckpt", adapters["good"])


def test_health_only_with_a_note_when_no_checkpoint_fits(adapters, monkeypatch, tmp_path):
    monkeypatch.setenv("LOLCTL_MODELS", str(tmp_path / "no-models"))
    code, res = invoke(["score", str(adapters["good"]), "-f", "json"])
    assert code == 0, res.output
    doc = json.loads(res.stdout)  # stdout: data only
    rec = doc["records"][0]
    assert rec["schema"] == "lolctl.score/v1" and rec["status"] == "ok" and rec["prediction"] is None
    assert rec["summary"]["base_model"] == "tiny/base" and rec["summary"]["modules"] == 4
    assert len(rec["modules"]) == 4 and all(len(m["singular_values"]) == 2 for m in rec["modules"])
    assert "no checkpoint fits base model tiny/base" in res.stderr and "lolctl train" in res.stderr
    assert rec["notes"] and "no checkpoint" in rec["notes"][0]


def test_predictions_with_a_checkpoint(adapters, ckpt):
    from lolctl.nn.checkpoint import load_checkpoint
    from lolctl.read import read_adapter

    code, res = invoke(["score", str(adapters["good"]), "-c", str(ckpt), "-f", "json", "--device", "cpu"])
    assert code == 0, res.output
    pred = json.loads(res.stdout)["records"][0]["prediction"]
    want = load_checkpoint(str(ckpt), device="cpu").predict([read_adapter(adapters["good"])])[0]
    assert pred["checkpoint"] == "tiny-ckpt"
    quality = pred["tasks"]["quality"]
    assert quality["value"] == pytest.approx(want["tasks"]["quality"]["value"])
    assert quality["interval"][0] < quality["value"] < quality["interval"][1]
    assert set(pred["tasks"]["membership"]["probs"]) == {"noun.animal", "noun.food"}
    assert pred["ood"]["flag"] is False and pred["ood"]["reasons"] == [] and "score" in pred["ood"]


def test_out_of_distribution_reasons(adapters, ckpt):
    code, res = invoke(["score", str(adapters["rank3"]), str(adapters["other_base"]), "-c", str(ckpt),
                        "-f", "jsonl", "--device", "cpu"])
    assert code == 0, res.output
    rank3, other = (json.loads(x) for x in res.stdout.splitlines())
    assert rank3["prediction"]["ood"]["flag"] and "rank 3" in rank3["prediction"]["ood"]["reasons"][0]
    assert other["prediction"]["ood"]["flag"]
    assert any("someone/else" in r for r in other["prediction"]["ood"]["reasons"])


def test_checkpoint_that_does_not_fit_the_adapter_gives_health_and_a_note(adapters, ckpt):
    code, res = invoke(["score", str(adapters["one_layer"]), "-c", str(ckpt), "-f", "json", "--device", "cpu"])
    assert code == 0, res.output
    rec = json.loads(res.stdout)["records"][0]
    assert rec["prediction"] is None and rec["summary"]["modules"] == 2
    assert "does not fit" in rec["notes"][0] and "L171" in rec["notes"][0]


def test_human_table_is_readable_at_80_columns(adapters, ckpt):
    res = CliRunner().invoke(cli_app(), ["score", str(adapters["good"]), "-c", str(ckpt), "--device", "cpu"],
                             env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "quality" in res.stdout and "noun.animal" in res.stdout and "in distribution" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_errors_and_exit_codes(adapters, tmp_path):
    code, res = invoke(["score", str(adapters["inert"]), "-f", "json"])
    assert code == 1  # an error-severity finding (inert adapter) with the default --fail-on error
    assert invoke(["score", str(adapters["inert"]), "--fail-on", "never", "-f", "json"])[0] == 0
    code, res = invoke(["score", str(tmp_path / "nope")])
    assert code == 2 and res.exception.code == "L100"
    (tmp_path / "empty").mkdir()
    code, res = invoke(["score", str(tmp_path / "empty")])
    assert code == 3 and res.exception.code == "L101"
    code, res = invoke(["score", str(adapters["good"]), "-c", str(tmp_path / "no-such-ckpt")])
    assert code == 2 and res.exception.code in ("L172", "L170")


@pytest.mark.slow  # a Python subprocess
def test_score_subprocess_csv(adapters, ckpt):
    proc = subprocess.run([sys.executable, "-m", "lolctl", "score", str(adapters["good"]), str(adapters["rank3"]),
                           "-c", str(ckpt), "-f", "csv", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 2 and "prediction.tasks.quality.value" in rows[0]
    assert rows[1]["prediction.ood.flag"] == "true"
    bad = subprocess.run([sys.executable, "-m", "lolctl", "score", "./no/such/adapter"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error[L100 ") and "Traceback" not in bad.stderr


def _minilm_adapter(folder: Path) -> Path:
    """An all-MiniLM-L6-v2 adapter as PEFT saves it for BertModel: LoRA r=4 on query/value of the 6 layers
    (384 x 384), keys ``base_model.model.encoder.layer.{i}.attention.self.{query,value}.lora_{A,B}.weight``."""
    return write_files(folder, peft_files(7, r=4, n=384, m=384, layers=6, base=MINILM))


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_minilm_example_adapter(tmp_path):
    from lolctl.nn.checkpoint import find_checkpoint_for

    adapter = _minilm_adapter(tmp_path / "minilm-adapter")
    code, res = invoke(["score", str(adapter), "-f", "json", "--device", "cpu", "--fail-on", "never"])
    assert code == 0, res.output
    rec = json.loads(res.stdout)["records"][0]
    assert rec["summary"]["base_model"] == MINILM and rec["summary"]["modules"] == 12
    assert rec["summary"]["ranks"] == [4]
    if find_checkpoint_for(MINILM) is None:  # no bundled MiniLM checkpoint in this checkout: health + note
        assert rec["prediction"] is None and "no checkpoint fits base model " + MINILM in res.stderr
    else:
        assert rec["prediction"]["tasks"] and "ood" in rec["prediction"]


def test_scan_with_a_checkpoint_counts_predictions_and_ood(adapters, ckpt, tmp_path):
    out = tmp_path / "scan.jsonl"
    code, res = invoke(["scan", str(adapters["good"]), str(adapters["rank3"]), str(adapters["one_layer"]),
                        "-c", str(ckpt), "--device", "cpu", "-o", str(out), "-f", "json"])
    assert code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["summary"]["predicted"] == 2 and doc["summary"]["ood"] == 1  # one_layer: the checkpoint does not fit
    by_name = {Path(r["item"]).name: r for r in doc["records"]}
    assert by_name["rank3"]["prediction"]["ood"]["flag"] and by_name["one"]["prediction"] is None
    assert "modules" not in by_name["good"]  # scan records stay small


def test_score_a_hub_repo_at_a_revision(monkeypatch, tmp_path):
    from hubserver import FakeHub, FakeRepo

    with FakeHub([FakeRepo("someuser/lora", {"main": peft_files(1), "v2": peft_files(2, r=4)})]) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        code, res = invoke(["score", "someuser/lora@v2", "-f", "json", "--triage"])
    assert code == 0, res.output
    rec = json.loads(res.stdout)["records"][0]
    assert rec["source"] == "someuser/lora@v2" and rec["summary"]["ranks"] == [4]
    assert rec["hub"]["revision"] == "v2" and rec["hub"]["triage"]["lora_tensors"] == 8


def _custom_adapter(folder: Path, mods=("query", "value"), prefix="base_model.model.encoder", layers=2, n=8, m=6,
                    r=2, base="tiny/base") -> Path:
    """A PEFT LoRA on ``mods`` of ``layers`` layers, keys ``{prefix}.layer.{i}.attention.self.{mod}.lora_*``."""
    import torch
    from safetensors.torch import save

    g = torch.Generator().manual_seed(11)
    tensors = {}
    for i in range(layers):
        for mod in mods:
            key = f"{prefix}.layer.{i}.attention.self.{mod}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, m, generator=g)
            tensors[f"{key}.lora_B.weight"] = torch.randn(n, r, generator=g)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "base_model_name_or_path": base,
              "target_modules": list(mods)}
    return write_files(folder, {"adapter_config.json": json.dumps(config).encode(),
                                "adapter_model.safetensors": save(tensors)})


MISFITS = {  # adapter -> a piece of the reason its checkpoint (made for query/value of 2 layers) does not fit
    "query-only": ({"mods": ("query",)}, "encoder.layer.0.attention.self.value"),
    "qkv": ({"mods": ("query", "key", "value")}, "encoder.layer.0.attention.self.key"),
    "bert-prefix": ({"prefix": "base_model.model.bert.encoder"}, "bert.encoder.layer.0.attention.self.query"),
    "wider": ({"n": 12}, "12x6"),
}


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_the_reason_for_no_prediction_reaches_stderr_in_every_mode(tmp_path, adapters, ckpt, fmt):
    folders = {name: _custom_adapter(tmp_path / name, **kw) for name, (kw, _) in MISFITS.items()}
    res = CliRunner().invoke(cli_app(), ["score", *map(str, folders.values()), "-c", str(ckpt), "--device", "cpu",
                                         "-f", fmt], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if line.startswith("note: no prediction for ")]
    assert len(notes) == len(MISFITS)
    for (name, (_, why)), line in zip(MISFITS.items(), notes):
        assert str(folders[name]) in line and "does not fit" in line and "L171" in line and why in line
    if fmt in ("json", "jsonl"):  # the record's notes hold the same text as the log
        text = res.stdout if fmt == "jsonl" else "\n".join(json.dumps(r) for r in json.loads(res.stdout)["records"])
        records = [json.loads(line) for line in text.splitlines()]
        assert [r["prediction"] for r in records] == [None] * len(MISFITS)
        for rec, line in zip(records, notes):
            assert line.endswith(rec["notes"][0])
    if fmt == "table":
        assert res.stdout.count("no prediction:") == len(MISFITS)


def test_one_note_for_many_adapters_without_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("LOLCTL_MODELS", str(tmp_path / "no-models"))
    folders = [str(write_files(tmp_path / f"a{i}", peft_files(i))) for i in range(3)]
    code, res = invoke(["score", *folders])
    assert code == 0, res.output
    (line,) = [x for x in res.stderr.splitlines() if "no checkpoint fits base model tiny/base" in x]
    assert line.startswith(f"note: no prediction for {folders[0]} and 2 more: ")


def test_minilm_adapter_the_builtin_checkpoint_does_not_fit_says_why(tmp_path):
    from lolctl.nn.checkpoint import find_checkpoint_for

    if find_checkpoint_for(MINILM) is None:
        pytest.skip("no built-in MiniLM checkpoint in this installation")
    query = _custom_adapter(tmp_path / "q", mods=("query",), layers=6, n=384, m=384, r=4, base=MINILM)
    code, res = invoke(["score", str(query)])
    assert code == 0, res.output
    assert "note: no prediction for" in res.stderr and "encoder.layer.0.attention.self.value" in res.stderr
