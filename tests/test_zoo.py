"""Zoo builder: a tiny recipe on a tiny random BERT — format, PEFT loading, determinism, kill + resume."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lolctl.errors import LolctlError
from lolctl.zoo.builder import build
from lolctl.zoo.recipes import get_recipe
from lolctl.zoo.recipes.tiny import make_tiny_bert

pytestmark = pytest.mark.slow  # builds zoos (finetunes a tiny BERT), CLI subprocesses

SMALL = {"n_train": "3", "other_ranks": "2"}  # 2 val + 2 test + 3 train + 1 r2 = 8 LoRAs


def _small_subset(path: Path) -> Path:
    """The first 40 synsets of each category of the shipped WordNet subset (keeps the test's frozen work small)."""
    import gzip

    from lolctl.zoo.wordnet import SUBSET_PATH

    seen: dict[str, int] = {}
    keep = []
    with gzip.open(SUBSET_PATH, "rt", encoding="utf-8") as handle:
        for line in handle:
            lexname = line.split("\t", 1)[0]
            seen[lexname] = seen.get(lexname, 0) + 1
            if seen[lexname] <= 40:
                keep.append(line)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(keep)
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    SMALL["subset"] = str(_small_subset(folder / "synsets.tsv.gz"))
    return folder


@pytest.fixture(scope="module")
def reference(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted build, in process."""
    zoo = tmp_path_factory.mktemp("zoo-ref")
    result = build(get_recipe("tiny", {**SMALL, "base_model": str(tiny_bert)}), zoo, workers=1)
    assert result["status"] == "complete" and result["total"] == 8
    return zoo


def _rows(zoo: Path) -> list[dict[str, str]]:
    with open(zoo / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_manifest_and_labels(reference: Path, tiny_bert: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {t["name"]: t["kind"] for t in manifest["tasks"]} == {
        "quality": "regression", "own_quality": "regression", "log_size": "regression",
        "membership": "multilabel", "noise": "multiclass", "gloss_length": "multiclass",
        "pos_mix": "multiclass"}
    assert set(manifest["versions"]) >= {"torch", "transformers", "lolctl"}
    assert manifest["base_model"]["hash"].startswith("sha256:")
    assert manifest["recipe"]["name"] == "tiny" and manifest["recipe"]["n_train"] == 3
    rows = _rows(reference)
    assert [r["split"] for r in rows] == ["val"] * 2 + ["test"] * 2 + ["train"] * 3 + ["test_r2"]
    assert [r["rank"] for r in rows] == ["4"] * 7 + ["2"]
    assert set(manifest["adapters"]) == {r["id"] for r in rows}
    columns = list(rows[0])
    assert columns[:4] == ["id", "path", "split", "rank"]
    assert "membership[noun.animal]" in columns and all(c.startswith("hp.") for c in columns[23:])
    for row in rows:
        assert 0.0 <= float(row["quality"]) <= 1.0
        assert row["noise"] in ("clean", "noisy") and row["gloss_length"] in ("short", "long")
        members = [int(row[c]) for c in columns if c.startswith("membership[")]
        assert 1 <= sum(members) <= 3 and int(row["hp.n_topics"]) == sum(members)
        assert (row["pos_mix"] == "nouns+verbs") == (int(row["hp.n_verbs"]) > 0)


def test_adapter_is_standard_peft(reference: Path, tiny_bert: Path) -> None:
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import BertModel

    from lolctl.zoo.lean_bert import LeanBert

    folder = reference / "adapters" / "lora-00004"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["target_modules"] == ["query", "value"]
    state = load_file(str(folder / "adapter_model.safetensors"))
    assert "base_model.model.encoder.layer.1.attention.self.value.lora_B.weight" in state
    model = PeftModel.from_pretrained(BertModel.from_pretrained(str(tiny_bert)), str(folder)).eval()
    loaded = get_peft_model_state_dict(model)
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    # the lean trainer's forward equals PEFT's forward with the saved adapter (float32 path)
    ids = torch.tensor([[2, 10, 11, 12, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :5].mean(1)
    s = config["lora_alpha"] / config["r"]
    lora = [{m: (s * state[f"base_model.model.encoder.layer.{i}.attention.self.{m}.lora_B.weight"],
                 state[f"base_model.model.encoder.layer.{i}.attention.self.{m}.lora_A.weight"].T)
             for m in ("query", "value")} for i in range(2)]
    lean = LeanBert.from_folder(tiny_bert, torch.float32).encode(ids, mask, lora)
    assert torch.allclose(lean, torch.nn.functional.normalize(hidden, dim=-1), atol=1e-5)


def test_training_moves_the_weights(reference: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(reference / "adapters" / "lora-00000" / "adapter_model.safetensors"))
    assert all(state[k].abs().sum() > 0 for k in state if "lora_B" in k)  # B starts at zero


KILLER = textwrap.dedent("""
    import os, signal, sys
    from lolctl.zoo.builder import build
    from lolctl.zoo.recipes import get_recipe
    overrides = dict(arg.split("=", 1) for arg in sys.argv[3:])
    def log(message):  # injected crash: SIGKILL ourselves after the third finished LoRA
        if message.startswith("[3/"):
            os.kill(os.getpid(), signal.SIGKILL)
    build(get_recipe("tiny", overrides), sys.argv[1], workers=int(sys.argv[2]), log=log)
""")


def test_killed_build_resumes_to_identical_loras(reference: Path, tiny_bert: Path, tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    args = [f"{k}={v}" for k, v in {**SMALL, "base_model": str(tiny_bert)}.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(zoo), "1", *args], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    built = sorted(p.name for p in (zoo / "adapters").glob("lora-*"))
    assert built == ["lora-00000", "lora-00001", "lora-00002"]
    assert json.loads((zoo / "manifest.json").read_text())["status"] == "building"
    (zoo / "adapters" / ".tmp-lora-00003-999").mkdir()  # a half-written LoRA left by the crash
    (zoo / "adapters" / ".tmp-lora-00003-999" / "adapter_model.safetensors").write_bytes(b"garbage")
    resumed = subprocess.run(
        [sys.executable, "-m", "lolctl", "zoo", "build", str(zoo), "--recipe", "tiny", "--workers", "2",
         *[x for a in args for x in ("--set", a)]], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "3 already built, 5 to build" in resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "complete"
    assert not list((zoo / "adapters").glob(".tmp-*"))
    for ref in sorted((reference / "adapters").glob("lora-*")):
        for name in ("adapter_model.safetensors", "adapter_config.json", "meta.json"):
            assert (zoo / "adapters" / ref.name / name).read_bytes() == (ref / name).read_bytes(), (ref.name, name)
    assert (zoo / "labels.csv").read_bytes() == (reference / "labels.csv").read_bytes()
    ref_manifest = json.loads((reference / "manifest.json").read_text())
    assert json.loads((zoo / "manifest.json").read_text())["adapters"] == ref_manifest["adapters"]


def test_resume_with_other_settings_is_refused(reference: Path, tiny_bert: Path) -> None:
    with pytest.raises(LolctlError) as err:
        build(get_recipe("tiny", {**SMALL, "base_model": str(tiny_bert), "seed": "7"}), reference)
    assert err.value.code == "L176"
    assert "seed is 0 in the zoo, 7 now" in err.value.reason  # it names the setting that differs


def test_train_split_grows_without_renumbering(reference: Path, tiny_bert: Path, tmp_path: Path) -> None:
    """Issue 11 (grow the train split from the learning curve): a built zoo resumed with a larger n_train_more gets
    new train LoRAs after every planned one — the built LoRAs untouched, their description unchanged while 0 — its
    pack takes the new rows with --append, and a smaller value (shrinking) is refused."""
    import shutil

    from lolctl.zoo.format import load_zoo
    from lolctl.zoo.pack import pack

    zoo = tmp_path / "zoo"
    shutil.copytree(reference, zoo)
    packed = tmp_path / "packed"
    pack(zoo, packed, ["train"])
    assert "n_train_more" not in json.loads((zoo / "manifest.json").read_text())["recipe"]  # old zoos stay valid
    settings = {**SMALL, "base_model": str(tiny_bert)}
    result = build(get_recipe("tiny", {**settings, "n_train_more": "1"}), zoo, workers=1, splits=["train"])
    assert result["status"] == "complete" and result["total"] == 9
    rows = _rows(zoo)
    assert (rows[-1]["id"], rows[-1]["split"]) == ("lora-00008", "train")  # after val, test, train, test_r2
    for ref in sorted((reference / "adapters").glob("lora-*")):
        assert (zoo / "adapters" / ref.name / "adapter_model.safetensors").read_bytes() == (
            ref / "adapter_model.safetensors").read_bytes()
    assert json.loads((zoo / "manifest.json").read_text())["recipe"]["n_train_more"] == 1
    assert pack(zoo, packed, ["train"], append=True)["adapters"] == 1
    grown = load_zoo(packed)
    assert grown.ids[-1] == "lora-00008" and grown.manifest["recipe"]["n_train_more"] == 1
    with pytest.raises(LolctlError) as err:
        build(get_recipe("tiny", settings), zoo, workers=1)
    assert err.value.code == "L176" and "n_train_more is 1 in the zoo" in err.value.reason

def test_bad_recipe_and_setting_are_usage_errors() -> None:
    with pytest.raises(LolctlError) as err:
        get_recipe("no-such-recipe")
    assert err.value.code == "L180"
    with pytest.raises(LolctlError) as err:
        get_recipe("tiny", {"no_such_field": "1"})
    assert err.value.code == "L180" and "n_train" in err.value.remedy  # no near name: the settings are listed
    with pytest.raises(LolctlError) as err:
        get_recipe("tiny", {"n_trian": "1"})
    assert err.value.remedy == "did you mean n_train?"


def test_tiny_recipes_make_their_own_base_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --base needed: lolctl/tiny-bert is made on first use in the cache, the same weights on every machine."""
    from lolctl.zoo.basemodel import resolve_base, weights_hash

    assert get_recipe("tiny").settings.base_model == "lolctl/tiny-bert"
    monkeypatch.setenv("LOLCTL_CACHE", str(tmp_path / "a"))
    first = resolve_base("lolctl/tiny-bert")
    assert first.parent == tmp_path / "a" / "base" and (first / "config.json").exists()
    assert resolve_base("lolctl/tiny-bert") == first  # made once
    monkeypatch.setenv("LOLCTL_CACHE", str(tmp_path / "b"))
    assert weights_hash(resolve_base("lolctl/tiny-bert")) == weights_hash(first)


def test_paper_recipes_plan_but_refuse_to_train(tmp_path: Path) -> None:
    recipe = get_recipe("qwen2-arc-lora")
    plan = recipe.plan()
    assert len(plan) == 2000 and {j.rank for j in plan} == {4}
    with pytest.raises(LolctlError) as err:
        build(recipe, tmp_path / "z")
    assert err.value.code == "L182" and "GPU" in err.value.reason


def test_zoo_info_summarises(reference: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "lolctl", "zoo", "info", str(reference), "-f", "json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["splits"]["train"] == {"built": 3, "planned": 3}
    assert summary["splits"]["test_r2"] == {"built": 1, "planned": 1}
    quality = next(t for t in summary["targets"] if t["column"] == "quality")
    assert 0.0 <= quality["min"] <= quality["max"] <= 1.0
    table = subprocess.run([sys.executable, "-m", "lolctl", "zoo", "info", str(reference)],
                           capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert table.returncode == 0 and "membership[noun.animal]" in table.stdout and "test_r2" in table.stdout


def test_info_on_an_empty_zoo(tiny_bert: Path, tmp_path: Path) -> None:
    from lolctl.zoo.info import render_table, summarise

    result = build(get_recipe("tiny", {**SMALL, "base_model": str(tiny_bert)}), tmp_path / "z", limit=0)
    assert result["status"] == "partial" and result["total"] == 0
    summary = summarise(tmp_path / "z")
    assert summary["loras"] == 0 and summary["splits"]["val"] == {"built": 0, "planned": 2}
    assert next(t for t in summary["targets"] if t["column"] == "quality")["min"] is None
    from lolctl.report.encode import dumps

    assert "null" in dumps(summary)  # valid JSON (no NaN)
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(render_table(summary))
    table = console.export_text()
    assert "no LoRAs yet" in table  # targets without values say so, instead of a crash on None
    assert re.search(r"val\s*│\s*0\s*│\s*2\b", table), table  # the split row: 0 built of 2 planned


def test_build_only_some_splits(tiny_bert: Path, reference: Path, tmp_path: Path) -> None:
    recipe = get_recipe("tiny", {**SMALL, "base_model": str(tiny_bert)})
    result = build(recipe, tmp_path / "z", splits=["test_r2"])
    rows = _rows(tmp_path / "z")
    assert result["status"] == "partial" and [r["split"] for r in rows] == ["test_r2"]
    ref = {r["id"]: r for r in _rows(reference)}
    lora = rows[0]["id"]
    same = (tmp_path / "z" / "adapters" / lora / "adapter_model.safetensors").read_bytes()
    assert same == (reference / "adapters" / lora / "adapter_model.safetensors").read_bytes()
    assert rows[0]["quality"] == ref[lora]["quality"]
    with pytest.raises(LolctlError) as err:
        build(recipe, tmp_path / "z", splits=["test_r3"])
    assert err.value.code == "L176" and "test_r2" in str(err.value)


def test_packed_zoo_matches_the_adapters(reference: Path, tmp_path: Path) -> None:
    """A packed zoo (mixed ranks) reads back the same factors to float16 precision, in any row order, and the CLI
    refuses unknown splits and a non-empty output folder."""
    from dataclasses import replace

    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo
    from lolctl.zoo.pack import pack
    from tests.clitools import invoke

    out = tmp_path / "packed"
    code, res = invoke(["zoo", "pack", str(reference), str(out), "--split", "test", "--split", "test_r2",
                        "-f", "json"])
    assert code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["adapters"] == 3 and summary["ranks"] == [2, 4] and summary["splits"] == {"test": 2, "test_r2": 1}
    packed = load_zoo(out)
    assert [r["split"] for r in packed.rows] == ["test", "test", "test_r2"]
    assert all(r["path"].startswith("factors.safetensors#") for r in packed.rows)
    original = load_zoo(reference)
    want = replace(original, rows=[r for r in original.rows if r["split"] in ("test", "test_r2")][::-1])
    got = replace(packed, rows=packed.rows[::-1])  # another row order than the file's
    a, _ = load_factors(want, cache=False)
    b, info = load_factors(got)
    assert torch.equal(a.ranks, b.ranks) and info["base_models"]
    for ga, gb in zip(a.groups, b.groups, strict=True):
        for x, y in ((ga.U, gb.U), (ga.V, gb.V)):
            scale = x.abs().amax(dim=(2, 3), keepdim=True)
            assert scale.min() > 0 and ((x - y).abs() / scale).max() < 1e-3  # float16 of values in [-1, 1]

    from lolctl.zoo.info import summarise

    info = summarise(out)
    assert info["status"].startswith("packed from") and info["splits"] == {
        "test": {"built": 2, "planned": 2}, "test_r2": {"built": 1, "planned": 1}}
    assert invoke(["zoo", "pack", str(reference), str(out), "--split", "test"])[0] == 2  # not empty
    with pytest.raises(LolctlError) as err:
        pack(reference, tmp_path / "other", ["nope"])
    assert err.value.code == "L176" and "nope" in str(err.value)
    with pytest.raises(LolctlError):
        pack(out, tmp_path / "again", ["test"])  # already packed
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["packed"]["file"] = "../packed/factors.safetensors"  # a manifest pointing outside its folder
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LolctlError) as err:
        load_factors(load_zoo(out))
    assert err.value.code == "L176" and "packed.files" in str(err.value)



def test_packed_zoo_grows_by_appended_parts(reference: Path, tmp_path: Path) -> None:
    """``pack --append`` adds only the rows the folder lacks, as a new part file; the parts read back as one zoo with
    the same factors as packing everything at once; appending nothing writes nothing; another recipe is refused."""
    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo
    from lolctl.zoo.pack import pack
    from tests.clitools import invoke

    grown, whole = tmp_path / "grown", tmp_path / "whole"
    assert pack(reference, grown, ["test"])["file"] == "factors.safetensors"
    code, res = invoke(["zoo", "pack", str(reference), str(grown), "--split", "test", "--split", "test_r2",
                        "--append", "-f", "json"])
    assert code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["adapters"], summary["total"], summary["file"]) == (1, 3, "factors-1.safetensors"), summary
    pack(reference, whole, ["test", "test_r2"])
    a, b = load_zoo(grown), load_zoo(whole)
    assert a.ids == b.ids and a.rows[-1]["path"].startswith("factors-1.safetensors#")
    assert json.loads((grown / "manifest.json").read_text())["packed"]["files"] == [
        "factors.safetensors", "factors-1.safetensors"]
    fa, info = load_factors(a, cache=False)
    fb, _ = load_factors(b, cache=False)
    assert info["base_models"] and torch.equal(fa.ranks, fb.ranks)
    for ga, gb in zip(fa.groups, fb.groups, strict=True):
        assert torch.equal(ga.U, gb.U) and torch.equal(ga.V, gb.V)

    code, res = invoke(["zoo", "pack", str(reference), str(grown), "--split", "test_r2", "--append"])
    assert code == 0 and "nothing to add" in res.stdout, res.output
    assert sorted(p.name for p in grown.iterdir()) == ["factors-1.safetensors", "factors.safetensors",
                                                       "labels.csv", "manifest.json"]
    manifest = json.loads((whole / "manifest.json").read_text())
    manifest["recipe"]["seed"] = 12345  # another zoo's packed folder
    (whole / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LolctlError) as err:
        pack(reference, whole, ["val"], append=True)
    assert err.value.code == "L176" and "same recipe" in str(err.value)
    assert invoke(["zoo", "pack", str(reference), str(grown), "--split", "val", "--append", "--overwrite"])[0] == 2

def test_build_skips_the_loras_of_a_packed_zoo(reference: Path, tiny_bert: Path, tmp_path: Path) -> None:
    """A build spread over machines that keep only the packed part: ``--skip-packed`` builds only the LoRAs the pack
    lacks, and ``pack --append`` then gives the same packed zoo as packing the uninterrupted build; a pack of other
    settings is refused."""
    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo
    from lolctl.zoo.pack import pack
    from tests.clitools import invoke

    grown, whole = tmp_path / "grown", tmp_path / "whole"
    pack(reference, grown, ["val", "test"])  # what the first machine built and committed
    later = tmp_path / "later"
    code, res = invoke(["zoo", "build", str(later), "--recipe", "tiny", "--base", str(tiny_bert),
                        "--set", f"n_train={SMALL['n_train']}", "--set", f"other_ranks={SMALL['other_ranks']}",
                        "--set", f"subset={SMALL['subset']}", "--skip-packed", str(grown)])
    assert code == 0, f"{res.output} {res.exception}"
    assert json.loads(res.stdout)["built"] == 4  # 3 train + 1 test_r2; the 4 packed ones not again
    assert {m.split("/")[-1] for m in load_zoo(later).ids} == set(load_zoo(reference).ids) - set(load_zoo(grown).ids)
    pack(later, grown, ["train", "test_r2"], append=True)
    pack(reference, whole, ["val", "test", "train", "test_r2"])
    a, b = load_zoo(grown), load_zoo(whole)
    assert sorted(a.ids) == sorted(b.ids)
    fa, _ = load_factors(a, cache=False)
    fb, _ = load_factors(b, cache=False)
    order = [a.ids.index(i) for i in b.ids]
    for ga, gb in zip(fa.groups, fb.groups, strict=True):  # the LoRAs built later equal the uninterrupted build's
        torch.testing.assert_close(ga.U[order], gb.U, rtol=0, atol=0)
        torch.testing.assert_close(ga.V[order], gb.V, rtol=0, atol=0)
    with pytest.raises(LolctlError) as err:
        build(get_recipe("tiny", {**SMALL, "base_model": str(tiny_bert), "seed": "7"}), tmp_path / "other",
              skip_packed=grown)
    assert err.value.code == "L176" and "not a packed zoo of this recipe" in str(err.value)
    assert "seed is 0 in the pack, 7 now" in err.value.reason  # it names the setting that differs


TINY_V2 = {"n_val": "2", "n_test": "1", "n_train": "2", "n_per_rank": "1", "other_ranks": "2", "eval_per_topic": "4",
           "eval_other": "8", "lemma_tokens": "12", "gloss_tokens": "16", "size_min": "8", "size_max": "32",
           "batches": "4,8", "epochs": "2"}


def test_v2_recipe_steps_follow_data_size(tiny_bert: Path, tmp_path: Path) -> None:
    """minilm-wordnet-v2: steps = ceil(epochs · pairs / batch) for every LoRA, its own recipe name in the manifest."""
    recipe = get_recipe("minilm-wordnet-v2", {**TINY_V2, "subset": SMALL["subset"], "base_model": str(tiny_bert)})
    result = build(recipe, tmp_path / "z", workers=1)
    assert result["status"] == "complete" and result["total"] == 6
    rows = _rows(tmp_path / "z")
    for row in rows:
        n, batch = int(row["hp.n_pairs"]), min(int(row["hp.batch"]), int(row["hp.n_pairs"]))
        assert int(row["hp.steps"]) == -(-2 * n // batch), row
    assert len({row["hp.steps"] for row in rows}) > 1
    assert json.loads((tmp_path / "z" / "manifest.json").read_text())["recipe"]["name"] == "minilm-wordnet-v2"


def test_v1_recipe_draws_unchanged() -> None:
    """v1 still draws the steps its committed zoo recorded (the shipped checkpoint's packed test split)."""
    packed = Path(__file__).parent / "data" / "minilm-wordnet-test" / "labels.csv"
    with open(packed, newline="") as handle:
        rows = list(csv.DictReader(handle))[:20]
    recipe = get_recipe("minilm-wordnet")
    for row in rows:
        hp = recipe.draw(int(row["id"].split("-")[1]))
        assert hp["steps"] == int(row["hp.steps"]) and hp["batch"] == int(row["hp.batch"])
        assert recipe.steps(hp["steps"], int(row["hp.n_pairs"]), hp["batch"]) == int(row["hp.steps"])
