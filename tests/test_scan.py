"""The scan engine (resumable JSONL, sharding, error records) and `lolctl scan` on local folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import peft_files, write_files
from typer.testing import CliRunner

from lolctl.errors import LolctlError
from lolctl.report.records import ErrorRecord, Record, ScoreRecord
from lolctl.scan import load_records, run_scan
from lolctl.sources import Item, parse_shard, resolve, shard_of


def _app():
    from lolctl.cli import _register, app

    _register()
    return app


def invoke(args: list[str], **kwargs):
    """CliRunner, with LolctlError mapped to its exit code the way `lolctl.cli.main` does."""
    res = CliRunner().invoke(_app(), args, **kwargs)
    if isinstance(res.exception, LolctlError):
        return res.exception.exit_code, res
    return res.exit_code, res


def _items(n: int) -> list[Item]:
    return [Item(f"id-{i}", f"src-{i}", path=Path(f"/nowhere/{i}")) for i in range(n)]


def _fake_process(item: Item) -> list[Record]:
    if item.id.endswith("3"):
        return [ErrorRecord.of(item.source, item.id, LolctlError("L120", item.source, "truncated"))]
    return [ScoreRecord(item.source, item.id, str(item.path), {}, [], None, None)]


@pytest.fixture
def zoo(tmp_path) -> Path:
    """A folder with two good adapters, an inert one, a truncated one, a non-LoRA (IA3) one and a stray file."""
    root = tmp_path / "adapters"
    write_files(root / "good1", peft_files(1))
    write_files(root / "nested" / "good2", peft_files(2, r=3))
    write_files(root / "inert", peft_files(3, zero_b=True))
    broken = peft_files(4)
    broken["adapter_model.safetensors"] = broken["adapter_model.safetensors"][:50]
    write_files(root / "broken", broken)
    write_files(root / "ia3", peft_files(5, peft_type="IA3"))
    (root / "notes.txt").write_text("not an adapter")
    return root


# ---------------------------------------------------------------------- engine
def test_run_scan_writes_one_line_per_record_and_goes_on_after_errors(tmp_path):
    out = tmp_path / "scan.jsonl"
    summary, fresh = run_scan(_items(8), _fake_process, output=out, jobs=3)
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and sorted(json.loads(x)["item"] for x in lines) == sorted(f"id-{i}" for i in range(8))
    assert summary.ok == 7 and summary.errors == 1 and summary.error_codes == {"L120": 1}
    assert len(fresh) == 8


def test_existing_output_needs_resume(tmp_path):
    out = tmp_path / "scan.jsonl"
    run_scan(_items(2), _fake_process, output=out)
    with pytest.raises(LolctlError) as err:
        run_scan(_items(2), _fake_process, output=out)
    assert err.value.code == "L180" and "--resume" in err.value.remedy


def test_resume_skips_recorded_items_and_repairs_a_torn_last_line(tmp_path):
    out = tmp_path / "scan.jsonl"
    run_scan(_items(3), _fake_process, output=out)
    with open(out, "ab") as fh:  # a writer killed mid-line
        fh.write(b'{"item": "id-3", "status": "o')
    seen: list[str] = []

    def process(item: Item) -> list[Record]:
        seen.append(item.id)
        return _fake_process(item)

    summary, fresh = run_scan(_items(6), process, output=out, resume=True)
    assert sorted(seen) == ["id-3", "id-4", "id-5"]  # the torn record is redone, the whole ones are not
    records = load_records(out)
    assert sorted(r["item"] for r in records) == [f"id-{i}" for i in range(6)]
    assert summary.resumed == 3 and summary.records == 6
    assert out.read_bytes().endswith(b"\n")


def test_load_records_rejects_a_foreign_file(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("hello\n")
    with pytest.raises(LolctlError) as err:
        load_records(bad)
    assert err.value.code == "L180" and ":1" in err.value.where


def test_shards_partition_the_items():
    ids = [f"hf://user/repo-{i}" for i in range(200)]
    parts = [[i for i in ids if shard_of(i, 4) == k] for k in range(4)]
    assert sorted(sum(parts, [])) == sorted(ids)
    assert all(20 < len(p) < 80 for p in parts)  # roughly balanced
    assert shard_of("hf://user/repo-7", 4) == shard_of("hf://user/repo-7", 4)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/3"):
        with pytest.raises(LolctlError):
            parse_shard(bad)


def test_resolve_local_folder_glob_and_errors(zoo, tmp_path):
    items = resolve([str(zoo)])
    names = sorted(i.path.name for i in items)
    assert names == ["broken", "good1", "good2", "ia3", "inert"]
    assert all(Path(i.id).is_absolute() for i in items)
    assert [i.path.name for i in resolve([str(zoo / "good*")])] == ["good1"]
    assert len(resolve([str(zoo), str(zoo / "good1")])) == 5  # de-duplicated
    with pytest.raises(LolctlError) as err:
        resolve([str(tmp_path / "missing")])
    assert err.value.code == "L100"
    with pytest.raises(LolctlError) as err:
        resolve([str(tmp_path / "missing" / "*")])
    assert err.value.code == "L101" and err.value.exit_code == 3


def test_hub_shaped_source_under_a_local_folder_is_a_missing_path(zoo, monkeypatch):
    monkeypatch.chdir(zoo.parent)
    with pytest.raises(LolctlError) as err:  # "adapters/nope": Hub-shaped, but "adapters" is a local folder
        resolve(["adapters/nope"])
    assert err.value.code == "L100"
    assert [i.path.name for i in resolve(["adapters/good1"])] == ["good1"]


# ---------------------------------------------------------------------- CLI, in process
def test_scan_folder_in_process(zoo, tmp_path):
    out = tmp_path / "scan.jsonl"
    res = CliRunner().invoke(_app(), ["scan", str(zoo), "-o", str(out), "-f", "jsonl"])
    assert res.exit_code == 2, res.output  # unreadable items were recorded: input errors
    stdout_records = [json.loads(x) for x in res.stdout.splitlines()]
    records = load_records(out)
    assert sorted(r["item"] for r in records) == sorted(r["item"] for r in stdout_records)
    by_name = {Path(r["item"]).name: r for r in records}
    assert set(by_name) == {"good1", "good2", "inert", "broken", "ia3"}
    assert by_name["good1"]["status"] == "ok" and by_name["good1"]["schema"] == "lolctl.score/v1"
    assert by_name["good2"]["summary"]["ranks"] == [3]
    assert by_name["inert"]["max_severity"] == "error"
    assert by_name["broken"]["error"]["code"] == "L120"
    assert by_name["ia3"]["error"]["code"] == "L102" and "IA3" in by_name["ia3"]["error"]["reason"]
    assert "scan summary" in res.stderr and "L102" in res.stderr  # summary and errors on stderr in data modes


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_scan_exit_codes(zoo, tmp_path):
    runner = CliRunner()
    good = tmp_path / "good"
    write_files(good / "a", peft_files(1))
    write_files(good / "b", peft_files(2))
    res = runner.invoke(_app(), ["scan", str(good)])
    assert res.exit_code == 0, res.output
    assert "scan summary" in res.stdout and "results" in res.stdout  # table mode: everything on stdout
    write_files(good / "c", peft_files(3, zero_b=True))  # inert: an error-severity finding
    assert runner.invoke(_app(), ["scan", str(good)]).exit_code == 1
    assert runner.invoke(_app(), ["scan", str(good), "--fail-on", "never"]).exit_code == 0
    (tmp_path / "empty").mkdir()
    code, res = invoke(["scan", str(tmp_path / "empty")])
    assert code == 3 and res.exception.code == "L101"
    code, res = invoke(["scan", str(good), "--shard", "5/2"])
    assert code == 2 and res.exception.code == "L180"


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_scan_table_fits_80_columns(zoo):
    res = CliRunner().invoke(_app(), ["scan", str(zoo)], env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 2
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_scan_shards_cover_the_folder_once(zoo, tmp_path):
    runner = CliRunner()
    seen = []
    for k in range(3):
        res = runner.invoke(_app(), ["scan", str(zoo), "--shard", f"{k}/3", "-f", "jsonl", "--fail-on", "never"])
        seen += [json.loads(x)["item"] for x in res.stdout.splitlines()]
    assert sorted(seen) == sorted(i.id for i in resolve([str(zoo)]))


# ---------------------------------------------------------------------- CLI, subprocess
@pytest.mark.slow  # a Python subprocess
def test_scan_folder_subprocess(zoo, tmp_path):
    out = tmp_path / "scan.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "lolctl", "scan", str(zoo), "-o", str(out), "-f", "json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "lolctl.scan/v1" and doc["summary"]["records"] == 5 and doc["summary"]["errors"] == 2
    assert len(load_records(out)) == 5
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- nothing dropped silently
SHARED_REAL = (Path(__file__).resolve().parents[2] / "shared" / "real-adapters").resolve()
BUNDLED_REAL = Path(__file__).parent / "data" / "real"


def _accounted(doc: dict, root: Path) -> dict[str, list[str]]:
    """Top-level folder of ``root`` -> how each weights file or adapter below it was accounted for."""
    out: dict[str, list[str]] = {}
    for rec in doc["records"]:
        rel = Path(rec["item"]).resolve().relative_to(root.resolve())
        out.setdefault(rel.parts[0], []).append(rec["status"] if rec["status"] == "ok" else rec["error"]["code"])
    for skip in doc["summary"]["skipped"]:
        rel = Path(skip["path"]).resolve().relative_to(root.resolve())
        out.setdefault(rel.parts[0], []).append("skipped: " + skip["reason"])
    return out


@pytest.mark.parametrize("root", [SHARED_REAL, BUNDLED_REAL], ids=["shared", "bundled"])
@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_scan_accounts_for_every_folder_of_published_adapters(root):
    if not root.exists():
        pytest.skip(f"{root} is absent")
    code, res = invoke(["scan", str(root), "--health-only", "-f", "json"])
    assert code == 2, res.output  # some of them are unreadable (error records)
    doc = json.loads(res.stdout)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    accounted = _accounted(doc, root)
    assert sorted(accounted) == folders  # 14 folders -> 14 accounted for (shared); every bundled one
    vit = accounted["JamesQFreeman__LoRA-ViT__root_at_300bee1"]
    assert vit == ["L103", "L103"]  # two LoRA-ViT files: an error record each, naming the custom layout
    assert any("LoRA-ViT" in r["error"]["reason"] for r in doc["records"] if r["status"] == "error")
    if root == SHARED_REAL:
        assert accounted["Hirvita6__LoRA-flower-diffusion__lora_weights"] == ["L120"]  # the 2-byte placeholder
        assert accounted["catundchat__stable-diffusion-v1.5-lora"][1].startswith("skipped: pickle twin")


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_scan_gives_every_candidate_weights_file_a_record_or_a_skip_reason(tmp_path):
    import torch
    from safetensors.torch import save_file

    write_files(tmp_path / "good", peft_files(1))
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "placeholder.safetensors").write_bytes(b"{}")  # a 2-byte placeholder, unknown name
    save_file({"w_a_000": torch.ones(2, 4), "w_a_001": torch.ones(2, 4)}, tmp_path / "loose" / "vit.safetensors")
    save_file({"encoder.weight": torch.ones(3, 3)}, tmp_path / "loose" / "model.safetensors")  # a full model
    torch.save({"step": 1}, tmp_path / "loose" / "optimizer.pt")  # a training-state pickle, never opened
    save_file({"encoder.weight": torch.ones(3, 3)}, tmp_path / "loose" / "twin.safetensors")
    torch.save({"encoder.weight": torch.ones(3, 3)}, tmp_path / "loose" / "twin.bin")
    code, res = invoke(["scan", str(tmp_path), "--health-only", "-f", "json"])
    doc = json.loads(res.stdout)
    by_name = {Path(r["item"]).name: r for r in doc["records"]}
    assert by_name["good"]["status"] == "ok"
    assert by_name["placeholder.safetensors"]["error"]["code"] in ("L120", "L126")
    assert by_name["vit.safetensors"]["error"]["code"] == "L103"
    skipped = {Path(s["path"]).name: s["reason"] for s in doc["summary"]["skipped"]}
    assert set(skipped) == {"model.safetensors", "optimizer.pt", "twin.safetensors", "twin.bin"}
    assert "no LoRA tensors" in skipped["model.safetensors"] and "encoder.weight" in skipped["model.safetensors"]
    assert "pickle" in skipped["optimizer.pt"] and "pickle twin" in skipped["twin.bin"]
    weights = {p.name for p in tmp_path.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt")}
    read = {"adapter_model.safetensors"}  # the PEFT folder's weights, in the record of "good"
    assert weights == read | set(by_name) - {"good"} | set(skipped)  # every weights file accounted for
    table = CliRunner().invoke(_app(), ["scan", str(tmp_path), "--health-only"], env={"COLUMNS": "200"})
    assert "skipped" in table.stdout and "4 weights file(s), not adapters" in table.stdout
    assert "optimizer.pt" in table.stdout
