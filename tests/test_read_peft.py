"""PEFT adapters built by PEFT itself on tiny models: U Vᵀ must equal PEFT's own get_delta_weight (float64)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

from lolctl.read import read_adapter  # noqa: E402

TOL = 1e-12


def tiny_bert(with_head: bool = False):
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, num_labels=3)
    cls = transformers.BertForSequenceClassification if with_head else transformers.BertModel
    return cls(cfg)


def tiny_llama():
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg)


def tiny_qwen2():
    cfg = transformers.Qwen2Config(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return transformers.Qwen2ForCausalLM(cfg)


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    return transformers.GPT2LMHeadModel(cfg)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.conv2(self.conv1(x)).mean((2, 3)))


class EmbNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 12)
        self.proj = nn.Linear(12, 10)

    def forward(self, x):
        return self.proj(self.emb(x))


# name -> (model factory, LoraConfig kwargs, adapter name)
CASES = {
    "bert-query-value": (tiny_bert, dict(r=4, lora_alpha=8, target_modules=["query", "value"]), "default"),
    "llama-rslora": (tiny_llama,
                     dict(r=4, lora_alpha=6, use_rslora=True, target_modules=["q_proj", "v_proj", "o_proj"]),
                     "default"),
    "qwen2-patterns": (tiny_qwen2, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                                        rank_pattern={"layers.0.self_attn.q_proj": 2, "v_proj": 3},
                                        alpha_pattern={"o_proj": 5, r"layers\.1\.mlp\.down_proj": 11}), "default"),
    "gpt2-conv1d-fan-in-fan-out": (tiny_gpt2, dict(r=4, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"],
                                                   fan_in_fan_out=True), "default"),
    "conv2d": (ConvNet, dict(r=2, lora_alpha=3, target_modules=["conv1", "conv2", "fc"]), "default"),
    "embedding": (EmbNet, dict(r=3, lora_alpha=6, target_modules=["emb", "proj"]), "default"),
    "conv1d-conv3d": (lambda: nn.Sequential(nn.Conv1d(4, 6, 3), nn.Conv3d(3, 5, (2, 3, 3))),
                      dict(r=2, lora_alpha=3, target_modules=["0", "1"]), "default"),
    "dora-llama": (tiny_llama, dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "k_proj"]), "default"),
    "dora-conv": (ConvNet, dict(r=2, lora_alpha=4, use_dora=True, target_modules=["conv1", "fc"]), "default"),
    "named-subfolder": (tiny_bert, dict(r=2, lora_alpha=4, target_modules=["query"]), "mine"),
    "modules-to-save": (lambda: tiny_bert(with_head=True),
                        dict(r=2, lora_alpha=4, target_modules=["query", "value"], modules_to_save=["classifier"]),
                        "default"),
    "lora-bias": (tiny_bert, dict(r=2, lora_alpha=2, target_modules=["key"], lora_bias=True), "default"),
    # ranks above a side of the layer, as PEFT makes them: r = 8 on the 3-class head (B is 3 x 8), r = 64 on 16/32-wide
    "rank-above-head": (lambda: tiny_bert(with_head=True), dict(r=8, lora_alpha=16, target_modules=["classifier",
                                                                                                     "query"]),
                        "default"),
    "rank-above-layer": (tiny_llama, dict(r=64, lora_alpha=16, target_modules=["q_proj", "down_proj"]), "default"),
}


def build(tmp_path, case: str):
    factory, kwargs, adapter_name = CASES[case]
    torch.manual_seed(0)
    model = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(model, LoraConfig(init_lora_weights=False, **kwargs), adapter_name=adapter_name)
        for n, p in pm.named_parameters():  # lora_bias is initialised to zero even with init_lora_weights=False
            if "lora_B" in n and n.endswith("bias"):
                p.data.normal_()
        pm.save_pretrained(tmp_path)
    pm.double()
    return pm, adapter_name


def peft_deltas(pm, adapter_name: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in pm.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.scaling:
            out[name.removeprefix("base_model.model.")] = module.get_delta_weight(adapter_name).detach()
    return out


def as_matrix(delta: torch.Tensor, kind: str, fan_in_fan_out: bool) -> torch.Tensor:
    """PEFT's delta in lolctl's (out, in) orientation (documented in docs/formats.md)."""
    if kind == "conv":
        return delta.reshape(delta.shape[0], -1)
    if kind == "embedding" or fan_in_fan_out:
        return delta.T
    return delta


@pytest.mark.parametrize("case", list(CASES))
def test_factors_equal_peft_delta(tmp_path, case):
    pm, adapter_name = build(tmp_path, case)
    adapter = read_adapter(tmp_path, dtype=torch.float64)
    deltas = peft_deltas(pm, adapter_name)
    assert [m.name for m in adapter.modules] and {m.name for m in adapter.modules} == set(deltas)
    for m in adapter.modules:
        expected = as_matrix(deltas[m.name], m.kind, adapter.meta.fan_in_fan_out)
        assert m.U.dtype == torch.float64 and m.V.dtype == torch.float64
        assert expected.abs().max() > 0
        torch.testing.assert_close(m.delta(), expected, rtol=TOL, atol=TOL, msg=f"{case}: {m.name}")
        if m.kind == "conv":
            assert m.conv_shape == tuple(deltas[m.name].shape)
            torch.testing.assert_close(m.delta().reshape(m.conv_shape), deltas[m.name], rtol=TOL, atol=TOL)
    assert adapter.meta.format == "peft" and adapter.meta.peft_type == "LORA"


def test_module_order_is_natural(tmp_path):
    build(tmp_path, "bert-query-value")
    names = [m.name for m in read_adapter(tmp_path).modules]
    assert names == [f"encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")]


def test_rank_and_alpha_patterns_follow_peft(tmp_path):
    pm, _ = build(tmp_path, "qwen2-patterns")
    adapter = read_adapter(tmp_path, dtype=torch.float64)
    for name, module in pm.named_modules():
        if isinstance(module, LoraLayer):
            m = adapter.module(name.removeprefix("base_model.model."))
            assert m.rank == module.r["default"]
            assert m.scale == pytest.approx(module.scaling["default"], rel=1e-15)
    assert adapter.module("model.layers.0.self_attn.q_proj").rank == 2
    assert adapter.module("model.layers.1.self_attn.v_proj").rank == 3
    assert "alpha_pattern" in adapter.module("model.layers.1.mlp.down_proj").scale_source
    assert not [f for f in adapter.findings if f.code in ("H210", "H211")]


def test_rslora_scale(tmp_path):
    build(tmp_path, "llama-rslora")
    adapter = read_adapter(tmp_path)
    assert adapter.meta.use_rslora
    assert all(m.scale == pytest.approx(6 / 2.0) and "sqrt" in m.scale_source for m in adapter.modules)


@pytest.mark.parametrize("case", ["dora-llama", "dora-conv"])
def test_dora_magnitude_kept(tmp_path, case):
    pm, _ = build(tmp_path, case)
    adapter = read_adapter(tmp_path, dtype=torch.float64)
    assert adapter.meta.use_dora
    for name, module in pm.named_modules():
        if isinstance(module, LoraLayer):
            m = adapter.module(name.removeprefix("base_model.model."))
            want = module.lora_magnitude_vector["default"].weight.detach().reshape(-1)
            torch.testing.assert_close(m.extras["dora_magnitude"], want, rtol=0, atol=0)


def test_named_subfolder_found_and_selectable(tmp_path):
    build(tmp_path, "named-subfolder")
    assert (tmp_path / "mine" / "adapter_config.json").exists()
    a = read_adapter(tmp_path)
    b = read_adapter(tmp_path, name="mine")
    assert a.ranks == b.ranks == [2, 2]
    torch.save({"lr": torch.tensor(1e-3)}, tmp_path / "training_args.bin")  # not an adapter: not in the way
    assert read_adapter(tmp_path).ranks == [2, 2]


def test_modules_to_save_are_payload(tmp_path):
    build(tmp_path, "modules-to-save")
    adapter = read_adapter(tmp_path)
    keys = {p.key for p in adapter.payload}
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= keys
    assert all("classifier" not in m.name for m in adapter.modules)
    assert sum(p.nbytes for p in adapter.payload) == (3 * 16 + 3) * 4


def test_lora_bias_is_payload_with_finding(tmp_path):
    build(tmp_path, "lora-bias")
    adapter = read_adapter(tmp_path)
    assert any(p.key.endswith("lora_B.bias") for p in adapter.payload)
    assert "H217" in {f.code for f in adapter.findings}


def test_fan_in_fan_out_false_on_conv1d_is_flagged(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False))
        pm.peft_config["default"].fan_in_fan_out = False  # what some published adapters carry
        pm.save_pretrained(tmp_path)
    adapter = read_adapter(tmp_path)
    assert "H213" in {f.code for f in adapter.findings}


def test_meta_is_filled(tmp_path):
    build(tmp_path, "bert-query-value")
    meta = read_adapter(tmp_path).meta
    assert meta.config_rank == 4 and meta.config_alpha == 8.0
    assert sorted(meta.target_modules) == ["query", "value"]
    assert meta.dtypes == {"float32": 8}
    assert meta.nbytes == sum(2 * 4 * 16 * 4 for _ in range(4))
    assert meta.file_metadata.get("format") == "pt"
    assert meta.config["peft_type"] == "LORA"


@pytest.mark.parametrize("patterns", [
    {"q_proj": 1, "layers.0.self_attn.q_proj": 2},  # first key in config order wins, as in PEFT
    {"layers.0.self_attn.q_proj": 2, "q_proj": 1},
    {r"layers\.[01]\.self_attn\.v_proj": 3, "proj": 4},
    {"attn.q_proj": 5, "self_attn": 6, "elf_attn.q_proj": 7},  # whole dotted components only
    {"model.layers.1.mlp.down_proj": 8},
])
def test_pattern_key_is_peft_get_pattern_key(patterns):
    from peft.utils.other import get_pattern_key

    from lolctl.read.peft import pattern_key

    leaves = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
    names = [f"model.layers.{i}.{m}" for i in (0, 1) for m in leaves]
    for name in names:
        theirs = get_pattern_key(patterns.keys(), name)
        ours = pattern_key(patterns, name, "test")
        assert patterns.get(theirs) == (patterns[ours] if ours is not None else None), name


def test_base_modifying_init_is_flagged(tmp_path):
    build(tmp_path, "bert-query-value")
    cfg_path = tmp_path / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["init_lora_weights"] = "pissa_niter_4"
    cfg_path.write_text(json.dumps(cfg))
    assert "H220" in {f.code for f in read_adapter(tmp_path).findings}


def test_default_and_named_adapters_saved_together(tmp_path):
    from lolctl.read import find_adapters

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(tiny_bert(), LoraConfig(r=2, target_modules=["query"], init_lora_weights=False))
        pm.add_adapter("other", LoraConfig(r=3, target_modules=["value"], init_lora_weights=False))
        pm.save_pretrained(tmp_path)
    assert find_adapters(tmp_path) == [tmp_path, tmp_path / "other"]
    assert set(read_adapter(tmp_path).ranks) == {2}
    other = read_adapter(tmp_path, name="other")
    assert set(other.ranks) == {3} and all(m.name.endswith("value") for m in other.modules)


@pytest.mark.parametrize("case", ["rank-above-head", "rank-above-layer"])
def test_rank_above_the_layer_is_read_with_structurally_zero_singular_values(tmp_path, case):
    from lolctl.health import health

    pm, adapter_name = build(tmp_path, case)
    adapter = read_adapter(tmp_path, dtype=torch.float64)
    deltas = peft_deltas(pm, adapter_name)
    report = health(adapter)
    over = [m for m in adapter.modules if m.rank > min(m.shape)]
    assert over  # the case really has such modules
    for m, stats in zip(adapter.modules, report.modules):
        expected = deltas[m.name]
        S = torch.linalg.svdvals(expected)  # an independent dense SVD in float64
        k = min(m.rank, *m.shape)
        assert stats["singular_values"][:k] == pytest.approx(S[:k].tolist(), rel=1e-9, abs=1e-12)
        assert all(abs(x) < 1e-12 * S[0] for x in S[k:].tolist())  # ΔW has rank k at most
        padding = stats["singular_values"][k:]  # reported, as zeros up to rounding
        assert len(stats["singular_values"]) == m.rank and all(abs(x) < 1e-9 * S[0] for x in padding)
    (h204,) = [f for f in report.findings if f.code == "H204"]
    assert h204.severity == "info" and f"{len(over)}/{len(adapter.modules)} modules" in h204.message
    assert "H203" not in {f.code for f in report.findings}  # full use of min(n, m) directions is not a collapse
    assert all(f.severity != "error" for f in report.findings)
