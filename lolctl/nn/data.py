"""Zoos and label files: which adapters, which targets, which split; reading their factors (with a cache).

A zoo is a folder with ``manifest.json`` (``"tasks"``: name, kind, columns, labels) and ``labels.csv`` (columns
``id, path, split, rank`` + targets; ``path`` is relative to the zoo). A bare labels CSV without a manifest works too:
tasks are inferred (numeric column → regression, ``name[label]`` column groups → multilabel, a text column with few
values → multiclass), and paths are relative to the CSV's folder.

Stacked factors are cached in ``<root>/.lolctl-cache/<hash>.safetensors``, keyed by the labels file, the manifest
and the adapter folders' modification times, so re-reading a zoo of hundreds of adapters is one file read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lolctl.errors import LolctlError
from lolctl.nn.batch import LoraBatch
from lolctl.nn.spec import InputSpec, TaskSpec

RESERVED = ("id", "path", "split", "rank")
HYPERPARAMETER_PREFIX = "hp."
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
_LABEL_COL = re.compile(r"^(?P<task>[^\[\]]+)\[(?P<label>[^\[\]]+)\]$")
CACHE_VERSION = "1"
CACHE_KEEP = 3  # cache files kept per zoo


@dataclass
class Zoo:
    root: Path  # adapter paths are relative to this folder
    labels_path: Path
    tasks: tuple[TaskSpec, ...]
    rows: list[dict[str, str]]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [row.get("id") or row["path"] for row in self.rows]

    @property
    def paths(self) -> list[Path]:
        return [self.root / row["path"] for row in self.rows]

    @property
    def splits(self) -> list[str | None]:
        """Split per row: train / val / test (synonyms mapped), any other name kept as-is (an extra held-out set,
        e.g. ``test_r8``, never trained on), None where empty."""
        out: list[str | None] = []
        for row in self.rows:
            value = (row.get("split") or "").strip()
            out.append(SPLIT_NAMES.get(value.lower(), value) if value else None)
        return out

    @property
    def base_model(self) -> str | None:
        """The manifest's base model id (``"base_model"``: a string or {"id": ...}; else ``recipe.base_model``)."""
        for value in (self.manifest.get("base_model"), self.manifest.get("recipe", {}).get("base_model")):
            if isinstance(value, dict):
                value = value.get("id")
            if isinstance(value, str) and value:
                return value
        return None

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise LolctlError(
            "L180", f"--task {name}", "no such task in the zoo", f"choose from {', '.join(t.name for t in self.tasks)}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "labels_file": str(self.labels_path),
            "adapters": len(self.rows),
            "labels_sha256": _sha256(self.labels_path),
            # the manifest without its per-adapter hashes (1,696 lines for the flagship zoo; labels_sha256 pins it)
            "recipe": {k: v for k, v in self.manifest.items() if k not in ("tasks", "adapters")},
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LolctlError("L175", str(path), f"cannot read the labels file ({err})", "pass a UTF-8 CSV") from err
    if not rows or "path" not in rows[0]:
        raise LolctlError(
            "L175",
            str(path),
            "the labels file needs a 'path' column and at least one row",
            "add a header line with id,path,split,rank and target columns",
        )
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def infer_tasks(rows: list[dict[str, str]]) -> tuple[TaskSpec, ...]:
    """Tasks of a bare labels CSV: name[label] groups → multilabel, numeric → regression, few strings → multiclass.
    ``hp.*`` columns are the build's hyperparameters (inputs, some restating a target exactly): never targets."""
    groups: dict[str, list[str]] = {}
    tasks: list[TaskSpec] = []
    for col in rows[0]:
        if col in RESERVED or col.startswith(HYPERPARAMETER_PREFIX):
            continue
        match = _LABEL_COL.match(col)
        if match:
            groups.setdefault(match["task"], []).append(match["label"])
            continue
        values = [row[col] for row in rows if row[col] not in ("", None)]
        if values and all(_is_number(v) for v in values):
            tasks.append(TaskSpec(col, "regression", (col,)))
        elif values and len(set(values)) <= min(50, max(2, len(values) // 2)):
            tasks.append(TaskSpec(col, "multiclass", (col,), tuple(sorted(set(values)))))
    for name, labels in groups.items():
        tasks.append(TaskSpec(name, "multilabel", tuple(f"{name}[{lab}]" for lab in labels), tuple(labels)))
    return tuple(tasks)


def _manifest_tasks(manifest: dict[str, Any], path: Path) -> tuple[TaskSpec, ...]:
    tasks = []
    for i, t in enumerate(manifest.get("tasks") or []):
        try:
            kind, name = t["kind"], t["name"]
            labels = tuple(t.get("labels") or ())
            if kind == "multilabel":
                columns = tuple(t.get("columns") or [f"{name}[{lab}]" for lab in labels])
            else:
                columns = tuple(t.get("columns") or [name])
            tasks.append(TaskSpec(name, kind, columns, labels))
        except (KeyError, TypeError) as err:
            raise LolctlError("L176", f"{path}: tasks[{i}]", f"malformed task ({err})", "see docs/models.md") from err
    return tuple(tasks)


def load_zoo(source: str | Path) -> Zoo:
    """A zoo folder (manifest.json + labels.csv) or a labels CSV."""
    path = Path(source)
    if not path.exists():
        raise LolctlError("L100", str(path), "no such zoo folder or labels file", "check the path")
    if path.is_dir():
        labels = path / "labels.csv"
        if not labels.is_file():
            raise LolctlError("L176", str(path), "the zoo folder has no labels.csv", "build the zoo or pass a CSV")
        root, manifest_path = path, path / "manifest.json"
    else:
        labels, root, manifest_path = path, path.parent, path.parent / "manifest.json"
    rows = _read_csv(labels)
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():  # a zoo folder, or a labels CSV inside one (e.g. a subset of its rows)
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LolctlError("L176", str(manifest_path), f"not valid JSON ({err})", "rebuild the zoo") from err
        if not isinstance(manifest, dict):
            raise LolctlError("L176", str(manifest_path), "the manifest is not a JSON object", "rebuild the zoo")
    tasks = _manifest_tasks(manifest, manifest_path) if manifest.get("tasks") else infer_tasks(rows)
    missing = [c for t in tasks for c in t.columns if c not in rows[0]]
    if missing:
        raise LolctlError("L175", str(labels), f"column {missing[0]!r} named by a task is missing", "fix the labels")
    return Zoo(root, labels, tasks, rows, manifest)


def targets(zoo: Zoo, task: TaskSpec) -> np.ndarray:
    """Regression and multilabel: (N, k) floats with NaN for missing; multiclass: (N,) label index, −1 missing."""

    def num(text: str, col: str, row: int) -> float:
        if text is None or text.strip() == "":
            return math.nan
        try:
            return float(text)
        except ValueError as err:
            raise LolctlError(
                "L175",
                f"{zoo.labels_path}: row {row + 2}, column {col}",
                f"{text!r} is not a number",
                "fix the labels file",
            ) from err

    if task.kind == "multiclass":
        index = {lab: i for i, lab in enumerate(task.labels)}
        col = task.columns[0]
        return np.array([index.get((row.get(col) or "").strip(), -1) for row in zoo.rows], dtype=np.int64)
    return np.array([[num(row.get(c, ""), c, i) for c in task.columns] for i, row in enumerate(zoo.rows)])


def assign_splits(zoo: Zoo, seed: int, val: float = 0.15, test: float = 0.15, resplit: bool = False) -> np.ndarray:
    """Split name per row: the zoo's ``split`` column where set (extra names such as ``test_r8`` are kept and never
    trained on), else a seeded random 70/15/15 assignment. ``resplit`` ignores the column (e.g. for a partial zoo
    whose first rows are all validation)."""
    given = [None] * len(zoo.rows) if resplit else zoo.splits
    out = np.array([s or "" for s in given], dtype=object)
    free = np.flatnonzero(out == "")
    rng = np.random.default_rng(seed)
    perm = free[rng.permutation(free.size)]
    n_test, n_val = int(round(test * free.size)), int(round(val * free.size))
    out[perm[:n_test]] = "test"
    out[perm[n_test : n_test + n_val]] = "val"
    out[perm[n_test + n_val :]] = "train"
    return out


def _reader() -> Callable[..., Any]:
    from lolctl.read import read_adapter

    return read_adapter


def _cache_key(zoo: Zoo, dtype: torch.dtype) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{dtype}".encode())
    h.update(zoo.labels_path.read_bytes())
    h.update(json.dumps(zoo.manifest, sort_keys=True).encode())
    for p in zoo.paths:
        try:
            h.update(f"{p}|{p.stat().st_mtime_ns}".encode())
        except OSError:
            h.update(f"{p}|missing".encode())
    return h.hexdigest()[:24]


def load_factors(
    zoo: Zoo,
    dtype: torch.dtype = torch.float32,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LoraBatch, dict[str, Any]]:
    """Read every adapter of the zoo into one batch; also returns {"base_models": [...], "scales": [...]}."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    if zoo.manifest.get("packed"):  # a packed zoo (lolctl zoo pack): one file, already stacked
        from lolctl.zoo.pack import load_packed

        return load_packed(zoo, dtype)
    cache_file = zoo.root / ".lolctl-cache" / f"{_cache_key(zoo, dtype)}.safetensors"
    if cache and cache_file.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(cache_file), framework="pt") as fh:
                meta = fh.metadata() or {}
            info = json.loads(meta["info"])
            batch = LoraBatch.from_tensors(InputSpec.from_dict(info["spec"]), load_file(str(cache_file)))
            return batch, info["adapters"]
        except (SafetensorError, OSError, KeyError, ValueError):
            pass  # a stale or broken cache is rebuilt
    read = _reader()
    adapters = []
    for i, path in enumerate(zoo.paths):
        if not path.exists():
            raise LolctlError(
                "L176",
                str(path),
                f"adapter of row {i + 2} of {zoo.labels_path.name} does not exist",
                "fix the path column or rebuild the zoo",
            )
        adapters.append(read(path, dtype=dtype))
        if progress:
            progress(i + 1, len(zoo.paths))
    spec = InputSpec.from_adapter(adapters[0])
    batch = LoraBatch.from_adapters(adapters, spec, dtype=dtype)
    info = {
        "base_models": sorted({a.meta.base_model for a in adapters if a.meta.base_model}),
        "scales": sorted({float(m.scale) for a in adapters for m in a.modules}),
    }
    if cache:
        try:
            cache_file.parent.mkdir(exist_ok=True)
            meta = {"info": json.dumps({"spec": spec.to_dict(), "adapters": info})}
            save_file(batch.tensors(), str(cache_file), metadata=meta)
            old = sorted(cache_file.parent.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
            for stale in old[CACHE_KEEP:]:  # a growing zoo leaves one file per labels version: keep the newest
                stale.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only zoo is still usable, only slower
    return batch, info
