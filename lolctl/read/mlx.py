"""MLX (mlx-lm / mlx-examples) LoRA: ``adapters.safetensors`` + ``adapter_config.json`` with ``lora_parameters``.

Keys ``<module>.lora_a`` (in, r) and ``<module>.lora_b`` (r, out); the layer computes y = x Wᵀ + s · (x a) b, so in
PEFT's convention A = aᵀ and B = bᵀ. DoRA adapters add ``<module>.m`` (out).

Scale: mlx-lm versions whose ``lora_parameters`` carry ``alpha`` compute s = scale · alpha / rank; later versions
dropped ``alpha`` and use s = scale. lolctl follows the config it is given and says which rule it used (H215).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, Finding
from lolctl.read import config as C
from lolctl.read.build import check_pair, duplicate_error, make_module, natural_key
from lolctl.read.codes import finding, grouped
from lolctl.read.peft import payload_of
from lolctl.read.refuse import refuse_by_keys
from lolctl.read.store import TensorStore

SUFFIXES = {".lora_a": "a", ".lora_b": "b", ".m": "m"}


def looks_mlx(keys: list[str]) -> bool:
    return any(k.endswith(".lora_a") for k in keys) and any(k.endswith(".lora_b") for k in keys)


def is_mlx_config(cfg: dict) -> bool:
    return "lora_parameters" in cfg or "fine_tune_type" in cfg or "lora_layers" in cfg


def read_mlx(weights: Path, config_path: Path, store: TensorStore, dtype: torch.dtype) -> Adapter:
    cfg = C.load_config(config_path)
    refuse_by_keys(weights, store.keys())
    kind = cfg.get("fine_tune_type", "lora")
    if kind not in ("lora", "dora"):
        raise LolctlError("L102", f"{config_path}:fine_tune_type", f"{kind!r} is not a LoRA finetune", "use LoRA")
    params = cfg.get("lora_parameters") or {}
    if not isinstance(params, dict):
        raise LolctlError("L112", f"{config_path}:lora_parameters", "must be an object", "re-save the config")
    where = f"{config_path}:lora_parameters"
    rank = C.get_int(params, Path(where), "rank", None)
    alpha = C.get_number(params, Path(where), "alpha", None)
    base_scale = C.get_number(params, Path(where), "scale", None)
    findings: list[Finding] = []
    if base_scale is None:
        base_scale = 20.0  # mlx-lm's default
        findings.append(finding("H218", "lora_parameters has no scale; mlx-lm's default 20.0 is used"))

    groups: dict[str, dict[str, str]] = {}
    rest: list[str] = []
    for key in store.keys():
        suffix = next((s for s in SUFFIXES if key.endswith(s)), None)
        if suffix is None or (suffix == ".m" and not any(k == key[:-2] + ".lora_a" for k in store.shapes)):
            rest.append(key)
            continue
        name, role = key[: -len(suffix)], SUFFIXES[suffix]
        slot = groups.setdefault(name, {})
        if role in slot:
            raise duplicate_error(store.where(key), name, slot[role], key)
        slot[role] = key

    modules = []
    mismatched: list[str] = []
    for name in sorted(groups, key=natural_key):
        slot = groups[name]
        a_shape = tuple(reversed(store.shapes[slot["a"]])) if "a" in slot else None
        b_shape = tuple(reversed(store.shapes[slot["b"]])) if "b" in slot else None
        shape = check_pair(store.where(slot.get("a") or slot["b"]), a_shape, b_shape)
        if len(a_shape or ()) != 2:
            raise LolctlError("L145", store.where(slot["a"]), "MLX factors must be matrices", "re-save the adapter")
        r = shape.rank
        if rank is not None and rank != r:
            mismatched.append(name)
        if alpha is not None:
            s, src = base_scale * alpha / r, "mlx scale*alpha/r"
        else:
            s, src = base_scale, "mlx scale"
        extras = {"dora_magnitude": store.get(slot["m"]).reshape(-1)} if "m" in slot else {}
        if extras and extras["dora_magnitude"].numel() != shape.n:
            raise LolctlError("L140", store.where(slot["m"]), f"DoRA magnitude has "
                              f"{extras['dora_magnitude'].numel()} entries, expected {shape.n}", "re-save the adapter")
        A, B = store.get(slot["a"]).T, store.get(slot["b"]).T
        keys = tuple(slot[k] for k in ("a", "b", "m") if k in slot)
        modules.append(make_module(name, shape, A, B, scale=s, scale_source=src, dtype=dtype, keys=keys,
                                   extras=extras))
    findings += grouped("H210", mismatched, f"lora_parameters.rank = {rank} differs from the tensors' rank",
                        remedy="re-save the config with the adapter")
    if alpha is not None:
        findings.append(finding("H215", f"lora_parameters has both scale={base_scale:g} and alpha={alpha:g}: "
                                "read as s = scale·alpha/rank (mlx-lm releases that had alpha); later releases "
                                "ignore alpha and use s = scale", remedy="check the mlx-lm version that trained it"))
    meta = AdapterMeta(
        format="mlx",
        files=[str(config_path), str(weights)],
        base_model=C.get_str(cfg, config_path, "model"),
        peft_type="LORA" if kind == "lora" else "DORA",
        target_modules=sorted({m.name.rsplit(".", 1)[-1] for m in modules}),
        config_rank=rank,
        config_alpha=alpha,
        use_dora=bool(cfg.get("use_dora")) or kind == "dora",
        dtypes=store.dtype_counts(),
        nbytes=sum(store.nbytes.values()),
        file_metadata=dict(store.metadata),
        config=cfg,
    )
    return Adapter(source="", meta=meta, modules=modules, payload=payload_of(store, rest), findings=findings)
