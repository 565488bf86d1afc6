"""Byte-level writers for the hostile corpus: safetensors files built by hand (so they can be wrong on purpose),
PEFT folders, kohya files, and pickles that would run code if anything ever unpickled them unrestricted.

Nothing here imports lolctl: the corpus must not depend on the code it attacks.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

# a tiny two-module Llama-like adapter: module -> (n out, m in)
MODULES = {"model.layers.0.self_attn.q_proj": (16, 16), "model.layers.0.self_attn.v_proj": (16, 16)}
RANK = 4
ALPHA = 8
PEFT_PREFIX = "base_model.model."


def f32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def randn(shape: tuple[int, ...] | list[int], seed: int) -> bytes:
    rng = random.Random(seed)
    count = 1
    for d in shape:
        count *= d
    return f32([rng.gauss(0.0, 0.5) for _ in range(count)])


Tensor = tuple[str, list[int], bytes]  # (safetensors dtype, shape, raw little-endian bytes)


def st_header(tensors: dict[str, Tensor], metadata: dict[str, Any] | None = None) -> tuple[dict[str, Any], bytes]:
    """The header dict and the data buffer of a correct safetensors file holding ``tensors`` in order."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = bytearray()
    for key, (dtype, shape, raw) in tensors.items():
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, bytes(data)


def st_pack(header: dict[str, Any] | list[Any] | bytes | str, data: bytes, *, length: int | None = None) -> bytes:
    """Serialize a header (a JSON value, or raw bytes/str used verbatim) and data; ``length`` overrides the prefix."""
    if isinstance(header, bytes):
        raw = header
    elif isinstance(header, str):
        raw = header.encode("utf-8")
    else:
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes with spaces
    prefix = struct.pack("<Q", len(raw) if length is None else length)
    return prefix + raw + data


def st_file(tensors: dict[str, Tensor], metadata: dict[str, Any] | None = None) -> bytes:
    header, data = st_header(tensors, metadata)
    return st_pack(header, data)


def lora_tensors(
    modules: dict[str, tuple[int, int]] | None = None,
    rank: int = RANK,
    *,
    style: str = "peft",
    seed: int = 0,
    alpha: float | None = ALPHA,
) -> dict[str, Tensor]:
    """Tensors of a correct adapter. style: "peft" (lora_A/lora_B) or "kohya" (lora_down/lora_up/alpha)."""
    out: dict[str, Tensor] = {}
    for i, (name, (n, m)) in enumerate((modules or MODULES).items()):
        if style == "peft":
            key = PEFT_PREFIX + name
            out[f"{key}.lora_A.weight"] = ("F32", [rank, m], randn((rank, m), seed + 2 * i))
            out[f"{key}.lora_B.weight"] = ("F32", [n, rank], randn((n, rank), seed + 2 * i + 1))
        else:
            key = "lora_unet_" + name.replace(".", "_")
            out[f"{key}.lora_down.weight"] = ("F32", [rank, m], randn((rank, m), seed + 2 * i))
            out[f"{key}.lora_up.weight"] = ("F32", [n, rank], randn((n, rank), seed + 2 * i + 1))
            if alpha is not None:
                out[f"{key}.alpha"] = ("F32", [], f32([alpha]))
    return out


def peft_config(rank: int = RANK, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "hostile/tiny-llama",
        "revision": None,
        "r": rank,
        "lora_alpha": ALPHA,
        "lora_dropout": 0.0,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in MODULES}),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    cfg.update(overrides)
    return cfg


def write_peft(
    folder: Path,
    weights: bytes | None,
    config: dict[str, Any] | list[Any] | str | bytes | None,
    weights_name: str = "adapter_model.safetensors",
) -> Path:
    """A PEFT adapter folder; ``config``: a dict/list (as JSON), raw str/bytes (verbatim) or None (absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        (folder / weights_name).write_bytes(weights)
    if config is not None:
        if isinstance(config, (dict, list)):
            config = json.dumps(config, indent=2)
        (folder / "adapter_config.json").write_bytes(config.encode() if isinstance(config, str) else config)
    return folder


def sparse_adapter(folder: Path, nbytes: int) -> int:
    """A PEFT folder whose weights file really is ``nbytes`` of tensor data long, as a hole (no disk blocks written),
    with a header describing it exactly. Refuses (OSError) on a filesystem that does not keep sparse files."""
    n = 1024
    cols = nbytes // (8 * n)
    size = 4 * n * cols
    header = {
        f"{PEFT_PREFIX}model.q_proj.lora_A.weight": {"dtype": "F32", "shape": [n, cols], "data_offsets": [0, size]},
        f"{PEFT_PREFIX}model.q_proj.lora_B.weight": {"dtype": "F32", "shape": [cols, n],
                                                    "data_offsets": [size, 2 * size]},
    }
    write_peft(folder, st_pack(header, b""), peft_config(rank=n, target_modules=["q_proj"]))
    path = folder / "adapter_model.safetensors"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + 2 * size)
    if path.stat().st_blocks * 512 > 2**20:
        path.unlink()
        raise OSError(f"{folder}: this filesystem does not keep sparse files; refusing to write {nbytes} bytes")
    return 2 * size


# --- pickles ---------------------------------------------------------------------------------------------------------


class _Exec:
    """Pickles as ``exec(code)``: whoever unpickles it without restriction runs ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (self.code,))


def touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('executed')"


def raw_exec_pickle(marker: Path) -> bytes:
    """A plain (non-zip) pickle whose loading runs code that creates ``marker``."""
    import pickle

    return pickle.dumps({"base_model.model.x.lora_A.weight": _Exec(touch_code(marker))}, protocol=2)


def global_import_pickle(module: str) -> bytes:
    """A pickle that needs ``import module`` to load (GLOBAL opcode), then calls ``module.boom()``."""
    return f"c{module}\nboom\n".encode() + b")R."  # GLOBAL module.boom, EMPTY_TUPLE, REDUCE, STOP


def torch_save_bytes(obj: Any) -> bytes:
    """torch.save (zip format) into bytes."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def torch_state_dict(tensors: dict[str, Tensor]) -> dict[str, Any]:
    import torch

    out = {}
    for key, (dtype, shape, raw) in tensors.items():
        assert dtype == "F32"
        out[key] = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(shape).clone()
    return out


def marker_module_source(marker_dir: Path, name: str) -> str:
    """Python source of a module that leaves ``marker_dir/imported-<name>`` when imported (or boom() is called)."""
    marker = marker_dir / f"imported-{name}"
    return (
        '"""Planted by the hostile corpus: importing this module is a bug in lolctl."""\n'
        f"open({str(marker)!r}, 'w').write('imported')\n\n\n"
        "def boom():\n"
        f"    open({str(marker)!r} + '-called', 'w').write('called')\n\n\n"
        "class Model:\n    pass\n"
    )
