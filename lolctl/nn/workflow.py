"""The two end-to-end jobs behind the CLI: train a model on a zoo into a checkpoint, evaluate a checkpoint on a zoo.

Both return plain dicts (metrics and a description) and take progress callbacks; they never print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lolctl.errors import LolctlError
from lolctl.nn.checkpoint import load_checkpoint, resolve_device, save_checkpoint
from lolctl.nn.data import assign_splits, load_factors, load_zoo, targets
from lolctl.nn.metrics import json_safe
from lolctl.nn.registry import build_model, model_class
from lolctl.nn.train import TrainConfig, evaluate, fit, intervals, normalisation, predict, scale_stats

ReadProgress = Callable[[int, int], None]
EpochProgress = Callable[[int, int, float, float], None]
SPLITS = ("train", "val", "test")


def split_names(split: np.ndarray) -> list[str]:
    """train, val, test first, then extra held-out splits in sorted order."""
    present = {str(s) for s in split}
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def _metrics_by_split(tasks, pred, y, split: np.ndarray) -> dict[str, Any]:
    out = {}
    for name in split_names(split):
        rows = np.flatnonzero(split == name)
        if rows.size:
            out[name] = evaluate(tasks, {k: v[rows] for k, v in pred.items()}, {k: v[rows] for k, v in y.items()})
    return out


def train_zoo(
    source: str | Path,
    model_name: str,
    out_dir: str | Path,
    task_names: list[str] | None = None,
    model_values: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    device: str = "auto",
    name: str | None = None,
    base_model: str | None = None,
    base_model_aliases: list[str] | None = None,
    cache: bool = True,
    read_progress: ReadProgress | None = None,
    epoch_progress: EpochProgress | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on a zoo folder or labels CSV and save a checkpoint in ``out_dir``."""
    from lolctl import __version__

    cfg = train_config or TrainConfig()
    dev = resolve_device(device)
    zoo = load_zoo(source)
    tasks = tuple(zoo.task(t) for t in task_names) if task_names else zoo.tasks
    if not tasks:
        raise LolctlError("L175", str(zoo.labels_path), "no target columns to train on", "add targets or --task")
    batch, info = load_factors(zoo, cache=cache, progress=read_progress)
    y = {t.name: targets(zoo, t) for t in tasks}
    split = assign_splits(zoo, cfg.split_seed, resplit=cfg.resplit)
    train_rows = split == "train"
    if train_rows.sum() < 2:
        raise LolctlError("L175", str(zoo.labels_path), "fewer than 2 training rows", "add adapters or fix 'split'")
    norm = normalisation(tasks, y, train_rows)
    torch.manual_seed(cfg.seed)
    values = rank_defaults(model_name, model_values or {}, int(batch.ranks.max()))
    model = build_model(model_name, values, batch.spec, tasks).to(dev)
    on_dev = batch.to(dev)
    result = fit(model, on_dev, y, split, norm, cfg, epoch_progress)
    pred = predict(model, on_dev, norm)
    metrics = _metrics_by_split(tasks, pred, y, split)
    val = np.flatnonzero(split == "val")
    calib = val if val.size >= 5 else np.flatnonzero(train_rows)
    spans = intervals(tasks, {k: v[calib] for k, v in pred.items()}, {k: v[calib] for k, v in y.items()})
    scale = scale_stats(model, batch.select(np.flatnonzero(train_rows)))
    bases = info.get("base_models", [])
    base = base_model or zoo.base_model or (bases[0] if len(bases) == 1 else None)
    config = {
        "name": name or Path(out_dir).name,
        "lolctl_version": __version__,
        "architecture": model_name,
        "invariance": model.invariance,
        "model_config": model.config.to_dict(),
        "input_spec": batch.spec.to_dict(),
        "base_model": base,
        "base_model_aliases": sorted(set(base_model_aliases or []) | ({*bases} - {base})),
        "tasks": [t.to_dict() for t in tasks],
        "target_normalisation": norm,
        "intervals": {k: {**v, "source": "val" if calib is val else "train"} for k, v in spans.items()},
        "ood": {
            "ranks": sorted({int(r) for r in batch.ranks[torch.as_tensor(train_rows)].unique()}),
            "scale_log_range": [float(scale.min()), float(scale.max())],
            "base_models": bases,
        },
        "training_data": {
            **zoo.describe(),
            "source": str(source),
            "splits": {s: int((split == s).sum()) for s in split_names(split)},
            "split_source": "column" if any(zoo.splits) and not cfg.resplit else f"seeded ({cfg.split_seed})",
            "test_ids": [zoo.ids[i] for i in np.flatnonzero(split == "test")],
        },
        "train_config": asdict(cfg),
        "training": result.to_dict(),
        "metrics": metrics,
    }
    folder = save_checkpoint(Path(out_dir), model, config)
    summary = {"checkpoint": str(folder), "model": model_name, "training": result.to_dict(), "metrics": metrics}
    return json_safe(summary)


