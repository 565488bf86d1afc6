"""Summaries of a built zoo (what `lolctl zoo info` prints)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.zoo.format import MANIFEST, built_rows, read_manifest


def load_zoo(zoo: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(manifest, label rows of the LoRAs built so far) of a built or packed zoo."""
    zoo = Path(zoo)
    if not (zoo / MANIFEST).exists():
        raise LolctlError("L176", str(zoo), "no manifest.json", "point at a folder made by `lolctl zoo build`")
    manifest = read_manifest(zoo / MANIFEST)
    return manifest, built_rows(zoo, manifest)


def _stats(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"min": None, "max": None, "mean": None, "std": None}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"min": min(values), "max": max(values), "mean": mean, "std": std}


def summarise(zoo: Path) -> dict[str, Any]:
    manifest, rows = load_zoo(zoo)
    packed = manifest.get("packed")
    planned_splits = packed["splits"] if packed else manifest.get("splits", {})  # a packed zoo: only its splits
    splits: dict[str, dict[str, int]] = {}
    for row in rows:
        planned = planned_splits.get(row["split"], 0)
        entry = splits.setdefault(row["split"], {"built": 0, "planned": planned})
        entry["built"] += 1
    for name, planned in planned_splits.items():
        splits.setdefault(name, {"built": 0, "planned": planned})
    targets = []
    for task in manifest["tasks"]:
        for col in task["columns"]:
            cells = [r[col] for r in rows if r.get(col, "") != ""]
            if task["kind"] == "regression":
                targets.append({"task": task["name"], "column": col, "kind": task["kind"],
                                **_stats([float(c) for c in cells])})
            elif task["kind"] == "multilabel":
                rate = sum(int(c) for c in cells) / len(cells) if cells else None
                targets.append({"task": task["name"], "column": col, "kind": task["kind"], "rate": rate})
            else:
                counts = {label: sum(c == label for c in cells) for label in task["labels"]}
                targets.append({"task": task["name"], "column": col, "kind": task["kind"], "counts": counts})
    status = f"packed from {packed.get('from')}" if packed else manifest.get("status")
    return {"zoo": str(zoo), "status": status, "recipe": manifest["recipe"],
            "base_model": manifest.get("base_model"), "versions": manifest.get("versions"),
            "facts": manifest.get("facts", {}), "splits": splits, "targets": targets, "loras": len(rows)}


def render_table(summary: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    head = Table(title=escape(f"zoo {summary['zoo']} — recipe {summary['recipe'].get('name')} ({summary['status']})"))
    for col in ("split", "built", "planned"):
        head.add_column(col)
    for name, entry in summary["splits"].items():
        head.add_row(name, str(entry["built"]), str(entry["planned"]))
    tab = Table(title="targets")
    for col in ("task", "column", "kind", "summary"):
        tab.add_column(col)
    for t in summary["targets"]:
        if t["kind"] != "multiclass" and t.get("min", t.get("rate")) is None:
            text = "no LoRAs yet"
        elif t["kind"] == "regression":
            text = f"min {t['min']:.3f}  mean {t['mean']:.3f}  max {t['max']:.3f}  std {t['std']:.3f}"
        elif t["kind"] == "multilabel":
            text = f"positive rate {t['rate']:.2f}"
        else:
            text = "  ".join(f"{k}: {v}" for k, v in t["counts"].items())
        tab.add_row(escape(t["task"]), escape(t["column"]), t["kind"], escape(text))
    recipe = Table(title="recipe")
    recipe.add_column("setting")
    recipe.add_column("value")
    for key, value in summary["recipe"].items():
        recipe.add_row(escape(key), escape(json.dumps(value)))
    base = summary.get("base_model") or {}
    recipe.add_row("base model hash", str(base.get("hash")))
    return Group(head, tab, recipe)
