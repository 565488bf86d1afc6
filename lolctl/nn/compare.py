"""The comparison table: metrics of trained checkpoints, grouped by model (architecture + non-default config), as
mean ± std over seeds. Reads only each checkpoint's config.json (the metrics `lolctl train` stored there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from lolctl.errors import LolctlError
from lolctl.nn.registry import model_class

KEY_METRICS = {
    "regression": ("r2", "kendall_tau", "mae"),
    "multilabel": ("accuracy", "auroc", "macro_f1", "exact_set", "ece"),
    "multiclass": ("accuracy", "auroc", "ece"),
}
AUTO_FIELDS = ("rank", "max_rank", "anchor_rank")  # set from the zoo when training: not part of a model's identity


def variant(config: dict[str, Any]) -> str:
    """``architecture`` plus the model config fields that differ from their defaults, e.g. ``glnet hidden=64``; a
    composite (``--model auto``) is named by its distinct member models, e.g. ``composite [glnet anchors=64]``."""
    arch = config.get("architecture", "?")
    if arch == "composite":
        members = config.get("model_config", {}).get("members", [])
        labels = dict.fromkeys(m.get("label") or m.get("architecture", "?") for m in members)
        return f"composite [{' | '.join(labels)}]"
    try:
        defaults = model_class(arch).config_class()
    except LolctlError:
        return arch
    changed = [
        f"{f.name}={config.get('model_config', {}).get(f.name)}"
        for f in fields(defaults)
        if f.name not in AUTO_FIELDS
        and config.get("model_config", {}).get(f.name, getattr(defaults, f.name)) != getattr(defaults, f.name)
    ]
    return " ".join([arch, *changed])


def collect(folders: Sequence[str | Path], split: str = "test") -> list[dict[str, Any]]:
    """One record per checkpoint: model variant, seed, and the key metrics of ``split`` as ``task.metric``."""
    records = []
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):  # a folder named twice counts once
        path = Path(folder) / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LolctlError(
                "L170",
                str(path),
                f"cannot read the checkpoint config ({err})",
                "pass checkpoint folders written by lolctl train",
            ) from err
        metrics = config.get("metrics", {}).get(split)
        if metrics is None:
            raise LolctlError(
                "L175",
                str(path),
                f"no metrics for split {split!r}",
                f"splits stored: {', '.join(config.get('metrics', {})) or 'none'}",
            )
        records.append(record(config, metrics, folder))
    return records


def record(config: dict[str, Any], metrics: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """One comparison row: the checkpoint's model variant and seed, and the key ``metrics`` as ``task.metric``."""
    row: dict[str, Any] = {
        "model": variant(config),
        "seed": config.get("train_config", {}).get("seed"),
        "checkpoint": str(folder),
        "zoo": zoo_identity(config),
    }
    for task, m in metrics.items():
        row.setdefault("n", m.get("n"))
        for key in KEY_METRICS.get(m.get("kind", ""), ()):
            row[f"{task}.{key}"] = m.get(key)
        if "interval90" in m:
            row[f"{task}.coverage90"] = m["interval90"].get("coverage")
    return row


def zoo_identity(config: dict[str, Any]) -> str:
    """Which data a checkpoint's metrics were measured on: its zoo recipe (or source folder) and a digest of its test
    adapters' ids. Checkpoints with different identities were tested on different adapters."""
    import hashlib

    data = config.get("training_data") or {}
    name = ((data.get("recipe") or {}).get("recipe") or {}).get("name") or data.get("source") or "unknown zoo"
    ids = data.get("test_ids") or []
    return f"{name} (test set {hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()[:8]})" if ids else name


def mixed_zoos_warning(records: list[dict[str, Any]]) -> str | None:
    """Why the checkpoints were measured on different zoos (their metrics do not compare), else None."""
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.get("zoo", "unknown zoo")] = counts.get(rec.get("zoo", "unknown zoo"), 0) + 1
    if len(counts) < 2:
        return None
    listed = "; ".join(f"{zoo}: {n}" for zoo, n in counts.items())
    return f"these checkpoints were measured on different zoos ({listed}): their metrics do not compare"


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per model, keeping the order in which models first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(rec["model"], []).append(rec)
    columns = [k for rec in records for k in rec if "." in k]
    columns = list(dict.fromkeys(columns))
    rows = []
    for model, recs in groups.items():
        row: dict[str, Any] = {"model": model, "seeds": len(recs)}
        for col in columns:
            values = np.array([r[col] for r in recs if isinstance(r.get(col), (int, float))], dtype=np.float64)
            finite = values[np.isfinite(values)]
            row[col] = ({"mean": float(finite.mean()), "std": float(finite.std()) if finite.size > 1 else None}
                        if finite.size else None)  # one seed has no spread to show
        rows.append(row)
    return rows


def cell(value: dict[str, Any] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value['mean']:.3f}" if value.get("std") is None else f"{value['mean']:.3f} ± {value['std']:.3f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row if "." in k))
    lines = ["| model | seeds | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for row in rows:
        lines.append(f"| {row['model']} | {row['seeds']} | " + " | ".join(cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"
