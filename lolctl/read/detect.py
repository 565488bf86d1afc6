"""Which key scheme a weights file follows, from its tensor keys alone (no tensor data is read)."""

from __future__ import annotations

import re

from lolctl.read.diffusers import looks_old_diffusers
from lolctl.read.kohya import looks_kohya
from lolctl.read.mlx import looks_mlx
from lolctl.read.peft import WRAPPER_PREFIX, split_key
from lolctl.read.refuse import signature


def classify(keys: list[str]) -> str | None:
    """"peft", "mlx", "kohya", "diffusers", "diffusers-old", "refused: <method>", or None (unknown)."""
    hit = signature(keys)
    if hit is not None:
        return f"refused: {hit[1]}"
    if looks_kohya(keys):
        return "kohya"
    lora = [k for k in keys if (p := split_key(k)) is not None and p[1] in "AB"]
    if lora:
        return "peft" if any(k.startswith(WRAPPER_PREFIX) for k in lora) else "diffusers"
    if looks_mlx(keys):
        return "mlx"
    if looks_old_diffusers(keys):
        return "diffusers-old"
    return None


def custom_layout_hint(keys: list[str]) -> str | None:
    """A specific reason for layouts we recognise but cannot map to modules."""
    a = [k for k in keys if re.fullmatch(r"w_a_\d+", k)]
    b = [k for k in keys if re.fullmatch(r"w_b_\d+", k)]
    if a or b:
        missing = " and it has no w_b_* (B) tensors at all" if a and not b else ""
        return (f"custom LoRA-ViT layout (w_a_NNN / w_b_NNN keys): tensors are numbered, not named, so they cannot "
                f"be mapped to modules{missing}")
    return None