def rank_defaults(model_name: str, values: dict[str, Any], top: int) -> dict[str, Any]:
    """Fixed-rank models default to the zoo's largest rank: ``rank`` = top, ``max_rank`` = max(its default, top)."""
    cls = model_class(model_name).config_class
    names = {f.name for f in fields(cls)}
    out = dict(values)
    if "rank" in names and "rank" not in out:
        out["rank"] = top
    if "max_rank" in names and "max_rank" not in out:
        out["max_rank"] = max(int(cls().max_rank), top)  # type: ignore[attr-defined]
    return out


def eval_zoo(
    ref: str,
    source: str | Path,
    split: str = "test",
    device: str = "auto",
    cache: bool = True,
    read_progress: ReadProgress | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint on a zoo's ``split`` rows ("test", "val", "train" or "all")."""
    ckpt = load_checkpoint(ref, device)
    zoo = load_zoo(source)
    header = zoo.rows[0]
    tasks = tuple(t for t in ckpt.tasks if all(c in header for c in t.columns))
    skipped = [t.name for t in ckpt.tasks if t not in tasks]
    if not tasks:
        raise LolctlError(
            "L175",
            str(zoo.labels_path),
            "none of the checkpoint's target columns are in the labels",
            f"the checkpoint predicts {', '.join(t.name for t in ckpt.tasks)}",
        )
    rows, how = _eval_rows(zoo, ckpt.config, split)
    batch, _ = load_factors(zoo, cache=cache, progress=read_progress)
    batch = batch.respec(ckpt.spec).select(rows)
    pred = ckpt.predict_batch(batch)
    y = {t.name: targets(zoo, t)[rows] for t in tasks}
    result = {
        "checkpoint": ckpt.name,
        "architecture": ckpt.config.get("architecture"),
        "zoo": str(source),
        "split": split,
        "rows": how,
        "n": int(len(rows)),
        "skipped_tasks": skipped,
        "metrics": evaluate(tasks, pred, y),
    }
    return json_safe(result)


def _eval_rows(zoo, config: dict[str, Any], split: str) -> tuple[np.ndarray, str]:
    n = len(zoo.rows)
    if split == "all":
        return np.arange(n), "all rows"
    given = zoo.splits
    known = set(SPLITS) | {s for s in given if s}
    if split not in known:
        raise LolctlError("L180", f"--split {split}", "unknown split", f"use all or one of {', '.join(sorted(known))}")
    data = config.get("training_data", {})
    seeded = str(data.get("split_source", "")).startswith("seeded")
    if split == "test" and (seeded or not any(given)):  # the checkpoint drew its own test set: use the same rows
        ids = set(data.get("test_ids", []))
        rows = np.array([i for i, k in enumerate(zoo.ids) if k in ids], dtype=np.int64)
        if rows.size:
            return rows, "the checkpoint's recorded test ids"
    if any(given):
        rows = np.array([i for i, s in enumerate(given) if s == split], dtype=np.int64)
        if not rows.size:
            raise LolctlError("L175", str(zoo.labels_path), f"no rows with split={split}", "use --split all")
        return rows, f"split column = {split}"
    return np.arange(n), "all rows (the zoo has no split column)"
