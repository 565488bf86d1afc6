"""JSON and CSV encoding of records and documents (no terminal, no Rich): strict JSON, flattened CSV rows."""

from __future__ import annotations

import json
import math
from typing import Any


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON. NaN and ±Inf (e.g. the scale of an adapter whose alpha is NaN) are written as null."""
    try:
        return json.dumps(obj, default=_json_default, indent=indent, allow_nan=False, ensure_ascii=False)
    except ValueError:
        return json.dumps(_finite(obj), default=lambda o: _finite(_json_default(o)), indent=indent,
                          allow_nan=False, ensure_ascii=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys, lists -> JSON text, booleans -> ``true`` / ``false`` as in JSON (CSV rows)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = dumps(value)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = value
    return out
