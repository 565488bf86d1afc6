"""Adapters other people published (../shared/real-adapters, and copies of small ones in tests/data/real):
read what is a LoRA, flag what is odd, refuse the rest with a coded reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lolctl.errors import LolctlError
from lolctl.read import discover, find_adapters, read_adapter
from lolctl.read.safetensors_io import read_header

SHARED = (Path(__file__).resolve().parents[2] / "shared" / "real-adapters").resolve()  # may be a link
BUNDLED = Path(__file__).parent / "data" / "real"

# folder -> expected outcome: ("read", format, modules, ranks, findings that must be present, payload tensors)
#                             or ("error", code, trust_pickle)
EXPECTED: dict[str, tuple] = {
    "Arjun-254__Medical_Question_Answering_SLM__adapters": ("read", "mlx", 8, {8}, {"H215"}, 0),
    "BK7195__deltacompression-poc__adapter": ("read", "peft", 24, {1}, set(), 0),
    "BlackSpy369__story-generator__fine_tuned_model": ("read", "peft", 36, {8}, {"H213"}, 0),
    "DarianRodriguez__NegVerse__negator_PEFT_peft_outputs": ("error", "L102", False),
    "Hareshjethani__BERT-GPT2-Multitask-Finetuning": ("read", "peft", 24, {8}, set(), 2),
    "Hirvita6__LoRA-flower-diffusion__lora_weights": ("error", "L120", False),
    "JamesQFreeman__LoRA-ViT__root_at_300bee1": ("error", "L103", False),
    "MuzammelMokhtar__HIGH-PERFORMANCE-INFERENCE-ENGINE-USING-QWEN-2.5__lora_adapter": ("read", "peft", 48, {8},
                                                                                       set(), 0),
    "Rahul-8905__Email_Summarizer__fine_tuned_model": ("read", "peft", 72, {8}, set(), 0),
    "Tashu014__lora-imdb-distilbert": ("read", "peft", 12, {8}, set(), 4),
    "catundchat__stable-diffusion-v1.5-lora": ("read", "diffusers-old", 128, {4}, {"H212", "H216"}, 0),
    "erika0915__Speech-AI__models": ("read", "peft", 72, {8}, set(), 0),
    "rafidreezwan__brain-mri-sd-lora-training": ("read", "diffusers-old", 128, {4}, {"H212"}, 0),
    "yoonyerin__be-great": ("error", "L130", False),
}


def folders() -> list:
    params = []
    for name in EXPECTED:
        for base, mark in ((SHARED, "shared"), (BUNDLED, "bundled")):
            if base is BUNDLED and not (base / name).exists():
                continue
            params.append(pytest.param(base / name, EXPECTED[name], id=f"{mark}-{name[:40]}"))
    return params


def check(path: Path, expected: tuple, trust_pickle: bool = False) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    if expected[0] == "error":
        with pytest.raises(LolctlError) as e:
            read_adapter(path, trust_pickle=trust_pickle)
        assert e.value.code == expected[1], e.value.one_line()
        assert str(path) in e.value.where
        return
    _, fmt, n_modules, ranks, must_find, n_payload = expected
    a = read_adapter(path, trust_pickle=trust_pickle)
    assert a.meta.format == fmt
    assert len(a.modules) == n_modules and set(a.ranks) == ranks
    assert must_find <= {f.code for f in a.findings}, a.findings
    assert len(a.payload) == n_payload
    assert all(torch.isfinite(m.U).all() and torch.isfinite(m.V).all() for m in a.modules)


@pytest.mark.parametrize("path,expected", folders())
def test_real_adapter(path, expected):
    check(path, expected)


def test_every_shared_adapter_is_covered():
    if not SHARED.exists():
        pytest.skip("../shared/real-adapters is absent")
    assert {p.name for p in SHARED.iterdir() if p.is_dir()} == set(EXPECTED)


def test_pickle_adapter_reads_when_trusted():
    check(SHARED / "yoonyerin__be-great", ("read", "peft", 12, {8}, {"H219"}, 0), trust_pickle=True)


def test_custom_layout_reason_is_specific():
    path = SHARED / "JamesQFreeman__LoRA-ViT__root_at_300bee1"
    if not path.exists():
        pytest.skip("absent")
    with pytest.raises(LolctlError) as e:
        read_adapter(path / "feb27.safetensors")
    assert e.value.code == "L103" and "w_a_NNN" in e.value.reason and "no w_b_" in e.value.reason


def test_untrained_lora_b_blocks_are_visible():
    """erika0915's Whisper adapter has 24 of 72 modules whose lora_B was never trained (all zeros)."""
    path = SHARED / "erika0915__Speech-AI__models"
    if not path.exists():
        pytest.skip("absent")
    a = read_adapter(path)
    assert sum(bool((m.U == 0).all()) for m in a.modules) == 24


