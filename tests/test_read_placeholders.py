"""Issue #13: text that stands where weights should be (Git LFS pointers, HTML error pages, text placeholders) is
L128 not-a-weights-file with a remedy — not a pickle that "can run code" (L130) and not an impossible header
length (L121); broken files beside a real one are reported as broken (H221), not as ignored alternates (H216)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from lolctl.errors import LolctlError
from lolctl.read import read_adapter

LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 147456\n"
HTML = b"<!DOCTYPE html>\n<html lang='en'><head><title>Hugging Face - 404</title></head><body>...</body></html>\n"
TEXT44 = b"Entry not found: this file is not ready yet\n"  # 44 bytes, like the placeholder in the issue


def _err(path, **kw) -> LolctlError:
    with pytest.raises(LolctlError) as err:
        read_adapter(path, **kw)
    return err.value


@pytest.mark.parametrize("name", ["adapter.safetensors", "adapter_model.bin", "pytorch_lora_weights.bin"])
@pytest.mark.parametrize("content, kind, remedy", [(LFS, "Git LFS pointer", "git lfs pull"),
                                                   (HTML, "HTML page", "download it again"),
                                                   (TEXT44, "44-byte text file", "download the real file")])
@pytest.mark.parametrize("trust", [False, True])
def test_text_instead_of_weights_is_l128(tmp_path, name, content, kind, remedy, trust):
    assert len(TEXT44) == 44
    path = tmp_path / name
    path.write_bytes(content)
    err = _err(path, trust_pickle=trust)
    assert err.code == "L128" and err.name == "not-a-weights-file", err.one_line()
    assert kind in err.reason and remedy in err.remedy
    assert "run code" not in err.one_line()


def test_real_pickles_are_still_refused_and_binary_safetensors_keep_their_codes(tmp_path):
    path = tmp_path / "adapter_model.bin"
    torch.save({"a": torch.ones(2)}, path)
    assert _err(path).code == "L130"
    proto0 = tmp_path / "p0.bin"
    proto0.write_bytes(pickle.dumps({"a": 1}, protocol=0))  # text, but a pickle: still refused as one
    assert _err(proto0).code == "L130"
    huge = tmp_path / "h.safetensors"
    huge.write_bytes((2**40).to_bytes(8, "little") + b"\x00" * 64)
    assert _err(huge).code == "L121"
    two = tmp_path / "two.safetensors"
    two.write_bytes(b"{}")
    assert _err(two).code == "L120"


def test_broken_placeholders_beside_a_real_file_are_reported_as_broken(tmp_path):
    save_file({"lora_unet_a.lora_down.weight": torch.ones(2, 8), "lora_unet_a.lora_up.weight": torch.ones(8, 2)},
              tmp_path / "real.safetensors")
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"\r\n")
    (tmp_path / "other.safetensors").write_bytes(b"{}")
    adapter = read_adapter(tmp_path)
    found = {(f.code, f.severity): f for f in adapter.findings}
    broken = [f for f in adapter.findings if f.code == "H221"]
    assert len(broken) == 2 and all(f.severity == "warning" for f in broken)
    assert all("L120" in f.message and "real.safetensors" in f.message for f in broken)
    assert ("H216", "info") not in found
    json.dumps([f.to_dict() for f in adapter.findings])


def test_files_beside_a_peft_adapter_are_reported_not_dropped(tmp_path):
    """A PEFT folder read through its config: a placeholder .safetensors or .bin beside adapter_model.safetensors is
    broken (H221); another weights file is an unread alternate (H216); trainer state is not weights (no finding)."""
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2,
                                                              "target_modules": ["q"]}))
    tensors = {"base_model.model.q.lora_A.weight": torch.ones(2, 8),
               "base_model.model.q.lora_B.weight": torch.ones(8, 2)}
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    save_file(tensors, tmp_path / "copy.safetensors")
    (tmp_path / "extra.safetensors").write_bytes(b"\r\n")
    (tmp_path / "pytorch_model.bin").write_bytes(TEXT44)
    (tmp_path / "training_args.bin").write_bytes(pickle.dumps({"lr": 1e-4}))
    findings = {(f.code, f.message.split()[0]) for f in read_adapter(tmp_path).findings}
    assert {("H221", "extra.safetensors"), ("H221", "pytorch_model.bin"), ("H216", "copy.safetensors")} <= findings
    assert not any(name == "training_args.bin" for _, name in findings)
