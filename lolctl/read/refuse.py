"""Adapters that are not LoRA: recognised by name (config ``peft_type``) or by their tensor keys, and refused (L102).

These methods do not have a ΔW = B·A factorisation of the kind lolctl's models and statistics assume, so reading
them as LoRA would silently produce wrong numbers. The registry below maps what we recognise to a human name.
"""

from __future__ import annotations

import re
from pathlib import Path

from lolctl.errors import LolctlError
from lolctl.read.codes import clean

# peft_type (adapter_config.json) -> what it is
PEFT_TYPES: dict[str, str] = {
    "PROMPT_TUNING": "prompt tuning (learned virtual-token embeddings)",
    "MULTITASK_PROMPT_TUNING": "multitask prompt tuning",
    "P_TUNING": "p-tuning (prompt encoder)",
    "PREFIX_TUNING": "prefix tuning (learned key/value prefixes)",
    "ADAPTION_PROMPT": "adaption prompt (LLaMA-Adapter)",
    "CPT": "context-aware prompt tuning",
    "ADALORA": "AdaLoRA (SVD-form P·Λ·Q with a learned rank budget)",
    "IA3": "IA3 (learned rescaling vectors)",
    "LOHA": "LoHa (Hadamard product of two low-rank pairs)",
    "LOKR": "LoKr (Kronecker product)",
    "OFT": "OFT (orthogonal finetuning)",
    "BOFT": "BOFT (butterfly orthogonal finetuning)",
    "VERA": "VeRA (shared frozen random matrices with learned scaling vectors)",
    "PVERA": "PVeRA",
    "FOURIERFT": "FourierFT (spectral coefficients)",
    "HRA": "HRA (Householder reflections)",
    "VBLORA": "VB-LoRA (vector-bank LoRA)",
    "LN_TUNING": "LayerNorm tuning",
    "POLY": "Poly (mixture of LoRA skills)",
    "XLORA": "X-LoRA (mixture of LoRA experts)",
    "BONE": "Bone (block affine)",
    "RANDLORA": "RandLoRA",
    "SHIRA": "SHiRA (sparse high-rank adapter)",
    "C3A": "C3A (circular convolution adapter)",
    "ROAD": "RoAd (2D rotation adapter)",
    "MISS": "MiSS",
    "TRAINABLE_TOKENS": "trainable tokens",
}

# key fragment (regex, searched) -> what it is; checked before any LoRA key scheme
KEY_SIGNATURES: list[tuple[str, str]] = [
    (r"(^|\.)prompt_embeddings$|(^|\.)prompt_encoder\.", "prompt tuning / p-tuning (learned virtual tokens)"),
    (r"\.lora_E(\.|$)", "AdaLoRA (SVD-form P·Λ·Q with a learned rank budget)"),
    (r"\.hada_w[12]_[ab]$|\.hada_t[12]$", "LoHa (Hadamard product of two low-rank pairs)"),
    (r"\.lokr_w[12](_[ab])?$|\.lokr_t2$", "LoKr (Kronecker product)"),
    (r"\.vera_lambda_[bd]$|(^|\.)vera_[AB]$", "VeRA (shared random matrices with learned scaling vectors)"),
    (r"\.ia3_l(\.|$)", "IA3 (learned rescaling vectors)"),
    (r"\.boft_[RPs](\.|$)", "BOFT (butterfly orthogonal finetuning)"),
    (r"\.oft_[rR](\.|$)|\.oft_blocks$|\.oft_diag$", "OFT (orthogonal finetuning)"),
    (r"\.lora_mid(\.|$)", "LyCORIS LoCon with Tucker decomposition (lora_mid core: ΔW is not up·down)"),
    (r"\.diff(_b)?$", "a full weight difference (LyCORIS 'full'), not low-rank factors"),
    (r"\.(fourierft|vblora|hra|bone|randlora|shira|c3a|road|miss|lily|adamss|gralora|frod|beft)_",
     "a non-LoRA PEFT method (see the key's prefix)"),
]


def refuse_peft_type(where: Path | str, peft_type: str) -> LolctlError:
    what = PEFT_TYPES.get(peft_type.upper(), f"a {peft_type} adapter")
    return LolctlError(
        "L102", str(where), f"peft_type {peft_type!r} is {what}, not LoRA; lolctl reads LoRA adapters only",
        "use a LoRA adapter (peft_type LORA)",
    )


def signature(keys: list[str]) -> tuple[str, str] | None:
    """(key, description) of the first key that marks a non-LoRA method, or None."""
    for pattern, what in KEY_SIGNATURES:
        rx = re.compile(pattern)
        for k in keys:
            if rx.search(k):
                return k, what
    return None


def refuse_by_keys(where: Path | str, keys: list[str]) -> None:
    hit = signature(keys)
    if hit is not None:
        key, what = hit
        raise LolctlError(
            "L102", f"{where}:{clean(key)}", f"tensor keys mark {what}, not LoRA; lolctl reads LoRA adapters only",
            "use a LoRA adapter",
        )