@pytest.mark.parametrize("base", [SHARED, BUNDLED], ids=["shared", "bundled"])
def test_float16_peft_factors_exact(base):
    path = base / "BK7195__deltacompression-poc__adapter"
    if not path.exists():
        pytest.skip("absent")
    a = read_adapter(path, dtype=torch.float64)
    m = a.modules[0]
    assert m.dtype == "float16" and m.scale == 32.0 and a.meta.base_model == "cyberagent/open-calm-1b"
    header = read_header(path / "adapter_model.safetensors", 2**30)
    from lolctl.read.safetensors_io import load_tensor

    A, B = (load_tensor(header, k).double() for k in m.keys[:2])
    torch.testing.assert_close(m.delta(), 32.0 * B @ A, rtol=1e-14, atol=0)


@pytest.mark.parametrize("base", [SHARED, BUNDLED], ids=["shared", "bundled"])
def test_mlx_orientation(base):
    path = base / "Arjun-254__Medical_Question_Answering_SLM__adapters"
    if not path.exists():
        pytest.skip("absent")
    a = read_adapter(path, dtype=torch.float64)
    v = a.module("model.layers.14.self_attn.v_proj")
    assert v.shape == (256, 2048)  # gemma-2b v_proj: 2048 in, 256 out
    assert v.scale == 10.0 * 16 / 8 and a.meta.base_model == "mlx-community/quantized-gemma-2b"


def test_find_adapters_on_shared():
    if not SHARED.exists():
        pytest.skip("absent")
    found, skipped = discover(SHARED)
    names = {p.name if p.is_dir() else p.parent.name for p in found}
    vit = [p.name for p in found if p.parent.name == "JamesQFreeman__LoRA-ViT__root_at_300bee1"]
    assert vit == ["feb27.safetensors", "lora.safetensors"]  # a custom layout: candidates, so a scan records L103
    assert len(found) == 15 and names == {p.name for p in SHARED.iterdir() if p.is_dir()}
    assert [(p.name, why.split(" of ")[0]) for p, why in skipped] == [("pytorch_lora_weights.bin", "pickle twin")]
    assert find_adapters(SHARED) == found


def _t5_small():  # google/flan-t5-small's attention shapes, tiny vocabulary and feed-forward
    import transformers

    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=32, d_model=512, d_kv=64, num_heads=6, d_ff=8, num_layers=8, num_decoder_layers=8))


def _gpt2():  # gpt2's shapes (12 layers, 768 wide, 3072 MLP), tiny vocabulary
    import transformers

    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=32, n_positions=16))


@pytest.mark.slow
@pytest.mark.parametrize("folder,factory,trust_pickle", [
    ("Rahul-8905__Email_Summarizer__fine_tuned_model", _t5_small, False),
    ("BlackSpy369__story-generator__fine_tuned_model", _gpt2, False),  # fan_in_fan_out false on Conv1D (H213)
    ("yoonyerin__be-great", _gpt2, True),  # pickle, fan_in_fan_out true
])
def test_real_adapter_matches_peft_loaded_delta(folder, factory, trust_pickle):
    """Load the published adapter with PEFT into a base of the right shapes; U Vᵀ must equal PEFT's ΔW."""
    import warnings

    peft = pytest.importorskip("peft")
    pytest.importorskip("transformers")
    from peft.tuners.lora import LoraLayer

    path = SHARED / folder
    if not path.exists():
        pytest.skip("absent")
    torch.manual_seed(0)
    try:  # skipping the random init of ~85M base weights saves most of the time; its home moved in transformers 5
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            from contextlib import nullcontext as no_init_weights

    with warnings.catch_warnings(), no_init_weights():  # base weights stay uninitialised: only ΔW is compared
        warnings.simplefilter("ignore")
        model = peft.PeftModel.from_pretrained(factory(), str(path))
    adapter = read_adapter(path, dtype=torch.float64, trust_pickle=trust_pickle)
    seen = 0
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            m = adapter.module(name.removeprefix("base_model.model."))
            layer.lora_A.double(), layer.lora_B.double()
            delta = layer.get_delta_weight("default")
            want = delta.T if layer.fan_in_fan_out else delta  # PEFT turns fan_in_fan_out on for Conv1D itself
            torch.testing.assert_close(m.delta(), want, rtol=1e-12, atol=1e-12)
            seen += 1
    assert seen == len(adapter.modules) > 0
