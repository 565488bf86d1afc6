"""Checkpoints: save/load without pickle, resolution (path, built-in name, Hub id), errors, model card, OOD checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, ModuleFactors
from lolctl.nn import InputSpec, ModuleSpec, TaskSpec, build_model
from lolctl.nn.checkpoint import (
    FILES,
    OPTIONAL_FILES,
    find_checkpoint_for,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
)

SPEC = InputSpec((ModuleSpec("l0.q", 8, 6), ModuleSpec("l0.v", 8, 6)))
TASKS = (
    TaskSpec("quality", "regression", ("quality",)),
    TaskSpec("membership", "multilabel", ("membership[x]", "membership[y]"), ("x", "y")),
)
BASE = "org/base-model"


def adapter(r: int = 2, seed: int = 0, base: str | None = BASE, scale: float = 1.0) -> Adapter:
    gen = torch.Generator().manual_seed(seed)
    mods = [
        ModuleFactors(m.name, scale * torch.randn(m.n, r, generator=gen), torch.randn(m.m, r, generator=gen), 1.0, "t")
        for m in SPEC.modules
    ]
    return Adapter(f"adapter{seed}", AdapterMeta("peft", base_model=base), mods)


def write(folder, name="tiny", arch="glnet"):
    torch.manual_seed(0)
    model = build_model(arch, {"hidden": 4} if arch == "glnet" else {}, SPEC, TASKS)
    config = {
        "name": name,
        "architecture": arch,
        "model_config": model.config.to_dict(),
        "input_spec": SPEC.to_dict(),
        "base_model": BASE,
        "tasks": [t.to_dict() for t in TASKS],
        "target_normalisation": {"quality": {"mean": [2.0], "std": [0.5]}},
        "intervals": {"quality": {"coverage": 0.9, "lo": [-0.1], "hi": [0.2]}},
        "ood": {"ranks": [2], "scale_log_range": [-1.0, 1.0]},
        "metrics": {"test": {"quality": {"kind": "regression", "r2": 0.7, "kendall_tau": math.nan, "n": 3}}},
    }
    return save_checkpoint(folder / name, model, config)


def test_roundtrip_predict_contract(tmp_path):
    folder = write(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    config = json.loads((folder / "config.json").read_text())  # strict JSON: NaN metrics became null
    assert config["metrics"]["test"]["quality"]["kendall_tau"] is None and config["format"] == "lolctl-checkpoint"
    card = (folder / "README.md").read_text()
    assert "glnet" in card and BASE in card and "| quality | r2 | 0.700 |" in card
    ckpt = load_checkpoint(str(folder), device="cpu")
    assert ckpt.name == "tiny" and ckpt.base_model == BASE and ckpt.config.architecture == "glnet"
    preds = ckpt.predict([adapter(seed=1), adapter(seed=2)])
    assert len(preds) == 2 and preds[0]["checkpoint"] == "tiny"
    q = preds[0]["tasks"]["quality"]
    assert q["kind"] == "regression" and q["interval"] == pytest.approx([q["value"] - 0.1, q["value"] + 0.2])
    probs = preds[0]["tasks"]["membership"]["probs"]
    assert set(probs) == {"x", "y"} and all(0 < p < 1 for p in probs.values())
    assert preds == load_checkpoint(str(folder), device="cpu").predict([adapter(seed=1), adapter(seed=2)])
    config["calibration"] = {"membership": {"temperature": 0.05, "n": 40, "shown": [0.2, 0.7]}}  # very sharp
    (folder / "config.json").write_text(json.dumps(config))
    shown = [p for pred in load_checkpoint(str(folder), device="cpu").predict([adapter(seed=s) for s in range(6)])
             for p in pred["tasks"]["membership"]["probs"].values()]
    assert all(0.2 <= p <= 0.7 for p in shown) and {0.2, 0.7} & set(shown)  # the limits bind


def test_ood_reasons(tmp_path):
    ckpt = load_checkpoint(str(write(tmp_path)), device="cpu")
    assert any("base model" in r for r in ckpt.check(adapter(base="other/model")))
    assert any("rank 3" in r for r in ckpt.check(adapter(r=3)))
    assert ckpt.predict([adapter(r=3)])[0]["ood"]["flag"] is True


def test_builtin_name_and_find_for_base_model(tmp_path, monkeypatch):
    write(tmp_path / "models", name="minilm-glnet")
    monkeypatch.setenv("LOLCTL_MODELS", str(tmp_path / "models"))
    assert load_checkpoint("minilm-glnet", device="cpu").name == "minilm-glnet"
    assert find_checkpoint_for(BASE) == str(tmp_path / "models" / "minilm-glnet")
    assert find_checkpoint_for("ORG/Base-Model") is not None  # case-insensitive
    assert find_checkpoint_for("other/model") is None and find_checkpoint_for(None) is None
    config = json.loads((tmp_path / "models" / "minilm-glnet" / "config.json").read_text())
    config["base_model_aliases"] = ["/opt/copies/base-model"]
    (tmp_path / "models" / "minilm-glnet" / "config.json").write_text(json.dumps(config))
    assert find_checkpoint_for("/opt/copies/base-model/") == str(tmp_path / "models" / "minilm-glnet")
    ckpt = load_checkpoint("minilm-glnet", device="cpu")
    assert not any("base model" in r for r in ckpt.check(adapter(base="/opt/copies/base-model")))  # an alias
    with pytest.raises(LolctlError) as err:
        load_checkpoint("no-such-model")
    assert err.value.code == "L172" and "minilm-glnet" in str(err.value)


def test_hub_repo_id_uses_snapshot_download_with_allow_patterns(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    folder = write(tmp_path)
    calls = []

    def fake(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert load_checkpoint("someone/lolctl-glnet", device="cpu").name == "tiny"
    assert calls == [("someone/lolctl-glnet", [*FILES, *OPTIONAL_FILES])]

    def offline(repo_id, allow_patterns):
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LolctlError) as err:
        load_checkpoint("someone/lolctl-glnet")
    assert err.value.code == "L163"  # offline mode and not cached
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(LolctlError) as err:
        load_checkpoint("someone/lolctl-glnet")
    assert err.value.code == "L164"  # not offline: the Hub could not be reached and it is not cached


def test_broken_checkpoints_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LolctlError, match="L170"):
        load_checkpoint(str(tmp_path / "empty"))
    folder = write(tmp_path)
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(LolctlError, match="L170"):
        load_checkpoint(str(folder))
    other = write(tmp_path, name="other", arch="mlp_svd")  # weights of another architecture
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(LolctlError, match="L170"):
        load_checkpoint(str(folder))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(LolctlError, match="L170"):
        load_checkpoint(str(folder))


def test_devices(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with monkeypatch.context() as m:  # auto follows what torch reports, both ways
        m.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_device("auto").type == "cuda"
        m.setattr(torch.cuda, "is_available", lambda: False)
        assert resolve_device("auto").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(LolctlError) as err:
            resolve_device("cuda")
        assert err.value.code == "L182"


def test_model_card_lists_test_and_extra_split_metrics():
    from lolctl.nn.card import model_card
    from lolctl.nn.checkpoint_config import CheckpointConfig

    reg = {"kind": "regression", "r2": 0.8125, "kendall_tau": 0.5, "mae": 0.1, "n": 256}
    cls = {"kind": "multiclass", "accuracy": 0.9375, "auroc": 0.97, "ece": 0.02, "n": 256}
    config = {
        "name": "demo", "architecture": "glnet", "tasks": [{"name": "q", "kind": "regression"}],
        "input_spec": {"modules": [{"name": "layer.0.q", "n": 8, "m": 6}]},
        "metrics": {"train": {"q": reg}, "test": {"q": reg, "c": cls},
                    "test_r8": {"q": {**reg, "r2": 0.5, "n": 64}, "c": {**cls, "accuracy": 0.25, "n": 64}}},
    }
    card = model_card(CheckpointConfig.from_dict(config))
    assert "| q | r2 | 0.812 |" in card and "| c | accuracy | 0.938 |" in card
    assert "| test_r8 | 64 | 0.500 | 0.250 |" in card
    assert "| train |" not in card


def test_checkpoint_config_round_trips_the_shipped_config():
    """The typed config reads the shipped checkpoint's config.json and writes back the same document; a missing
    required field is a KeyError naming it (load_checkpoint turns it into L170)."""
    import json
    from pathlib import Path

    from lolctl.nn.checkpoint_config import CheckpointConfig

    raw = json.loads((Path(__file__).parent.parent / "models" / "minilm-wordnet-glnet" / "config.json").read_text())
    config = CheckpointConfig.from_dict(raw)
    assert config.architecture == "composite" and len(config.input_spec) == 12 and config.tasks[0].name == "quality"
    members = {m["tasks"][0]: m for m in config.model_config["members"]}  # one member per task
    assert len(members) == len(config.tasks)
    assert {m["architecture"] for m in members.values()} <= {"glnet", "mlp_dense"}
    assert all(m["model_config"]["factored"] for m in members.values() if m["architecture"] == "mlp_dense")
    assert config.extra["invariance"] == "GL(r) per module" and 0.01 <= config.probability_floor < 0.02
    assert config.to_dict() == raw
    with pytest.raises(KeyError, match="tasks"):
        CheckpointConfig.from_dict({k: v for k, v in raw.items() if k != "tasks"})


def test_repeated_tensors_are_stored_once_and_restored(tmp_path):
    """A composite whose GL-net members share their anchor adapters (the same seeded choice from the same training
    set) stores them once; the reloaded model has every tensor back and predicts exactly as before."""
    from lolctl.nn.batch import LoraBatch
    from lolctl.nn.checkpoint import deduplicated

    names = [t.name for t in TASKS]
    members = [{"architecture": "glnet", "model_config": {"hidden": 4, "anchors": 40}, "tasks": [n], "fallback": False}
               for n in names]
    torch.manual_seed(0)
    model = build_model("composite", {"members": members}, SPEC, TASKS)
    train = LoraBatch.from_adapters([adapter(r=2, seed=s) for s in range(12)], SPEC)
    model.prepare(train)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    kept, aliases = deduplicated(state)
    assert aliases and all(torch.equal(state[a], state[b]) for a, b in aliases.items())
    assert all(k.startswith("members.1.anchor_") for k in aliases) and set(kept) | set(aliases) == set(state)
    config = {"name": "dedup", "architecture": "composite", "model_config": model.config.to_dict(),
              "input_spec": SPEC.to_dict(), "base_model": BASE, "tasks": [t.to_dict() for t in TASKS],
              "target_normalisation": {"quality": {"mean": [0.0], "std": [1.0]}}, "ood": {"ranks": [2]}}
    folder = save_checkpoint(tmp_path / "dedup", model, config)
    whole = tmp_path / "whole.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(whole))
    saved = whole.stat().st_size - (folder / "model.safetensors").stat().st_size
    assert saved > 0.9 * sum(state[a].numel() * state[a].element_size() for a in aliases) > 0  # less the header
    loaded = load_checkpoint(str(folder), device="cpu")
    probe = LoraBatch.from_adapters([adapter(r=2, seed=99)], SPEC)
    model.eval()
    assert torch.equal(loaded.model(probe)["quality"], model(probe)["quality"])
    # the repeated buffers are one tensor after loading, so the members compute their anchor cosines once per batch
    first, second = loaded.model.models[0], loaded.model.models[1]
    assert second.anchor_U0 is first.anchor_U0 and second.anchor_V0 is first.anchor_V0
    calls = []
    original = type(first)._anchor_cosines
    type(first)._anchor_cosines = lambda self, batch: calls.append(1) or original(self, batch)
    try:
        fresh = LoraBatch.from_adapters([adapter(r=2, seed=99)], SPEC)
        out = loaded.model(fresh)
        assert len(calls) == 1 and torch.equal(out["quality"], model(probe)["quality"])
        first.anchor_U0.mul_(2.0)  # changed in place: the batch's cached cosines are stale and recomputed
        loaded.model(fresh)
        assert len(calls) == 2
    finally:
        type(first)._anchor_cosines = original


def test_large_tensors_are_stored_as_float16_exactly_as_measured(tmp_path, monkeypatch):
    """round_for_storage rounds large float32 tensors to float16 precision in memory; save_checkpoint then stores them
    in half the bytes, and the reloaded model predicts exactly what the rounded one did (training measures its card
    after rounding). Without the rounding nothing is stored lossy: the tensors stay float32."""
    from safetensors import safe_open

    from lolctl.nn import checkpoint
    from lolctl.nn.batch import LoraBatch

    monkeypatch.setattr(checkpoint, "HALF_MIN", 64)
    torch.manual_seed(0)
    model = build_model("glnet", {"hidden": 4, "anchors": 40}, SPEC, TASKS)
    model.prepare(LoraBatch.from_adapters([adapter(r=2, seed=s) for s in range(12)], SPEC))
    config = {"name": "half", "architecture": "glnet", "model_config": model.config.to_dict(),
              "input_spec": SPEC.to_dict(), "base_model": BASE, "tasks": [t.to_dict() for t in TASKS],
              "target_normalisation": {"quality": {"mean": [0.0], "std": [1.0]}}, "ood": {"ranks": [2]}}
    model.eval()

    def dtypes(folder):
        with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
            return {k: fh.get_slice(k).get_dtype() for k in fh.keys()}

    big = {k for k, v in model.state_dict().items() if v.dtype == torch.float32 and v.numel() >= 64}
    assert big and set(model.state_dict()) - big  # both kinds present
    as_trained = dtypes(save_checkpoint(tmp_path / "raw", model, config))
    assert all(as_trained[k] == "F32" for k in big)  # not rounded: kept exact
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint.round_for_storage(model)
    for k in big:  # rounded, by no more than float16's relative precision
        torch.testing.assert_close(model.state_dict()[k], before[k], rtol=2 ** -10, atol=1e-7)
    assert any(not torch.equal(model.state_dict()[k], before[k]) for k in big)
    folder = save_checkpoint(tmp_path / "half", model, config)
    stored = dtypes(folder)
    assert all(stored[k] == "F16" for k in big) and all(stored[k] != "F16" for k in set(stored) - big)
    assert (folder / "model.safetensors").stat().st_size < (tmp_path / "raw" / "model.safetensors").stat().st_size
    loaded = load_checkpoint(str(folder), device="cpu")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    probe = LoraBatch.from_adapters([adapter(r=2, seed=99)], SPEC)
    assert torch.equal(loaded.model(probe)["quality"], model(probe)["quality"])
    huge = torch.full((8, 8), 1e5)  # beyond float16's range: stays float32
    assert checkpoint.stored_dtype(huge).dtype == torch.float32
