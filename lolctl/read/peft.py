"""PEFT LoRA folders: ``adapter_config.json`` + ``adapter_model.safetensors`` (or a trusted ``adapter_model.bin``).

Keys: ``base_model.model.<module>.lora_A.weight`` (r, in), ``.lora_B.weight`` (out, r), conv A (r, in, k, k) and
B (out, r, 1, 1), embedding ``.lora_embedding_A`` (r, vocab) and ``.lora_embedding_B`` (dim, r), DoRA
``.lora_magnitude_vector`` (out) — an adapter name between part and ``.weight`` is tolerated. Every other tensor
(modules_to_save heads, biases, trainable tokens) is non-LoRA payload.

Scale, as PEFT's ``LoraLayer.update_layer``: s = alpha / r, or alpha / sqrt(r) with ``use_rslora``; r and alpha come
from ``rank_pattern`` / ``alpha_pattern`` when a pattern key matches the module name by PEFT's own rule
(``re.match(rf"(.*\\.)?({key})$", name)``, first key in config order wins, see ``peft.utils.other.get_pattern_key``).
The rank in s is the tensors' rank (what the adapter was trained with); a config that disagrees is flagged (H210).

Orientation: U Vᵀ = s·B·A is ΔW as (out, in). PEFT's ``get_delta_weight`` returns its transpose for
``fan_in_fan_out`` layers (GPT-2 Conv1D stores its weight as (in, out)) and for embeddings (weight is (vocab, dim));
conv ΔW is ``(U Vᵀ).reshape(conv_shape)``. DoRA: U Vᵀ is the low-rank direction update only; the magnitude vector
is kept in ``extras["dora_magnitude"]``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, Finding, ModuleFactors, Payload
from lolctl.read import config as C
from lolctl.read.build import check_pair, duplicate_error, make_module, natural_key
from lolctl.read.codes import finding, grouped
from lolctl.read.refuse import refuse_by_keys, refuse_peft_type
from lolctl.read.store import TensorStore

WRAPPER_PREFIX = "base_model.model."
PARTS = {"lora_A": "A", "lora_B": "B", "lora_embedding_A": "A", "lora_embedding_B": "B", "lora_magnitude_vector": "M"}
BASE_MODIFYING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")  # init_lora_weights values that rewrite W
# LoraConfig fields that turn on a variant whose ΔW is not s·B·A (checked against peft 0.21's lora/variants.py)
UNREAD_VARIANTS = {
    "target_parameters": "LoRA on raw parameters (e.g. stacked MoE experts) interleaves one update per expert",
    "use_qalora": "QALoRA pools the inputs in groups before lora_A",
    "use_bdlora": "BD-LoRA makes one factor block-diagonal",
    "kasa_config": "KaSA scales B·A by a learned diagonal and truncates the base weight",
}
CONV1D_LEAVES = {"c_attn", "c_proj", "c_fc", "q_attn"}  # GPT-2 family transformers.Conv1D layers


def split_key(key: str) -> tuple[str, str, bool, bool] | None:
    """``key`` -> (module, role A/B/M, is_embedding, is_bias) for LoRA keys, None for anything else."""
    tokens = key.split(".")
    for i in range(len(tokens) - 1, 0, -1):
        if tokens[i] in PARTS:
            rest = tokens[i + 1 :]
            if len(rest) > 2 or (len(rest) == 2 and rest[1] not in ("weight", "bias")):
                return None
            module = ".".join(tokens[:i]).removeprefix(WRAPPER_PREFIX)
            is_bias = bool(rest) and rest[-1] == "bias"
            return module, PARTS[tokens[i]], tokens[i].startswith("lora_embedding"), is_bias
    return None


def pattern_key(patterns: dict[str, Any], name: str, where: str) -> str | None:
    """PEFT's get_pattern_key: the first pattern key (config order) matching the end of ``name``."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", name):
                return key
        except re.error as exc:
            reason = f"not a valid regular expression ({exc})"
            raise LolctlError("L112", f"{where}[{key!r}]", reason, "fix the pattern key") from None
    return None


