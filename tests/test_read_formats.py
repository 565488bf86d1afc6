"""kohya, diffusers and MLX files written from their documented key schemes; non-LoRA PEFT methods refused."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from lolctl.errors import LolctlError
from lolctl.read import find_adapters, read_adapter

TOL = 1e-12


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float32)


def codes(adapter) -> set[str]:
    return {f.code for f in adapter.findings}


# --- kohya ------------------------------------------------------------------------------------------------------


def test_kohya_linear_conv_alpha_and_default(tmp_path):
    torch.manual_seed(0)
    t = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": rand(4, 32),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": rand(24, 4),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(2.0),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": rand(2, 8, 3, 3),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": rand(16, 2, 1, 1),
        "lora_unet_down_blocks_0_resnets_0_conv1.alpha": torch.tensor(1.0),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": rand(4, 12),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": rand(12, 4),  # no alpha
    }
    path = tmp_path / "style.safetensors"
    save_file(t, path, metadata={"ss_network_dim": "4", "ss_network_alpha": "2.0", "ss_sd_model_name": "sdxl.ckpt"})
    a = read_adapter(path, dtype=torch.float64)
    assert a.meta.format == "kohya" and len(a.modules) == 3
    q = a.module("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q")
    want = (2.0 / 4) * t[q.keys[1]].double() @ t[q.keys[0]].double()
    torch.testing.assert_close(q.delta(), want, rtol=TOL, atol=TOL)
    conv = a.module("lora_unet_down_blocks_0_resnets_0_conv1")
    assert conv.kind == "conv" and conv.conv_shape == (16, 8, 3, 3)
    down, up = t[conv.keys[0]].double(), t[conv.keys[1]].double()
    want = torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * 0.5
    torch.testing.assert_close(conv.delta().reshape(conv.conv_shape), want, rtol=TOL, atol=TOL)
    te = a.module("lora_te1_text_model_encoder_layers_0_self_attn_q_proj")
    assert te.scale == 1.0 and "defaulted" in te.scale_source
    assert "H212" in codes(a)
    assert a.meta.base_model == "sdxl.ckpt" and a.meta.config_rank == 4
    assert a.meta.file_metadata["ss_network_dim"] == "4"


def test_kohya_lycoris_loha_refused(tmp_path):
    path = tmp_path / "loha.safetensors"
    save_file({"lora_unet_x.hada_w1_a": rand(4, 2), "lora_unet_x.hada_w1_b": rand(2, 4),
               "lora_unet_x.hada_w2_a": rand(4, 2), "lora_unet_x.hada_w2_b": rand(2, 4)}, path)
    with pytest.raises(LolctlError) as e:
        read_adapter(path)
    assert e.value.code == "L102" and "LoHa" in e.value.reason


# --- diffusers --------------------------------------------------------------------------------------------------


def test_diffusers_peft_style_with_header_metadata(tmp_path):
    torch.manual_seed(1)
    mod = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    t = {f"{mod}.lora_A.weight": rand(4, 20), f"{mod}.lora_B.weight": rand(20, 4),
         "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_A.weight": rand(4, 8),
         "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_B.weight": rand(8, 4)}
    meta = {"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attn1.to_q": 2}}
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(t, path, metadata={"lora_adapter_metadata": json.dumps(meta), "format": "pt"})
    a = read_adapter(path, dtype=torch.float64)
    assert a.meta.format == "diffusers"
    q = a.module(mod)
    assert q.scale == 2 / 4 and "header" in q.scale_source
    want = 0.5 * t[f"{mod}.lora_B.weight"].double() @ t[f"{mod}.lora_A.weight"].double()
    torch.testing.assert_close(q.delta(), want, rtol=TOL, atol=TOL)
    te = a.module("text_encoder.text_model.encoder.layers.0.self_attn.k_proj")
    assert te.scale == 1.0 and "H212" in codes(a)


def test_diffusers_old_styles_and_names(tmp_path):
    torch.manual_seed(2)
    blk = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    t = {f"{blk}.processor.to_q_lora.down.weight": rand(4, 16), f"{blk}.processor.to_q_lora.up.weight": rand(16, 4),
         f"{blk}.processor.to_out_lora.down.weight": rand(4, 16),
         f"{blk}.processor.to_out_lora.up.weight": rand(16, 4)}
    path = tmp_path / "a.safetensors"
    save_file(t, path)
    a = read_adapter(path, dtype=torch.float64)
    assert a.meta.format == "diffusers-old"
    assert [m.name for m in a.modules] == [f"{blk}.to_out.0", f"{blk}.to_q"]
    q = a.module(f"{blk}.to_q")
    torch.testing.assert_close(q.delta(), t[q.keys[1]].double() @ t[q.keys[0]].double(), rtol=TOL, atol=TOL)

    t2 = {f"unet.{blk}.to_k.lora.down.weight": rand(2, 16), f"unet.{blk}.to_k.lora.up.weight": rand(16, 2),
          f"unet.{blk}.to_k.alpha": torch.tensor(1.0)}
    path2 = tmp_path / "b.safetensors"
    save_file(t2, path2)
    k = read_adapter(path2).module(f"unet.{blk}.to_k")
    assert k.scale == 0.5 and k.scale_source == "network alpha/r"


# --- MLX --------------------------------------------------------------------------------------------------------


def write_mlx(folder, params: dict, dora: bool = False):
    torch.manual_seed(3)
    t = {}
    for layer in (0, 1):
        name = f"model.layers.{layer}.self_attn.q_proj"
        t[f"{name}.lora_a"], t[f"{name}.lora_b"] = rand(16, 4), rand(4, 12)
        if dora:
            t[f"{name}.m"] = rand(12)
    folder.mkdir()
    save_file(t, folder / "adapters.safetensors")
    cfg = {"model": "mlx-community/tiny", "lora_layers": 2, "lora_parameters": params,
           "fine_tune_type": "dora" if dora else "lora"}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return t


@pytest.mark.parametrize("params,scale,finding", [
    ({"rank": 4, "scale": 20.0, "dropout": 0.0}, 20.0, None),
    ({"rank": 4, "alpha": 16, "scale": 10.0, "dropout": 0.0}, 40.0, "H215"),
])
def test_mlx(tmp_path, params, scale, finding):
    t = write_mlx(tmp_path / "ad", params)
    a = read_adapter(tmp_path / "ad", dtype=torch.float64)
    assert a.meta.format == "mlx" and a.meta.base_model == "mlx-community/tiny" and len(a.modules) == 2
    m = a.module("model.layers.1.self_attn.q_proj")
    # mlx: y = x W^T + s (x a) b, so ΔW (out, in) = s (a b)^T
    want = scale * (t[f"{m.name}.lora_a"].double() @ t[f"{m.name}.lora_b"].double()).T
    torch.testing.assert_close(m.delta(), want, rtol=TOL, atol=TOL)
    assert (finding in codes(a)) if finding else not codes(a)


def test_mlx_dora_magnitude(tmp_path):
    t = write_mlx(tmp_path / "ad", {"rank": 4, "scale": 2.0}, dora=True)
    a = read_adapter(tmp_path / "ad")
    m = a.module("model.layers.0.self_attn.q_proj")
    torch.testing.assert_close(m.extras["dora_magnitude"], t[f"{m.name}.m"])
    assert a.meta.use_dora and not a.payload


# --- non-LoRA PEFT methods --------------------------------------------------------------------------------------


def _nonlora_configs():
    peft = pytest.importorskip("peft")
    return {
        "VERA": peft.VeraConfig(r=4, target_modules=["query", "value"]),
        "IA3": peft.IA3Config(target_modules=["query", "value"], feedforward_modules=[]),
        "LOHA": peft.LoHaConfig(r=2, target_modules=["query"]),
        "LOKR": peft.LoKrConfig(r=2, target_modules=["query"]),
        "OFT": peft.OFTConfig(r=0, oft_block_size=4, target_modules=["query"]),
        "BOFT": peft.BOFTConfig(boft_block_size=4, target_modules=["query"]),
        "ADALORA": peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=["query"]),
        "PROMPT_TUNING": peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4),
        "PREFIX_TUNING": peft.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4),
        "P_TUNING": peft.PromptEncoderConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4,
                                             encoder_hidden_size=8),
    }


@pytest.mark.parametrize("peft_type", ["VERA", "IA3", "LOHA", "LOKR", "OFT", "BOFT", "ADALORA", "PROMPT_TUNING",
                                       "PREFIX_TUNING", "P_TUNING"])
def test_non_lora_peft_types_refused_by_name_and_by_keys(tmp_path, peft_type):
    transformers = pytest.importorskip("transformers")
    from peft import get_peft_model

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(transformers.BertModel(cfg), _nonlora_configs()[peft_type])
        pm.save_pretrained(tmp_path)
    with pytest.raises(LolctlError) as e:
        read_adapter(tmp_path)
    assert e.value.code == "L102" and peft_type in e.value.reason
    (tmp_path / "adapter_config.json").unlink()  # the weights alone must not pass as LoRA either
    with pytest.raises(LolctlError) as e:
        read_adapter(tmp_path / "adapter_model.safetensors")
    assert e.value.code == "L102"


# --- find_adapters ----------------------------------------------------------------------------------------------


def test_find_adapters(tmp_path):
    write_mlx(tmp_path / "mlx", {"rank": 4, "scale": 1.0})
    (tmp_path / "deep" / "er").mkdir(parents=True)
    save_file({"lora_unet_a.lora_down.weight": rand(2, 4), "lora_unet_a.lora_up.weight": rand(4, 2)},
              tmp_path / "deep" / "er" / "k.safetensors")
    save_file({"not_lora": rand(3)}, tmp_path / "deep" / "other.safetensors")
    (tmp_path / "deep" / "notes.txt").write_text("x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    save_file({"lora_unet_b.lora_down.weight": rand(2, 4), "lora_unet_b.lora_up.weight": rand(4, 2)},
              outside / "evil.safetensors")
    (tmp_path / "link.safetensors").symlink_to(outside / "evil.safetensors")
    (tmp_path / "linkdir").symlink_to(outside, target_is_directory=True)
    (tmp_path / "noconfig").mkdir()
    save_file({"base_model.model.q.lora_A.weight": rand(2, 4)}, tmp_path / "noconfig" / "adapter_model.safetensors")
    found = find_adapters(tmp_path)
    assert found == [tmp_path / "deep" / "er" / "k.safetensors", tmp_path / "mlx", tmp_path / "noconfig"]
    with pytest.raises(LolctlError) as e:
        read_adapter(tmp_path / "noconfig")
    assert e.value.code == "L113"


@pytest.mark.parametrize("meta,code", [
    ("{bad", "L122"),
    ("[1]", "L122"),
    (json.dumps({"unet.lora_alpha": "x"}), "L112"),
    (json.dumps({"unet.lora_alpha": 4, "unet.alpha_pattern": {"q": "big"}}), "L112"),
])
def test_diffusers_bad_header_metadata(tmp_path, meta, code):
    t = {"unet.a.to_q.lora_A.weight": rand(2, 8), "unet.a.to_q.lora_B.weight": rand(8, 2)}
    save_file(t, tmp_path / "w.safetensors", metadata={"lora_adapter_metadata": meta})
    with pytest.raises(LolctlError) as e:
        read_adapter(tmp_path / "w.safetensors")
    assert e.value.code == code


def test_kohya_odd_metadata_and_dora_scale(tmp_path):
    t = {"lora_unet_a.lora_down.weight": rand(2, 8), "lora_unet_a.lora_up.weight": rand(6, 2),
         "lora_unet_a.dora_scale": rand(1, 8)}
    save_file(t, tmp_path / "k.safetensors", metadata={"ss_network_dim": "inf", "ss_network_alpha": "None"})
    a = read_adapter(tmp_path / "k.safetensors")
    assert a.meta.config_rank is None and a.meta.config_alpha is None
    assert set(a.modules[0].extras) == {"dora_scale"}  # (1, in): not an output magnitude
