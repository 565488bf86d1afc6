"""End to end: a zoo of synthetic PEFT adapters with a planted property → `lolctl train` → `lolctl eval` → scoring.

The planted property: in module ``layers.0.q`` the top singular direction of ΔW is one of two fixed directions (label
``A``), in ``layers.1.v`` likewise (label ``B``); ``quality`` is the top singular value of ``layers.1.q``. Every
adapter's factors are then scrambled by a random g per module, so the property lives in ΔW only.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, ModuleFactors
from lolctl.group import GL
from lolctl.nn.batch import LoraBatch

BASE = "tiny/base-model"
SHAPES = {
    "layers.0.q": (16, 12),
    "layers.0.v": (16, 12),
    "layers.1.q": (16, 12),
    "layers.1.v": (16, 12),
    "layers.0.o": (12, 16),
}


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # trains and evaluates models end to end


def _unit(n: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    return x / x.norm()


def synthetic_factors(count: int, seed: int) -> tuple[list[dict[str, tuple[torch.Tensor, torch.Tensor]]], list[dict]]:
    gen = torch.Generator().manual_seed(seed)
    fixed = torch.Generator().manual_seed(1234)  # the planted directions are the same for every zoo
    dirs = {name: (_unit(n, fixed), _unit(n, fixed), _unit(m, fixed)) for name, (n, m) in SHAPES.items()}
    adapters, labels = [], []
    for _ in range(count):
        r = int(torch.randint(2, 5, (1,), generator=gen))
        a, b = int(torch.rand(1, generator=gen) < 0.5), int(torch.rand(1, generator=gen) < 0.5)
        quality = 1.0 + 2.0 * float(torch.rand(1, generator=gen))
        mods = {}
        for name, (n, m) in SHAPES.items():
            U = 0.3 * torch.randn(n, r, generator=gen, dtype=torch.float64)
            V = 0.3 * torch.randn(m, r, generator=gen, dtype=torch.float64)
            left_on, left_off, right = dirs[name]
            if name == "layers.0.q":
                U[:, 0], V[:, 0] = 3.0 * (left_on if a else left_off), right
            elif name == "layers.1.v":
                U[:, 0], V[:, 0] = 3.0 * (left_on if b else left_off), right
            elif name == "layers.1.q":
                U[:, 0], V[:, 0] = quality * left_on, right
            mods[name] = GL.act(U, V, GL(r).random(generator=gen))
        adapters.append(mods)
        labels.append({"membership[A]": a, "membership[B]": b, "quality": quality, "rank": r})
    return adapters, labels


def write_peft(folder: Path, mods: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    folder.mkdir(parents=True)
    r = next(iter(mods.values()))[0].shape[1]
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": r,
        "base_model_name_or_path": BASE,
        "target_modules": ["q", "v", "o"],
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for name, (U, V) in mods.items():  # scale = alpha / r = 1
        tensors[f"base_model.model.{name}.lora_A.weight"] = V.T.float().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = U.float().contiguous()
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def default_split(i: int, label: dict) -> str:
    return "test_extra" if i % 10 == 0 else "test" if i % 5 == 0 else "val" if i % 5 == 1 else "train"


def write_zoo(root: Path, count: int, seed: int, with_split: bool = True, split_of=default_split) -> Path:
    """A synthetic zoo; ``split_of(i, labels)`` names each adapter's split (None: left out)."""
    adapters, labels = synthetic_factors(count, seed)
    root.mkdir(parents=True)
    rows = []
    for i, (mods, lab) in enumerate(zip(adapters, labels)):
        split = split_of(i, lab)
        if split is None:
            continue
        write_peft(root / "adapters" / f"a{i:04d}", mods)
        rows.append({"id": f"a{i:04d}", "path": f"adapters/a{i:04d}", "split": split if with_split else "", **lab})
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    manifest = {
        "tasks": [
            {
                "name": "membership",
                "kind": "multilabel",
                "columns": ["membership[A]", "membership[B]"],
                "labels": ["A", "B"],
            },
            {"name": "quality", "kind": "regression", "columns": ["quality"], "labels": []},
        ],
        "recipe": {"kind": "synthetic planted top singular direction", "seed": seed},
        "base_model": {"id": BASE, "hash": "sha256:0"},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def minimal_read(path, dtype=torch.float32, **_):
    """Stand-in for lolctl.read.read_adapter while the reader is not importable (PEFT folder, scale alpha / r)."""
    path = Path(path)
    config = json.loads((path / "adapter_config.json").read_text())
    tensors = load_file(str(path / "adapter_model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    names = sorted({k[len("base_model.model.") : -len(".lora_A.weight")] for k in tensors if ".lora_A." in k})
    mods = [
        ModuleFactors(
            name,
            scale * tensors[f"base_model.model.{name}.lora_B.weight"].to(dtype),
            tensors[f"base_model.model.{name}.lora_A.weight"].T.to(dtype),
            scale,
            "lora_alpha/r",
        )
        for name in names
    ]
    return Adapter(str(path), AdapterMeta("peft", base_model=config.get("base_model_name_or_path")), mods)


@pytest.fixture
def reader(monkeypatch):
    try:
        from lolctl.read import read_adapter  # noqa: F401
    except ImportError:
        monkeypatch.setattr("lolctl.nn.data._reader", lambda: minimal_read)
    from lolctl.nn.data import _reader

    return _reader()


def as_adapter(mods: dict[str, tuple[torch.Tensor, torch.Tensor]], source: str = "mem") -> Adapter:
    return Adapter(
        source,
        AdapterMeta("peft", base_model=BASE),
        [ModuleFactors(name, U.float(), V.float(), 1.0, "test") for name, (U, V) in mods.items()],
    )


def _app():
    from lolctl.cli import _register, app

    _register()
    return app


def test_train_eval_score_planted_property(tmp_path, reader):
    zoo = write_zoo(tmp_path / "zoo", 300, seed=0)
    runner = CliRunner()
    ckpt_dir = tmp_path / "ckpt"
    res = runner.invoke(
        _app(),
        [
            "train",
            str(zoo),
            "--model",
            "glnet",
            "--out",
            str(ckpt_dir),
            "--epochs",
            "60",
            "--patience",
            "15",
            "--set",
            "hidden=16",
            "--set",
            "head_hidden=64",
            "--format",
            "json",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert {p.name for p in ckpt_dir.iterdir()} >= {"config.json", "model.safetensors", "README.md"}

    res = runner.invoke(
        _app(), ["eval", str(ckpt_dir), str(zoo), "--format", "json", "--device", "cpu", "--threads", "1"]
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)["metrics"]
    assert metrics["membership"]["accuracy"] > 0.85, metrics  # chance is 0.5
    assert metrics["membership"]["auroc"] > 0.9, metrics
    assert metrics["quality"]["r2"] > 0.5, metrics
    assert metrics["membership"]["accuracy"] == pytest.approx(summary["metrics"]["test"]["membership"]["accuracy"])
    # local conformal intervals: widths follow difficulty (not one constant), coverage measured on test
    iv = metrics["quality"]["interval90"]
    assert iv["width_p90"] > 1.05 * iv["width_p10"] and 0.6 <= iv["coverage"] <= 1.0, iv
    assert iv == pytest.approx(summary["metrics"]["test"]["quality"]["interval90"])
    config = json.loads((ckpt_dir / "config.json").read_text())
    assert config["intervals"]["quality"]["method"] == "knn-conformal"
    assert config["calibration"]["membership"]["temperature"] > 0 and (ckpt_dir / "calibration.safetensors").is_file()

    assert set(summary["metrics"]) == {"train", "val", "test", "test_extra"}  # an extra held-out split
    res = runner.invoke(_app(), ["eval", str(ckpt_dir), str(zoo), "--split", "test_extra", "--format", "json"])
    assert res.exit_code == 0, res.output
    extra = json.loads(res.stdout)
    assert extra["n"] == 30 and extra["metrics"]["membership"]["accuracy"] > 0.85

    res = runner.invoke(_app(), ["eval", str(ckpt_dir), str(zoo), "--device", "cpu"])  # human table
    assert res.exit_code == 0 and "membership" in res.stdout and "AUROC" in res.stdout

    # predictions unchanged when every module's factors are moved by its own random g
    from lolctl.nn.checkpoint import load_checkpoint

    ckpt = load_checkpoint(str(ckpt_dir), device="cpu")
    fresh, _ = synthetic_factors(40, seed=99)
    gen = torch.Generator().manual_seed(7)
    moved = [{k: GL.act(U, V, GL(U.shape[1]).random(generator=gen)) for k, (U, V) in m.items()} for m in fresh]
    before = ckpt.predict([as_adapter(m) for m in fresh])
    after = ckpt.predict([as_adapter(m) for m in moved])
    for p, q in zip(before, after):
        assert p["tasks"]["quality"]["value"] == pytest.approx(q["tasks"]["quality"]["value"], abs=1e-3)
        for lab in ("A", "B"):  # shown rounded to 2 decimals: equal up to one rounding step
            assert p["tasks"]["membership"]["probs"][lab] == pytest.approx(
                q["tasks"]["membership"]["probs"][lab], abs=0.0101
            )
    raw = [ckpt.predict_batch(LoraBatch.from_adapters([as_adapter(m) for m in ms], ckpt.spec))["membership"]
           for ms in (fresh, moved)]
    assert raw[0] == pytest.approx(raw[1], abs=1e-3)
    lo, hi = before[0]["tasks"]["quality"]["interval"]
    assert lo <= before[0]["tasks"]["quality"]["value"] <= hi
    widths = [p["tasks"]["quality"]["interval"][1] - p["tasks"]["quality"]["interval"][0] for p in before]
    moved_widths = [p["tasks"]["quality"]["interval"][1] - p["tasks"]["quality"]["interval"][0] for p in after]
    assert max(widths) > 1.05 * min(widths) and widths == pytest.approx(moved_widths, abs=1e-3)
    assert before[0]["ood"]["flag"] is False and before[0]["ood"]["reasons"] == []

    # round trip: a second load gives identical predictions
    again = load_checkpoint(str(ckpt_dir), device="cpu").predict([as_adapter(m) for m in fresh])
    assert again == before

    # refused with a clear L171 when modules or shapes do not match
    missing = as_adapter({k: v for k, v in fresh[0].items() if k != "layers.1.v"}, source="short")
    with pytest.raises(LolctlError) as err:
        ckpt.predict([missing])
    assert err.value.code == "L171" and "layers.1.v" in str(err.value)
    wrong = dict(fresh[0])
    wrong["layers.0.q"] = (torch.randn(20, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64))
    with pytest.raises(LolctlError) as err:
        ckpt.check(as_adapter(wrong, source="wide"))
    assert err.value.code == "L171" and "layers.0.q" in str(err.value) and "20x12" in str(err.value)

    # out of distribution: unseen rank and a huge update magnitude are reported, not refused
    big = {k: (30 * U, 30 * V) for k, (U, V) in fresh[1].items()}
    reasons = ckpt.check(as_adapter(big))
    assert any("magnitude" in r for r in reasons)
    r8, _ = synthetic_factors(1, seed=5)
    r8 = {
        k: (
            torch.cat([U, 0.01 * torch.randn(U.shape[0], 5, dtype=U.dtype)], 1),
            torch.cat([V, 0.01 * torch.randn(V.shape[0], 5, dtype=V.dtype)], 1),
        )
        for k, (U, V) in r8[0].items()
    }
    assert any("rank" in r for r in ckpt.check(as_adapter(r8)))


def add_family_column(labels: Path) -> None:
    """A text column: the bare-CSV loader infers a multiclass task from it."""
    with labels.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["family"] = "alpha" if row["membership[A]"] == "1" else "beta"
        row["membership[C]"] = "0"  # one class only: AUROC is undefined (null in JSON, n/a in tables)
    with labels.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_bare_csv_seeded_split_cache_and_multiclass(tmp_path, reader):
    zoo = write_zoo(tmp_path / "zoo", 30, seed=1, with_split=False)
    (zoo / "manifest.json").unlink()
    add_family_column(zoo / "labels.csv")
    from lolctl.nn.data import assign_splits, load_factors
    from lolctl.zoo.format import load_zoo

    z = load_zoo(zoo / "labels.csv")
    kinds = {t.name: t.kind for t in z.tasks}
    assert kinds == {"quality": "regression", "family": "multiclass", "membership": "multilabel"}
    assert z.task("family").labels == ("alpha", "beta")
    split = assign_splits(z, seed=3)
    assert sorted(set(split)) == ["test", "train", "val"] and (split == assign_splits(z, seed=3)).all()
    batch, info = load_factors(z)
    assert info["base_models"] == [BASE] and batch.size == 30
    assert list((zoo / ".lolctl-cache").glob("*.safetensors"))
    cached, _ = load_factors(z)
    for g, h in zip(batch.groups, cached.groups):
        assert torch.equal(g.U, h.U) and torch.equal(g.V, h.V)
    assert torch.equal(batch.ranks, cached.ranks)

    runner = CliRunner()
    args = ["train", str(zoo / "labels.csv"), "--model", "mlp_svd", "--out", str(tmp_path / "c"), "--epochs", "3"]
    res = runner.invoke(_app(), [*args, "--format", "json", "--threads", "1"])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["training_data"]["split_source"] == "seeded (0)" and config["base_model"] == BASE
    assert config["name"] == "c"  # the --out folder's name (not a task's)
    assert {t["name"] for t in config["tasks"]} == {"quality", "family", "membership"}
    assert f"export LOLCTL_MODELS={tmp_path.resolve()}" in res.stderr  # how score finds it by base model
    from lolctl.nn.checkpoint import find_checkpoint_for

    os.environ["LOLCTL_MODELS"] = str(tmp_path)
    try:
        assert find_checkpoint_for(BASE) == str(tmp_path / "c")
    finally:
        del os.environ["LOLCTL_MODELS"]
    res = runner.invoke(_app(), ["eval", str(tmp_path / "c"), str(zoo / "labels.csv"), "--format", "json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["rows"] == "the checkpoint's recorded test ids" and result["n"] == len(
        config["training_data"]["test_ids"]
    )
    assert result["metrics"]["membership"]["per_label"]["C"]["auroc"] is None
    family = result["metrics"]["family"]
    assert family["kind"] == "multiclass" and 0.0 <= family["accuracy"] <= 1.0 and family["n"] == result["n"]

    # the comparison table: a second seed of the same model is aggregated with the first
    args2 = [*args[:5], str(tmp_path / "c1"), "--epochs", "3", "--seed", "1", "--format", "json", "--threads", "1"]
    assert runner.invoke(_app(), args2).exit_code == 0
    res = runner.invoke(_app(), ["compare", str(tmp_path / "c"), str(tmp_path / "c1"), "--format", "json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["models"]
    assert row["model"] == "mlp_svd" and row["seeds"] == 2 and set(row["quality.r2"]) == {"mean", "std"}
    res = runner.invoke(_app(), ["compare", str(tmp_path / "c"), str(tmp_path / "c1"), "--markdown"])
    assert res.stdout.startswith("| model | seeds |") and "| mlp_svd | 2 |" in res.stdout and "±" in res.stdout
    res = runner.invoke(_app(), ["compare", str(tmp_path / "c"), "--markdown"])  # one seed: no "± 0.000"
    assert "| mlp_svd | 1 |" in res.stdout and "±" not in res.stdout

    res = runner.invoke(_app(), ["train", str(zoo), "--model", "resnet", "--out", str(tmp_path / "d")])
    assert res.exit_code != 0 and "L180" in str(res.exception)


def test_resplit_ignores_the_split_column(tmp_path):
    from lolctl.nn.data import assign_splits
    from lolctl.zoo.format import load_zoo

    z = load_zoo(write_zoo(tmp_path / "zoo", 20, seed=2))
    assert "test_extra" in set(assign_splits(z, 0))
    drawn = assign_splits(z, 0, resplit=True)
    assert set(drawn) == {"train", "val", "test"} and (drawn == "train").sum() == 14


def test_train_refuses_a_non_empty_out_folder_unless_overwrite(tmp_path):
    zoo = write_zoo(tmp_path / "zoo", 30, seed=2)
    out = tmp_path / "my-peft-adapter"  # someone's adapter folder: its README.md must survive a mistaken --out
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    (out / "adapter_config.json").write_text("{}")
    args = ["train", str(zoo), "--model", "mlp_svd", "--out", str(out), "--epochs", "2", "--threads", "1",
            "--format", "json", "--device", "cpu"]
    runner = CliRunner()
    res = runner.invoke(_app(), args)
    assert isinstance(res.exception, LolctlError) and res.exception.code == "L180", res.output
    assert res.exception.exit_code == 2 and "not empty" in res.exception.reason
    assert "README.md" in res.exception.reason and "--overwrite" in res.exception.remedy
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json"]
    assert (out / "README.md").read_text() == "my notes\n"
    (tmp_path / "a-file").write_text("x")
    res = runner.invoke(_app(), [*args[:5], str(tmp_path / "a-file"), *args[6:]])
    assert isinstance(res.exception, LolctlError) and "not a folder" in res.exception.reason
    res = runner.invoke(_app(), [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert {"config.json", "model.safetensors", "adapter_config.json"} <= {p.name for p in out.iterdir()}
    assert (out / "README.md").read_text() != "my notes\n"  # replaced by the model card, as asked
    assert runner.invoke(_app(), [*args[:5], str(tmp_path / "new" / "ckpt"), *args[6:]]).exit_code == 0


def test_train_auto_picks_per_task_by_validation(tmp_path):
    """--model auto: every task gets each candidate trained on it alone; the lower validation loss wins; the
    composite checkpoint loads, evaluates and predicts like any other, and its tasks come from the chosen members."""
    from lolctl.nn.checkpoint import load_checkpoint

    zoo = write_zoo(tmp_path / "zoo", 120, seed=3)
    runner = CliRunner()
    out = tmp_path / "auto"
    res = runner.invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates", "glnet:hidden=8;mlp_svd",
                                 "--out", str(out), "--epochs", "25", "--patience", "8", "--format", "json",
                                 "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "composite"
    for task in ("quality", "membership"):
        pick = config["selection"][task]
        losses = {k: v["val_loss"] for k, v in pick["candidates"].items()}
        assert set(losses) == {"glnet hidden=8", "mlp_svd"} and pick["chosen"] == min(losses, key=losses.get)
        # a rank-specific winner (mlp_svd reads σ_1..σ_k) keeps the rank-free GL-net as its fallback
        assert pick.get("fallback") == ("glnet hidden=8" if pick["chosen"] == "mlp_svd" else None)
    members = config["model_config"]["members"]
    assert {m["tasks"][0]: m["label"] for m in members if not m["fallback"]} == {
        t: config["selection"][t]["chosen"] for t in ("quality", "membership")}
    picks = config["selection"]
    assert {m["tasks"][0]: m["label"] for m in members if m["fallback"]} == {
        t: picks[t]["fallback"] for t in ("quality", "membership") if "fallback" in picks[t]}
    assert ("fallback members" in res.stderr) == any(m["fallback"] for m in members)
    assert "no candidate is rank-free" not in res.stderr
    res = runner.invoke(_app(), ["eval", str(out), str(zoo), "--format", "json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["metrics"]
    assert got["quality"]["r2"] == pytest.approx(config["metrics"]["test"]["quality"]["r2"], abs=1e-6)
    adapters, _ = synthetic_factors(3, seed=5)
    ckpt = load_checkpoint(str(out), device="cpu")
    preds = ckpt.predict([as_adapter(m) for m in adapters])
    assert len(preds) == 3 and all(set(p["tasks"]) == {"quality", "membership"} for p in preds)
    assert (out / "ood.safetensors").is_file() and ckpt.ood_reference.n == 64  # no anchors: stored references
    for wrong, say in ((["--model", "auto", "--set", "hidden=8"], "--candidates"),
                       (["--model", "glnet", "--ensemble", "3"], "--model auto"),
                       (["--model", "glnet", "--candidates", "mlp_svd"], "--model auto")):
        res = runner.invoke(_app(), ["train", str(zoo), *wrong, "--out", str(tmp_path / "never")])
        assert isinstance(res.exception, LolctlError) and say in res.exception.remedy + res.exception.reason
        assert not (tmp_path / "never").exists()  # refused before any work



def test_auto_candidate_training_settings():
    """A candidate's tasks=, epochs=, patience=, lr= and weight_decay= are its own training settings, not model
    settings; bad ones are refused with the candidate named."""
    from lolctl.nn.spec import TaskSpec
    from lolctl.nn.train import TrainConfig
    from lolctl.nn.workflow import candidate_training

    TASKS = (TaskSpec("membership", "multilabel", ("m[a]", "m[b]"), ("a", "b")),
             TaskSpec("noise", "multiclass", ("noise",), ("clean", "noisy")))
    cfg = TrainConfig(epochs=300, patience=30)
    values, run, only, label = candidate_training(
        "mlp_dense", {"head_hidden": "32", "tasks": "noise+membership", "epochs": "40", "patience": "8"}, cfg, TASKS)
    assert values == {"head_hidden": "32"} and only == {"noise", "membership"}
    assert (run.epochs, run.patience, run.lr) == (40, 8, cfg.lr) and (cfg.epochs, cfg.patience) == (300, 30)
    assert label == "mlp_dense head_hidden=32 tasks=noise+membership epochs=40 patience=8"
    assert candidate_training("glnet", {"hidden": "8"}, cfg, TASKS)[1:3] == (cfg, None)
    run = candidate_training("mlp_dense", {"lr": "3e-4", "weight_decay": "0"}, cfg, TASKS)[1]
    assert (run.lr, run.weight_decay, run.epochs) == (3e-4, 0.0, 300) and cfg.lr == 1e-3
    for bad, say in (({"tasks": "noise+nosuch"}, "'nosuch'"), ({"epochs": "many"}, "epochs=many"),
                     ({"lr": "0"}, "lr=0"), ({"lr": "fast"}, "lr=fast"), ({"weight_decay": "-1"}, "weight_decay=-1"),
                     ({"lr": "nan"}, "lr=nan")):
        with pytest.raises(LolctlError) as err:
            candidate_training("glnet", bad, cfg, TASKS)
        assert err.value.code == "L180" and say in err.value.reason and "glnet" in err.value.where


def test_train_auto_tries_a_candidate_only_on_its_tasks(tmp_path):
    zoo = write_zoo(tmp_path / "zoo", 120, seed=3)
    out = tmp_path / "auto"
    res = CliRunner().invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates",
                                      "glnet:hidden=4,epochs=3;mlp_svd:tasks=quality,patience=2", "--out", str(out),
                                      "--epochs", "6", "--format", "json", "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    picks = json.loads((out / "config.json").read_text())["selection"]
    assert set(picks["membership"]["candidates"]) == {"glnet hidden=4 epochs=3"}
    assert set(picks["quality"]["candidates"]) == {"glnet hidden=4 epochs=3", "mlp_svd tasks=quality patience=2"}
    assert picks["membership"]["candidates"]["glnet hidden=4 epochs=3"]["best_epoch"] <= 3

def test_train_auto_skips_a_candidate_too_large_for_the_adapters(tmp_path):
    """An MLP+Dense candidate over its memory budget (L173) is skipped with a warning and recorded; the others
    still compete; when every candidate is too large, the error says so and nothing is written."""
    zoo = write_zoo(tmp_path / "zoo", 80, seed=3)
    out = tmp_path / "auto"
    common = ["--task", "quality", "--epochs", "3", "--format", "json", "--device", "cpu", "--threads", "1"]
    dense = "mlp_dense:head_hidden=8,memory_budget_mb=0.001"
    res = CliRunner().invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates", f"{dense};mlp_svd",
                                      "--out", str(out), *common])
    assert res.exit_code == 0, res.output
    pick = json.loads((out / "config.json").read_text())["selection"]["quality"]
    label = "mlp_dense head_hidden=8 memory_budget_mb=0.001"
    assert set(pick["candidates"]) == {"mlp_svd"} and "over the budget" in pick["skipped"][label]
    assert f"candidate '{label}' skipped" in res.stderr and "L173" in res.stderr
    res = CliRunner().invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates", dense,
                                      "--out", str(tmp_path / "never"), *common])
    assert isinstance(res.exception, LolctlError) and res.exception.code == "L173"
    assert "too large" in res.exception.reason and label in res.exception.reason
    assert not (tmp_path / "never").exists() or not any((tmp_path / "never").iterdir())


def test_train_auto_with_a_factored_dense_member(tmp_path):
    """An MLP+Dense candidate with store_rank: the member is chosen on the validation loss of its stored (factored)
    form, the checkpoint holds the factors and no dense first layer, and eval reproduces the metrics train stored."""
    from safetensors import safe_open

    zoo = write_zoo(tmp_path / "zoo", 120, seed=3)
    out = tmp_path / "auto"
    runner = CliRunner()
    res = runner.invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates",
                                 "mlp_dense:unit_norm=true,head_hidden=8,store_rank=2", "--task", "quality",
                                 "--out", str(out), "--epochs", "6", "--format", "json", "--device", "cpu",
                                 "--threads", "1"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    member = config["model_config"]["members"][0]
    assert member["architecture"] == "mlp_dense" and member["model_config"]["factored"] is True
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        shapes = {k: fh.get_slice(k).get_shape() for k in fh.keys()}
    spec = config["input_spec"]["modules"]
    assert sum(s[0] * s[1] * s[2] for k, s in shapes.items() if ".first_" in k) == 8 * 2 * sum(
        m["n"] + m["m"] for m in spec)
    assert shapes["members.0.head.0.weight"] == [8, len(spec)]  # the dense layer is gone: head[0] reads log-norms
    res = runner.invoke(_app(), ["eval", str(out), str(zoo), "--format", "json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["metrics"]["quality"]["r2"]
    assert got == pytest.approx(config["metrics"]["test"]["quality"]["r2"], abs=1e-6)


def test_train_auto_rank_fallback_predicts_and_calibrates_unseen_ranks(tmp_path):
    """Trained on rank-4 adapters only, auto keeps a rank-free fallback beside a rank-specific winner: rank-2
    adapters get the fallback's predictions and its own temperatures and intervals (fitted on val as the fallback
    predicts it), rank-4 adapters the winner's; train's stored metrics equal eval's on the unseen-rank split."""
    from lolctl.nn.checkpoint import load_checkpoint
    from lolctl.nn.data import load_factors, targets
    from lolctl.zoo.format import load_zoo

    def split_of(i: int, label: dict) -> str | None:
        if label["rank"] == 2:
            return "test_r2"
        return default_split(i, label) if label["rank"] == 4 else None

    zoo = write_zoo(tmp_path / "zoo", 300, seed=11, split_of=split_of)
    out = tmp_path / "auto"
    runner = CliRunner()
    res = runner.invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates", "mlp_svd;glnet:hidden=8",
                                 "--out", str(out), "--epochs", "20", "--patience", "6", "--format", "json",
                                 "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["ood"]["ranks"] == [4] and config["model_config"]["seen_ranks"] == [4]
    ckpt = load_checkpoint(str(out), device="cpu")
    model = ckpt.model
    routed = sorted(model.fallback_route)
    assert routed == [t for t, pick in config["selection"].items() if pick["chosen"] == "mlp_svd"]
    if not routed:  # the draw made GL-net win both tasks: nothing to route (the seed is fixed, so this is stable)
        pytest.skip("no rank-specific winner")
    assert "fallback members" in res.stderr and config["fallback"]["seen_ranks"] == [4]
    assert set(config["fallback"]["intervals"]) == {"quality"} and set(config["fallback"]["calibration"]) == {
        "membership"}
    data = load_zoo(zoo)
    batch, _ = load_factors(data, cache=False)
    batch = batch.respec(ckpt.spec)
    r2 = np.array([s == "test_r2" for s in data.splits])
    assert r2.any() and (ckpt.fallback_rows(batch) == r2).all()
    pred = ckpt.predict_batch(batch)
    model.force_route = "fallback"
    try:
        forced = ckpt.predict_batch(batch.select(np.flatnonzero(r2)))
    finally:
        model.force_route = None
    for t in routed:  # unseen-rank rows: the fallback's predictions (and its temperature, when it has one)
        np.testing.assert_allclose(pred[t][r2], forced[t], rtol=1e-6, atol=1e-7)
    if "quality" in routed:
        iv = ckpt.interval_batch(batch, pred)["quality"]
        from lolctl.nn.infer import embeddings

        h = embeddings(model, batch)
        primary = ckpt._intervals(pred, ckpt.config.intervals, h, ckpt._calib)["quality"]
        assert not np.allclose(iv[r2], primary[r2])  # the fallback's own residuals set the widths there
        np.testing.assert_allclose(iv[~r2], primary[~r2])
    res = runner.invoke(_app(), ["eval", str(out), str(zoo), "--split", "test_r2", "--format", "json",
                                 "--device", "cpu"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["metrics"]
    assert got["quality"]["r2"] == pytest.approx(config["metrics"]["test_r2"]["quality"]["r2"], abs=1e-6)
    y = targets(data, data.task("quality"))[r2]
    assert np.isfinite(y).all()


def test_train_auto_ensemble_averages_seeded_copies(tmp_path):
    """--ensemble 2: the chosen member is trained again with the next seed; the composite's prediction is the mean
    of the two copies' standardised outputs, and both copies are in the config with their seeds."""
    from lolctl.nn.checkpoint import load_checkpoint
    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo

    zoo = write_zoo(tmp_path / "zoo", 80, seed=4)
    out = tmp_path / "ens"
    res = CliRunner().invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates", "glnet:hidden=4",
                                      "--ensemble", "2", "--task", "quality", "--out", str(out), "--epochs", "6",
                                      "--format", "json", "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    members = config["model_config"]["members"]
    assert [(m["label"], m["seed"]) for m in members] == [("glnet hidden=4", 0), ("glnet hidden=4", 1)]
    assert config["selection"]["quality"]["ensemble"] == 2
    card = (out / "README.md").read_text()  # two seeds, half each: an ensemble, not a blend
    assert "Chosen per task by validation loss" in card and "| glnet hidden=4 | 1.00 | 0, 1 | all ranks |" in card
    model = load_checkpoint(str(out), device="cpu").model
    batch, _ = load_factors(load_zoo(zoo), cache=False)
    with torch.no_grad():
        both = [m(batch)["quality"] for m in model.members]
        assert not torch.allclose(both[0], both[1])  # two seeds, two models
        torch.testing.assert_close(model(batch)["quality"], (both[0] + both[1]) / 2)

def test_train_auto_ensemble_per_task(tmp_path):
    """--ensemble quality=2: quality's member trained with two seeds at half weight each, the other task's once."""
    zoo = write_zoo(tmp_path / "zoo", 60, seed=5)
    other = "membership"  # write_zoo's other task
    out = tmp_path / "ens"
    res = CliRunner().invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates", "glnet:hidden=4",
                                      "--ensemble", "quality=2", "--task", "quality", "--task", other,
                                      "--out", str(out), "--epochs", "3", "--format", "json", "--device", "cpu",
                                      "--threads", "1"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    members = [(m["tasks"], m["seed"], m["weight"]) for m in config["model_config"]["members"]]
    assert members == [(["quality"], 0, 0.5), (["quality"], 1, 0.5), ([other], 0, 1.0)]
    assert config["selection"]["quality"]["ensemble"] == 2 and "ensemble" not in config["selection"][other]


@pytest.mark.parametrize("text, message", [("0", "N ≥ 1"), ("quality=0", "N ≥ 1"), ("qualty=2", "no task 'qualty'"),
                                           ("2,quality=3", "bare count"), ("", "N ≥ 1")])
def test_ensemble_spec_refuses_bad_counts_and_unknown_tasks(tmp_path, text, message):
    """A typo in --ensemble fails before any training, naming the item and the tasks it could have meant."""
    zoo = write_zoo(tmp_path / "zoo", 20, seed=5)
    res = CliRunner().invoke(_app(), ["train", str(zoo), "--model", "auto", "--ensemble", text, "--task", "quality",
                                      "--out", str(tmp_path / "o"), "--format", "json"])
    from lolctl.errors import LolctlError

    assert isinstance(res.exception, LolctlError) and res.exception.code == "L180", res.output
    assert message in str(res.exception) and "--ensemble" in str(res.exception)
    assert not (tmp_path / "o" / "config.json").exists()


def test_greedy_blend_weighs_candidates_whose_errors_cancel():
    """Ensemble selection: two candidates with independent errors average to a lower loss than either, so both get
    weight; a useless one (a constant) never does; one step, or no gain, keeps the single best."""
    from lolctl.nn.spec import TaskSpec
    from lolctl.nn.workflow import greedy_blend

    task = TaskSpec("quality", "regression", ("quality",))
    g = torch.Generator().manual_seed(0)
    y = torch.randn(400, 1, generator=g)
    a, b = y + 0.5 * torch.randn(400, 1, generator=g), y + 0.6 * torch.randn(400, 1, generator=g)
    weights, loss, own = greedy_blend(task, [a, torch.zeros_like(y), b], y, 4)
    assert set(weights) == {0, 2} and sum(weights.values()) == pytest.approx(1.0) and weights[0] >= weights[2]
    assert loss < min(own) and own[1] == pytest.approx(float((y ** 2).mean()))
    mixed = sum(w * [a, None, b][i] for i, w in weights.items())
    assert loss == pytest.approx(float(((mixed - y) ** 2).mean()), rel=1e-6)
    assert greedy_blend(task, [a, b], y, 1)[0] == {0: 1.0}
    assert greedy_blend(task, [a, a.clone()], y, 5)[0] == {0: 1.0}  # a copy adds nothing: stop after one pick
    logits = torch.stack([y[:, 0], -y[:, 0]], 1)  # multiclass: blended as logits, scored by cross-entropy
    labels = (y[:, 0] < 0).long()
    cls = TaskSpec("noise", "multiclass", ("noise",), ("a", "b"))
    assert greedy_blend(cls, [-logits, logits], labels, 3)[0] == {1: 1.0}  # the right one, alone


def test_hold_out_select_is_a_seeded_share_of_train():
    from lolctl.nn.workflow import SELECT_SHARE, hold_out_select

    split = np.array(["train"] * 200 + ["val"] * 30 + ["test"] * 30 + ["test_r2"] * 10, dtype=object)
    out = hold_out_select(split, 0, "labels.csv")
    chosen = np.flatnonzero(out == "select")
    assert chosen.size == round(SELECT_SHARE * 200) and (chosen < 200).all()
    assert (out[split != "train"] == split[split != "train"]).all() and (split == "train").sum() == 200  # a copy
    assert (hold_out_select(split, 0, "x") == out).all() and not (hold_out_select(split, 1, "x") == out).all()
    with pytest.raises(LolctlError) as err:
        hold_out_select(np.array(["train"] * 40 + ["val"] * 5, dtype=object), 0, "labels.csv")
    assert err.value.code == "L175" and "--blend" in err.value.remedy and err.value.where == "labels.csv"


def test_train_auto_blend_averages_candidates_with_their_weights(tmp_path, monkeypatch):
    """--blend 3: per task the candidates' weights come from held-out "select" adapters that the first pass never
    trains on; the kept candidates are then trained again with them, for their first pass's best epochs; the
    members carry the weights and the composite's output is their weighted mean; a rank-specific member in a blend
    keeps a rank-free fallback; eval reproduces the stored metrics."""
    from lolctl.nn import workflow
    from lolctl.nn.checkpoint import load_checkpoint
    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo

    fits = []  # (task, training rows, epoch bound) of every fit

    def spy(model, batch, y, split, norm, cfg, progress=None):
        fits.append((model.tasks[0].name, int((split == "train").sum()), cfg.epochs))
        return fit(model, batch, y, split, norm, cfg, progress)

    fit = workflow.fit
    monkeypatch.setattr(workflow, "fit", spy)
    zoo = write_zoo(tmp_path / "zoo", 160, seed=3)
    out = tmp_path / "blend"
    runner = CliRunner()
    res = runner.invoke(_app(), ["train", str(zoo), "--model", "auto", "--candidates", "glnet:hidden=4;mlp_svd",
                                 "--blend", "3", "--out", str(out), "--epochs", "12", "--patience", "4",
                                 "--format", "json", "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    n_train, held = config["training_data"]["splits"]["train"], config["training_data"]["blend_select"]["adapters"]
    assert held == round(0.1 * n_train) and "select" not in config["metrics"]
    assert "weighted average of candidates" in (out / "README.md").read_text()
    for task, pick in config["selection"].items():
        first = [f for f in fits if f[0] == task and f[1] == n_train - held]
        again = [f for f in fits if f[0] == task and f[1] == n_train]
        assert len(first) == 2 and all(f[2] == 12 for f in first)  # both candidates, without the select rows
        kept = set(pick["blend"]) | set(pick.get("fallback_blend", {}))
        assert sorted(f[2] for f in again) == sorted(max(1, pick["candidates"][k]["best_epoch"]) for k in kept)
    members = config["model_config"]["members"]
    for task, pick in config["selection"].items():
        assert pick["blend"] and sum(pick["blend"].values()) == pytest.approx(1.0)
        assert all("select_loss" in c for c in pick["candidates"].values())
        assert pick["blend_select_loss"] <= min(c["select_loss"] for c in pick["candidates"].values()) + 1e-9
        primary = {m["label"]: m["weight"] for m in members if m["tasks"] == [task] and not m["fallback"]}
        assert primary == pytest.approx(pick["blend"])
        assert ("fallback_blend" in pick) == (not pick["rank_free"])
    model = load_checkpoint(str(out), device="cpu").model
    batch, _ = load_factors(load_zoo(zoo), cache=False)
    batch = batch.select(np.flatnonzero(~model.fallback_rows(batch).numpy()))
    with torch.no_grad():
        got = model(batch)
        for task in config["selection"]:
            idx = model.route[task]
            w = torch.tensor([members[i]["weight"] for i in idx])
            want = sum(w[k] / w.sum() * model.models[i](batch)[task] for k, i in enumerate(idx))
            torch.testing.assert_close(got[task], want)
    res = runner.invoke(_app(), ["eval", str(out), str(zoo), "--format", "json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    got_r2 = json.loads(res.stdout)["metrics"]["quality"]["r2"]
    assert got_r2 == pytest.approx(config["metrics"]["test"]["quality"]["r2"], abs=1e-6)
    res = runner.invoke(_app(), ["train", str(zoo), "--model", "glnet", "--blend", "2", "--out", str(tmp_path / "n")])
    assert isinstance(res.exception, LolctlError) and "--model auto" in res.exception.remedy


def test_compare_warns_when_checkpoints_come_from_different_zoos():
    from lolctl.nn.compare import mixed_zoos_warning, record, zoo_identity

    def config(name: str, ids: list[str]) -> dict:
        return {"architecture": "mlp_svd", "train_config": {"seed": 0},
                "training_data": {"recipe": {"recipe": {"name": name}}, "test_ids": ids}}

    a, b, c = config("minilm-wordnet", ["x", "y"]), config("minilm-wordnet", ["y", "x"]), config("smollm2", ["x"])
    assert zoo_identity(a) == zoo_identity(b) != zoo_identity(config("minilm-wordnet", ["x", "z"]))
    same = [record(a, {}, "a"), record(b, {}, "b")]
    assert mixed_zoos_warning(same) is None
    warning = mixed_zoos_warning([*same, record(c, {}, "c")])
    assert warning and "smollm2" in warning and "minilm-wordnet" in warning and "do not compare" in warning



def test_compare_names_composites_by_members_and_keeps_coverage():
    """A --model auto checkpoint is one comparison row named by its distinct member models (not by its whole member
    list), and a regression task's 90 % interval coverage and the split size travel with the row."""
    from lolctl.nn.compare import record, variant

    member = {"architecture": "glnet", "label": "glnet anchors=64"}
    a = {"architecture": "composite", "model_config": {"members": [dict(member, tasks=["quality"]),
                                                                   dict(member, tasks=["noise"])]}}
    b = {"architecture": "composite", "model_config": {"members": [member, {"architecture": "mlp_svd"}]}}
    assert variant(a) == "composite [glnet anchors=64]"
    assert variant(b) == "composite [glnet anchors=64 | mlp_svd]"
    metrics = {"quality": {"kind": "regression", "r2": 0.8, "n": 7, "interval90": {"coverage": 0.875}},
               "noise": {"kind": "multiclass", "accuracy": 0.9, "n": 7}}
    row = record(a, metrics, "a")
    assert (row["n"], row["quality.r2"], row["quality.coverage90"], row["noise.accuracy"]) == (7, 0.8, 0.875, 0.9)
    assert "noise.coverage90" not in row

def _calibration_zoo_and_model(tmp_path, epochs: int):
    """A 200-adapter synthetic zoo (20 in its extra split test_extra) and an MLP+SVD checkpoint trained on it."""
    zoo = write_zoo(tmp_path / "zoo", 200, seed=4)
    runner = CliRunner()
    out = tmp_path / "m"
    res = runner.invoke(_app(), ["train", str(zoo), "--model", "mlp_svd", "--out", str(out), "--epochs", str(epochs),
                                 "--format", "json", "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    return zoo, runner, out


def test_calibrate_refits_uncertainty_on_held_out_adapters(tmp_path):
    """calibrate: temperatures and local intervals refitted on held-out rows (here the zoo's extra split), point
    predictions unchanged, stored metrics marked stale until eval --store refreshes them; training and test rows
    are refused."""
    import shutil

    from lolctl.nn.checkpoint import load_checkpoint

    zoo, runner, out = _calibration_zoo_and_model(tmp_path, epochs=15)
    (out / "calibration.safetensors").unlink()  # as a checkpoint of an older lolctl: global intervals only
    config = json.loads((out / "config.json").read_text())
    for v in config["intervals"].values():
        for key in ("method", "k", "q", "floor"):
            v.pop(key, None)
    config.pop("calibration", None)
    (out / "config.json").write_text(json.dumps(config))
    adapters, _ = synthetic_factors(6, seed=9)
    before = load_checkpoint(str(out), device="cpu").predict([as_adapter(m) for m in adapters])
    widths = {round(p["tasks"]["quality"]["interval"][1] - p["tasks"]["quality"]["interval"][0], 9) for p in before}
    assert len(widths) == 1  # global intervals: one width for every adapter

    for split in ("train", "test"):
        res = runner.invoke(_app(), ["calibrate", str(out), str(zoo), "--split", split, "--device", "cpu"])
        assert isinstance(res.exception, LolctlError) and res.exception.code == "L180", split
    saved = (out / "config.json").read_text()
    res = runner.invoke(_app(), ["calibrate", str(out), str(zoo), "--split", "test_extra", "--format", "json",
                                 "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (out / "config.json").read_text() != saved and (out / "calibration.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["calibrated_on"]["split"] == "test_extra" and config["calibrated_on"]["n"] == 20
    assert config["intervals"]["quality"]["method"] == "knn-conformal" and "membership" in config["calibration"]
    assert "before the calibration" in config["metrics_note"] and "Note:" in (out / "README.md").read_text()
    after = load_checkpoint(str(out), device="cpu").predict([as_adapter(m) for m in adapters])
    for a, b in zip(before, after):
        assert a["tasks"]["quality"]["value"] == pytest.approx(b["tasks"]["quality"]["value"], abs=1e-9)
    widths = {round(p["tasks"]["quality"]["interval"][1] - p["tasks"]["quality"]["interval"][0], 9) for p in after}
    assert len(widths) > 1  # local intervals: the width follows the adapter

    res = runner.invoke(_app(), ["eval", str(out), str(zoo), "--store", "--format", "json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["metrics"]["test"] == json.loads(res.stdout)["metrics"]
    assert "test:" not in config["metrics_note"] and "val" in config["metrics_note"]  # the others still stale
    res = runner.invoke(_app(), ["eval", str(out), str(zoo), "--split", "test_extra", "--store", "--store-as",
                                 "test_seed1", "--format", "json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    stored = json.loads((out / "config.json").read_text())["metrics"]
    assert stored["test_seed1"] == json.loads(res.stdout)["metrics"] and stored["test"] == config["metrics"]["test"]
    assert "test_seed1" in (out / "README.md").read_text()
    for wrong in (["--store-as", "x"], ["--store", "--store-as", "val"], ["--store", "--store-as", "a b"]):
        res = runner.invoke(_app(), ["eval", str(out), str(zoo), *wrong])
        assert isinstance(res.exception, LolctlError) and res.exception.code == "L180", wrong
    copy = tmp_path / "copy.csv"
    shutil.copy(zoo / "labels.csv", copy)
    res = runner.invoke(_app(), ["eval", "minilm-wordnet-glnet", str(zoo), "--store"])
    assert isinstance(res.exception, LolctlError)  # a built-in name is not a folder to update


def test_calibrate_ood_contrast_gives_the_checkpoint_an_input_feature(tmp_path):
    """calibrate --ood-contrast FILE [--ood-inside FILE]: the checkpoint keeps ood_inputs.safetensors and records the
    feature's reference statistics; the OOD reference then scores it; --ood-inside alone is refused before anything
    is written."""
    from lolctl.nn.checkpoint import load_checkpoint
    from lolctl.nn.glnet import write_probes

    zoo, runner, out = _calibration_zoo_and_model(tmp_path, epochs=5)
    d = json.loads((out / "config.json").read_text())["input_spec"]["modules"][0]["m"]
    gen = torch.Generator().manual_seed(0)
    files = {}
    for side in ("inside", "other"):
        x = torch.randn(d, d, generator=gen)
        files[side] = write_probes(tmp_path / f"{side}.safetensors", ["g"], [x @ x.T], 4, f"probes {side}")
    saved = (out / "config.json").read_text()
    res = runner.invoke(_app(), ["calibrate", str(out), str(zoo), "--split", "test_extra", "--ood-inside",
                                 str(files["inside"])])
    assert isinstance(res.exception, LolctlError) and res.exception.code == "L180"
    assert (out / "config.json").read_text() == saved and not (out / "ood_inputs.safetensors").exists()
    res = runner.invoke(_app(), ["calibrate", str(out), str(zoo), "--split", "test_extra", "--ood-contrast",
                                 str(files["other"]), "--ood-inside", str(files["inside"]), "--format", "json",
                                 "--device", "cpu"])
    assert res.exit_code == 0, res.output
    recorded = json.loads((out / "config.json").read_text())["ood"]["input_contrast"]
    assert recorded["describe"] == "probes other" and recorded["reference_std"] > 0
    ckpt = load_checkpoint(str(out), device="cpu")
    assert ckpt.ood_reference is not None and "input_contrast" in ckpt.ood_reference.names
    adapters, _ = synthetic_factors(3, seed=9)
    assert all("score" in p["ood"] for p in ckpt.predict([as_adapter(m) for m in adapters]))
    again = tmp_path / "again"  # train --ood-contrast does the same at the end of training
    res = runner.invoke(_app(), ["train", str(zoo), "--model", "mlp_svd", "--out", str(again), "--epochs", "2",
                                 "--ood-contrast", str(files["other"]), "--ood-inside", str(files["inside"]),
                                 "--format", "json", "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ood_input_contrast"]["describe"] == "probes other"
    assert (again / "ood_inputs.safetensors").is_file()