def group_lora_keys(store: TensorStore) -> tuple[dict[str, dict[str, str]], set[str], list[str]]:
    """module -> {role: key}, the embedding modules, and the non-LoRA keys (payload)."""
    groups: dict[str, dict[str, str]] = {}
    embeddings: set[str] = set()
    payload: list[str] = []
    for key in store.keys():
        parsed = split_key(key)
        if parsed is None:
            payload.append(key)
            continue
        module, role, is_emb, is_bias = parsed
        if is_bias:
            payload.append(key)
            continue
        slot = groups.setdefault(module, {})
        if role in slot:
            raise duplicate_error(store.where(key), module, slot[role], key)
        slot[role] = key
        if is_emb:
            embeddings.add(module)
    return groups, embeddings, payload


def build_modules(
    store: TensorStore,
    groups: dict[str, dict[str, str]],
    embeddings: set[str],
    scale_for,  # (name, tensor_rank) -> (scale, source)
    dtype: torch.dtype,
) -> list[ModuleFactors]:
    modules = []
    for name in sorted(groups, key=natural_key):
        slot = groups[name]
        where = store.where(slot.get("A") or slot.get("B") or slot["M"])
        a_shape = store.shapes[slot["A"]] if "A" in slot else None
        b_shape = store.shapes[slot["B"]] if "B" in slot else None
        shape = check_pair(where, a_shape, b_shape, embedding=name in embeddings)
        extras = {}
        if "M" in slot:
            mag = store.get(slot["M"]).reshape(-1)
            if mag.numel() != shape.n:
                raise LolctlError(
                    "L140", store.where(slot["M"]), f"DoRA magnitude has {mag.numel()} entries, expected {shape.n}",
                    "the magnitude vector belongs to another module",
                )
            extras["dora_magnitude"] = mag
        scale, source = scale_for(name, shape.rank)
        A, B = store.get(slot["A"]), store.get(slot["B"])
        keys = tuple(slot[r] for r in ("A", "B", "M") if r in slot)
        modules.append(make_module(name, shape, A, B, scale=scale, scale_source=source, dtype=dtype, keys=keys,
                                   extras=extras))
    return modules


def payload_of(store: TensorStore, keys: list[str]) -> list[Payload]:
    return [Payload(k, store.shapes[k], store.dtypes[k], store.nbytes[k]) for k in sorted(keys, key=natural_key)]


def _target_findings(targets: list[str] | str | None, names: list[str]) -> list[Finding]:
    if not isinstance(targets, list):
        return []  # a regex string or "all-linear": PEFT resolves it against the base model, which we do not have
    out = []
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            out.append(finding("H214", f"target_modules entry {t!r} matches no module in the weights",
                               remedy="the config and the weights disagree; re-save them together"))
    strays = [n for n in names if not any(n == t or n.endswith("." + t) for t in targets)]
    if strays:
        out.append(finding("H214", f"{len(strays)} modules are not named by target_modules, e.g. {strays[0]!r}",
                           module=strays[0], remedy="the config and the weights disagree; re-save them together"))
    return out


