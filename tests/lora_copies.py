"""Copies of a tiny PEFT adapter (tests/hubserver.peft_files) with the same update ΔW but other bytes."""

from __future__ import annotations

import torch
from safetensors.torch import load, save

from lolctl.group import GL


def refactored(files: dict[str, bytes], seed: int = 0, *, dtype: torch.dtype | None = None,
               cond: float = 4.0) -> dict[str, bytes]:
    """Every module re-factored by its own random g ∈ GL(r): B ↦ B g, A ↦ g⁻¹ A (so ΔW = s B A is unchanged),
    computed in float64 and stored in ``dtype`` (default: the original dtype)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = load(files["adapter_model.safetensors"])
    out = {}
    for key, A in tensors.items():
        if ".lora_A." not in key:
            continue
        B = tensors[key.replace(".lora_A.", ".lora_B.")]
        g = GL(A.shape[0]).random(generator=gen, cond=cond)
        keep = dtype or A.dtype
        out[key] = (torch.linalg.inv(g) @ A.double()).to(keep).contiguous()
        out[key.replace(".lora_A.", ".lora_B.")] = (B.double() @ g).to(keep).contiguous()
    return {**files, "adapter_model.safetensors": save(out)}


def cast(files: dict[str, bytes], dtype: torch.dtype) -> dict[str, bytes]:
    """The same factors stored in another dtype (e.g. a float16 copy)."""
    tensors = load(files["adapter_model.safetensors"])
    return {**files, "adapter_model.safetensors": save({k: v.to(dtype) for k, v in tensors.items()})}
