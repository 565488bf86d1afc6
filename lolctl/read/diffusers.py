"""diffusers LoRA files (``pytorch_lora_weights.safetensors``), in their three key styles.

- PEFT style (diffusers ≥ 0.21): ``unet.<module>.lora_A.weight`` / ``.lora_B.weight`` (also ``text_encoder.``,
  ``transformer.``), no ``base_model.model.`` prefix. Newer files carry the LoraConfig per component as JSON in
  the header (``lora_adapter_metadata``, keys ``unet.r``, ``unet.lora_alpha``, ...).
- LoRACompatibleLinear style (0.17-0.20): ``unet.<module>.lora.down.weight`` / ``.lora.up.weight``; text encoder
  ``...q_proj.lora_linear_layer.down.weight``.
- attention-processor style (≤ 0.16): ``<block>.processor.to_q_lora.down.weight`` → module ``<block>.to_q``
  (``to_out_lora`` → ``to_out.0``).

down = A, up = B. Scale: ``lora_alpha/r`` from the header metadata, else a ``<module>.alpha`` tensor (converted
kohya files, "network alphas"), else 1 — diffusers' default, since its training scripts set lora_alpha = rank —
flagged H212.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, Finding
from lolctl.read import config as C
from lolctl.read.build import duplicate_error
from lolctl.read.codes import finding, grouped
from lolctl.read.kohya import scalar
from lolctl.read.peft import build_modules, group_lora_keys, pattern_key, payload_of
from lolctl.read.refuse import refuse_by_keys
from lolctl.read.store import TensorStore

OLD_KEY = re.compile(
    r"^(?P<mod>.+?)(?:\.lora|\.lora_linear_layer|_lora)\.(?P<role>down|up)\.weight$"
)
PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out|add_q_proj|add_k_proj|add_v_proj|to_add_out)$")


def looks_old_diffusers(keys: list[str]) -> bool:
    return any(OLD_KEY.match(k) for k in keys)


def _old_module_name(mod: str) -> str:
    m = PROCESSOR.search(mod)
    if m is None:
        return mod
    leaf = m.group(1)
    leaf = "to_out.0" if leaf == "to_out" else leaf
    return mod[: m.start()] + "." + leaf


def _group_old(store: TensorStore) -> tuple[dict[str, dict[str, str]], list[str]]:
    groups: dict[str, dict[str, str]] = {}
    rest = []
    for key in store.keys():
        m = OLD_KEY.match(key)
        if m is None:
            rest.append(key)
            continue
        name, role = _old_module_name(m.group("mod")), "A" if m.group("role") == "down" else "B"
        slot = groups.setdefault(name, {})
        if role in slot:
            raise duplicate_error(store.where(key), name, slot[role], key)
        slot[role] = key
    return groups, rest


@dataclass(frozen=True)
class HeaderConfig:
    """The LoraConfig fields diffusers stores per component (``unet``, ``text_encoder``, ``transformer``)."""

    r: int | None
    lora_alpha: float
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]


def _header_configs(store: TensorStore) -> tuple[dict[str, HeaderConfig], dict]:
    """component prefix -> validated fields, from the ``lora_adapter_metadata`` header entry (and the raw dict)."""
    where = Path(f"{store.path}:__metadata__.lora_adapter_metadata")
    raw = store.metadata.get("lora_adapter_metadata")
    if raw is None:
        return {}, {}
    try:
        flat = json.loads(raw)
    except (RecursionError, ValueError):
        raise LolctlError("L122", str(where), "not valid JSON", "re-save the file") from None
    if not isinstance(flat, dict):
        raise LolctlError("L122", str(where), "not a JSON object", "re-save the file")
    grouped_fields: dict[str, dict] = {}
    for k, v in flat.items():
        prefix, _, field = k.partition(".")
        if isinstance(v, dict) and not field:  # nested form {"unet": {...}}
            grouped_fields.setdefault(prefix, {}).update(v)
        elif field:
            grouped_fields.setdefault(prefix, {})[field] = v
    out = {}
    for prefix, cfg in grouped_fields.items():
        alpha = C.get_number(cfg, where, "lora_alpha", None)
        if alpha is not None:
            alpha_pattern = C.get_pattern(cfg, where, "alpha_pattern", integer=False)
            out[prefix] = HeaderConfig(
                r=C.get_int(cfg, where, "r", None),
                lora_alpha=alpha,
                use_rslora=C.get_bool(cfg, where, "use_rslora"),
                rank_pattern=C.get_pattern(cfg, where, "rank_pattern", integer=True),
                alpha_pattern={k: float(v) for k, v in alpha_pattern.items()},
            )
    return out, grouped_fields


def read_diffusers(store: TensorStore, dtype: torch.dtype) -> Adapter:
    refuse_by_keys(store.path, store.keys())
    groups, embeddings, rest = group_lora_keys(store)
    style = "diffusers"
    if not groups:
        groups, rest = _group_old(store)
        embeddings, style = set(), "diffusers-old"
    if not groups:
        raise LolctlError("L103", str(store.path), "no diffusers LoRA keys found", "check the file")
    alphas = {k[: -len(".alpha")]: k for k in rest if k.endswith(".alpha")}
    rest = [k for k in rest if k not in alphas.values()]
    configs, raw_configs = _header_configs(store)
    findings: list[Finding] = []
    defaulted: list[str] = []
    mismatched: list[str] = []

    def scale_for(name: str, r: int) -> tuple[float, str]:
        prefix, _, inner = name.partition(".")
        cfg = configs.get(prefix)
        if cfg is not None:
            where = f"{store.path}:lora_adapter_metadata"
            a_key = pattern_key(cfg.alpha_pattern, inner, where)
            r_key = pattern_key(cfg.rank_pattern, inner, where)
            want = cfg.rank_pattern[r_key] if r_key is not None else cfg.r
            if want is not None and want != r:
                mismatched.append(name)
            alpha = cfg.alpha_pattern[a_key] if a_key is not None else cfg.lora_alpha
            if cfg.use_rslora:
                return alpha / math.sqrt(r), "lora_alpha/sqrt(r) (rslora, header metadata)"
            return alpha / r, "lora_alpha/r (header metadata)"
        if name in alphas:
            return scalar(store, alphas[name]) / r, "network alpha/r"
        defaulted.append(name)
        return 1.0, "defaulted scale=1 (diffusers)"

    modules = build_modules(store, groups, embeddings, scale_for, dtype)
    findings += grouped("H210", mismatched, "the header metadata's rank differs from the tensors' rank")
    if defaulted:
        findings.append(finding("H212", f"{len(defaulted)} modules carry no alpha; scale 1 (lora_alpha = rank, "
                                "diffusers' training default) was assumed", module=defaulted[0]))
    meta = AdapterMeta(
        format=style,
        files=[str(store.path)],
        peft_type="LORA",
        target_modules=sorted({m.name.rsplit(".", 1)[-1] if not m.name.endswith(".0") else m.name.split(".")[-2]
                               for m in modules}),
        config_rank=next((c.r for c in configs.values() if c.r is not None), None),
        dtypes=store.dtype_counts(),
        nbytes=sum(store.nbytes.values()),
        file_metadata=dict(store.metadata),
        config=raw_configs,
    )
    return Adapter(source="", meta=meta, modules=modules, payload=payload_of(store, rest), findings=findings)