def read_peft(weights: Path, config_path: Path, store: TensorStore, dtype: torch.dtype) -> Adapter:
    cfg = C.load_config(config_path)
    peft_type = C.get_str(cfg, config_path, "peft_type")
    findings: list[Finding] = []
    if peft_type is None:
        findings.append(finding("H218", "adapter_config.json has no peft_type; read as LoRA from its tensor keys"))
    elif peft_type.upper() != "LORA":
        raise refuse_peft_type(config_path, peft_type)
    refuse_by_keys(weights, store.keys())
    for field, what in UNREAD_VARIANTS.items():
        if cfg.get(field) not in (None, False, [], ""):  # an empty config object ({}) enables a variant in PEFT
            raise LolctlError("L102", f"{config_path}:{field}", f"{what}, so ΔW is not s·B·A; lolctl does not read it",
                              "use a plain LoRA adapter")

    r = C.get_int(cfg, config_path, "r", 8)
    alpha = C.get_number(cfg, config_path, "lora_alpha", None)
    if alpha is None:
        alpha = 8.0  # PEFT's LoraConfig default
        findings.append(finding("H218", "adapter_config.json has no lora_alpha; PEFT's default 8 is used"))
    rslora = C.get_bool(cfg, config_path, "use_rslora")
    rank_pattern = C.get_pattern(cfg, config_path, "rank_pattern", integer=True)
    alpha_pattern = C.get_pattern(cfg, config_path, "alpha_pattern", integer=False)
    targets = C.get_targets(cfg, config_path)
    fan_in_fan_out = C.get_bool(cfg, config_path, "fan_in_fan_out")

    groups, embeddings, rest = group_lora_keys(store)
    if not groups:
        raise LolctlError("L103", str(weights), "no lora_A / lora_B tensors in a LoRA adapter's weights",
                          "the file holds no LoRA factors; check it was saved from a LoRA model")

    mismatched: list[tuple[str, str]] = []

    def scale_for(name: str, tensor_rank: int) -> tuple[float, str]:
        r_key = pattern_key(rank_pattern, name, f"{config_path}:rank_pattern")
        a_key = pattern_key(alpha_pattern, name, f"{config_path}:alpha_pattern")
        want_r = rank_pattern[r_key] if r_key is not None else r
        a = float(alpha_pattern[a_key]) if a_key is not None else alpha
        if want_r != tensor_rank:
            origin = f"rank_pattern[{r_key!r}]" if r_key is not None else "r"
            mismatched.append((name, f"config {origin} = {want_r} but the tensors have rank {tensor_rank}"))
        a_src = f"alpha_pattern[{a_key!r}]" if a_key is not None else "lora_alpha"
        if rslora:
            return a / math.sqrt(tensor_rank), f"{a_src}/sqrt(r) (rslora)"
        return a / tensor_rank, f"{a_src}/r"

    modules = build_modules(store, groups, embeddings, scale_for, dtype)
    names = [m.name for m in modules]
    if mismatched:
        findings += grouped("H210", [n for n, _ in mismatched], f"{mismatched[0][1]}; the scale uses the tensor rank",
                            remedy="re-save the config with the adapter")
    for label, patterns in (("rank_pattern", rank_pattern), ("alpha_pattern", alpha_pattern)):
        for key in patterns:
            if not any(pattern_key({key: 0}, n, label) is not None for n in names):
                findings.append(finding("H211", f"{label} key {key!r} matches no module of this adapter",
                                        remedy="check the pattern against the module names (PEFT suffix match)"))
    findings.extend(_target_findings(targets, names))
    conv1d_like = [n for n in names if n.rsplit(".", 1)[-1] in CONV1D_LEAVES]
    if conv1d_like and not fan_in_fan_out:
        findings.append(finding(
            "H213", f"fan_in_fan_out is false but {len(conv1d_like)} modules look like GPT-2 Conv1D layers "
            f"(e.g. {conv1d_like[0]!r}); PEFT corrects this when loading, a hand-written merge would transpose ΔW",
            module=conv1d_like[0], remedy="set fan_in_fan_out: true for Conv1D targets",
        ))
    elif fan_in_fan_out and not conv1d_like:
        findings.append(finding("H213", "fan_in_fan_out is true but no module looks like a GPT-2 Conv1D layer",
                                remedy="fan_in_fan_out is for layers storing weights as (in, out)"))
    init = cfg.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_MODIFYING_INITS):
        findings.append(finding(
            "H220", f"init_lora_weights={init!r} changes the base weights when the adapter is created; unless it was "
            "converted when saved, U Vᵀ is the update relative to that modified base, not to the original model",
            remedy="save with path_initial_model_for_weight_conversion to get a plain LoRA of the original base"))
    if cfg.get("loftq_config"):
        findings.append(finding("H220", "LoftQ: the adapter pairs with a quantised, modified base; U Vᵀ is relative "
                                "to that base"))
    biases = [k for k in rest if (p := split_key(k)) is not None and p[3]]
    if biases:
        findings.append(finding("H217", f"{len(biases)} lora_B bias tensors (lora_bias=true) are reported as payload; "
                                "ΔW = U Vᵀ does not include them"))
    meta = AdapterMeta(
        format="peft",
        files=[str(config_path), str(weights)],
        base_model=C.get_str(cfg, config_path, "base_model_name_or_path"),
        base_revision=C.get_str(cfg, config_path, "revision"),
        peft_type=peft_type or "LORA",
        target_modules=targets,
        config_rank=r,
        config_alpha=alpha,
        use_rslora=rslora,
        use_dora=C.get_bool(cfg, config_path, "use_dora"),
        fan_in_fan_out=fan_in_fan_out,
        rank_pattern=dict(rank_pattern),
        alpha_pattern={k: float(v) for k, v in alpha_pattern.items()},
        dtypes=store.dtype_counts(),
        nbytes=sum(store.nbytes.values()),
        file_metadata=dict(store.metadata),
        config=cfg,
    )
    return Adapter(source="", meta=meta, modules=modules, payload=payload_of(store, rest), findings=findings)
