"""Reading a zoo for the models: its targets as arrays, its splits, its adapters' factors as one batch (cached).

The zoo itself (manifest, labels, packed layout) is read by :mod:`lolctl.zoo.format`. Stacked factors are cached in
``<root>/.lolctl-cache/<hash>.safetensors``, keyed by the labels file, the manifest and the adapter folders'
modification times, so re-reading a zoo of hundreds of adapters is one file read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lolctl.errors import LolctlError
from lolctl.nn.batch import LoraBatch
from lolctl.nn.spec import InputSpec, TaskSpec
from lolctl.zoo.format import Zoo, read_packed

CACHE_VERSION = "1"
CACHE_KEEP = 3  # cache files kept per zoo


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

    if zoo.packed:  # a packed zoo (lolctl zoo pack): one file, already stacked
        return read_packed(zoo, dtype)
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
