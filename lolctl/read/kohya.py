"""kohya-ss / sd-scripts single-file LoRAs.

Keys: ``lora_unet_<flat_module>.lora_down.weight`` (= A: (r, in) or conv (r, in, k, k)),
``.lora_up.weight`` (= B: (out, r) or (out, r, 1, 1)) and a scalar ``.alpha``; text encoders use ``lora_te_``
(SD1/2), ``lora_te1_`` / ``lora_te2_`` (SDXL), ``lora_te3_``; DiT-style trainers use ``lora_transformer_``.
Scale s = alpha / r; a missing ``.alpha`` means alpha = r (s = 1), flagged H212. Training metadata lives in the
safetensors header under ``ss_*`` keys. Module names are kept as written (kohya flattens dots into underscores,
which cannot be undone reliably). LyCORIS variants (LoHa ``hada_*``, LoKr ``lokr_*``, OFT) are refused (L102).
"""

from __future__ import annotations

import math

import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, Finding
from lolctl.read.build import check_pair, duplicate_error, make_module, natural_key
from lolctl.read.codes import finding, grouped
from lolctl.read.peft import payload_of
from lolctl.read.refuse import refuse_by_keys
from lolctl.read.store import TensorStore

PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "lora_transformer_")
ROLES = {".lora_down.weight": "A", ".lora_up.weight": "B", ".alpha": "alpha", ".dora_scale": "dora"}


def looks_kohya(keys: list[str]) -> bool:
    return any(k.startswith(PREFIXES) for k in keys)


def scalar(store: TensorStore, key: str) -> float:
    if store.nbytes[key] > 64 or len(store.shapes[key]) > 1:
        raise LolctlError("L145", store.where(key), f"alpha must be a scalar, found shape {list(store.shapes[key])}",
                          "re-save the file")
    t = store.get(key).reshape(-1)
    if t.numel() != 1:
        raise LolctlError("L145", store.where(key), "alpha must hold exactly one value", "re-save the file")
    return float(t[0])


def _float_meta(meta: dict[str, str], key: str) -> float | None:
    """A number from the ``ss_*`` metadata, or None when absent, not a number or not finite ("None", "inf")."""
    try:
        value = float(meta[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _int_meta(meta: dict[str, str], key: str) -> int | None:
    value = _float_meta(meta, key)
    return int(value) if value is not None and value.is_integer() and value > 0 else None


def read_kohya(store: TensorStore, dtype: torch.dtype) -> Adapter:
    refuse_by_keys(store.path, store.keys())
    groups: dict[str, dict[str, str]] = {}
    rest: list[str] = []
    for key in store.keys():
        suffix = next((s for s in ROLES if key.endswith(s)), None)
        if suffix is None or not key.startswith(PREFIXES):
            rest.append(key)
            continue
        name = key[: -len(suffix)]
        slot = groups.setdefault(name, {})
        if ROLES[suffix] in slot:
            raise duplicate_error(store.where(key), name, slot[ROLES[suffix]], key)
        slot[ROLES[suffix]] = key
    meta_in = store.metadata
    net_dim = _int_meta(meta_in, "ss_network_dim")
    findings: list[Finding] = []
    defaulted: list[str] = []
    mismatched: list[str] = []
    modules = []
    for name in sorted(groups, key=natural_key):
        slot = groups[name]
        if "A" not in slot and "B" not in slot:  # a stray alpha: report it, it is not a factor
            rest.extend(slot.values())
            continue
        a_shape = store.shapes[slot["A"]] if "A" in slot else None
        b_shape = store.shapes[slot["B"]] if "B" in slot else None
        shape = check_pair(store.where(slot.get("A") or slot["B"]), a_shape, b_shape)
        r = shape.rank
        if "alpha" in slot:
            alpha, source = scalar(store, slot["alpha"]), "kohya alpha/r"
        else:
            alpha, source = float(r), "defaulted alpha=r (kohya)"
            defaulted.append(name)
        if shape.kind == "linear" and net_dim is not None and net_dim != r:
            mismatched.append(name)
        extras = {}
        if "dora" in slot:  # LyCORIS stores (out, 1) by default, (1, in) with wd_on_output=False
            scale_vec = store.get(slot["dora"]).reshape(-1)
            extras["dora_magnitude" if scale_vec.numel() == shape.n else "dora_scale"] = scale_vec
        keys = tuple(slot[k] for k in ("A", "B", "alpha", "dora") if k in slot)
        modules.append(make_module(name, shape, store.get(slot["A"]), store.get(slot["B"]), scale=alpha / r,
                                   scale_source=source, dtype=dtype, keys=keys, extras=extras))
    if not modules:
        raise LolctlError("L103", str(store.path),
                          "kohya-style keys but no lora_down / lora_up pairs", "check the file")
    findings += grouped("H210", mismatched, f"ss_network_dim = {net_dim} differs from the tensors' rank",
                        remedy="the metadata and the weights disagree")
    if defaulted:
        findings.append(finding("H212", f"{len(defaulted)} modules have no .alpha tensor; alpha = rank (scale 1) "
                                "was assumed, as kohya does", module=defaulted[0]))
    meta = AdapterMeta(
        format="kohya",
        files=[str(store.path)],
        base_model=meta_in.get("ss_sd_model_name") or meta_in.get("modelspec.architecture"),
        peft_type="LORA",
        config_rank=net_dim,
        config_alpha=_float_meta(meta_in, "ss_network_alpha"),
        use_dora=any("dora_magnitude" in m.extras for m in modules),
        dtypes=store.dtype_counts(),
        nbytes=sum(store.nbytes.values()),
        file_metadata=dict(meta_in),
    )
    return Adapter(source="", meta=meta, modules=modules, payload=payload_of(store, rest), findings=findings)
