"""adapter_config.json as plain data: parsed with ``json`` only, bounded in size, fields type-checked by name.

Nothing named in the config (``auto_mapping``, ``base_model_class``, ``parent_library``...) is ever imported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.read.safetensors_io import regular_file_size

MAX_CONFIG_BYTES = 4 * 2**20


def load_config(path: Path) -> dict[str, Any]:
    size = regular_file_size(path, "L110")
    if size > MAX_CONFIG_BYTES:
        raise LolctlError("L112", str(path), f"{size} bytes is far too large for an adapter config", "check the file")
    try:
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise LolctlError("L110", str(path),
                          "nests too deeply to be an adapter config", "re-save the config") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, int digit limit
        reason = f"not valid JSON ({' '.join(str(exc).split())[:200]})"
        raise LolctlError("L110", str(path), reason, "repair or re-save adapter_config.json") from None
    if not isinstance(cfg, dict):
        raise LolctlError("L111", str(path),
                          f"expected a JSON object, found {type(cfg).__name__}", "re-save the config")
    return cfg


def _bad(path: Path, name: str, value: Any, expected: str) -> LolctlError:
    return LolctlError("L112", f"{path}:{name}", f"{value!r} is not {expected}", f"set {name} to {expected}")


def get_int(cfg: dict, path: Path, name: str, default: int | None) -> int | None:
    v = cfg.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise _bad(path, name, v, "a positive integer")
    return v


def get_number(cfg: dict, path: Path, name: str, default: float | None) -> float | None:
    v = cfg.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(path, name, v, "a finite number")
    return float(v)


def get_bool(cfg: dict, path: Path, name: str) -> bool:
    v = cfg.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(path, name, v, "true or false")
    return v


def get_str(cfg: dict, path: Path, name: str) -> str | None:
    v = cfg.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _bad(path, name, v, "a string")
    return v


def get_pattern(cfg: dict, path: Path, name: str, *, integer: bool) -> dict[str, Any]:
    v = cfg.get(name) or {}
    expected = "an object of string -> positive integer" if integer else "an object of string -> finite number"
    if not isinstance(v, dict):
        raise _bad(path, name, v, expected)
    out: dict[str, Any] = {}
    for k, x in v.items():
        number = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        ok = number and (isinstance(x, int) and x > 0 if integer else True)
        if not ok or len(k) > 512:
            raise LolctlError("L112", f"{path}:{name}[{k!r}]", f"{x!r} is not valid", f"{name} must be {expected}")
        out[k] = x
    return out


def get_targets(cfg: dict, path: Path) -> list[str] | str | None:
    v = cfg.get("target_modules")
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    raise _bad(path, "target_modules", v, "a list of names or a regex string")
