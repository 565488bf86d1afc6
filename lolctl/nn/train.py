"""Training and evaluation of any lolctl model: losses per task kind, target normalisation, early stopping.

Regression targets are standardised with the training split's mean and std (stored with the checkpoint);
multi-label heads use binary cross-entropy, multiclass heads cross-entropy; missing targets (NaN / −1) are masked.
AdamW, minibatches, early stopping on the validation loss (the best weights are restored). Prediction intervals for
regression come from the validation residuals' 5% and 95% quantiles (a 90% interval, see docs/models.md).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lolctl.nn import metrics
from lolctl.nn.base import LoraModel
from lolctl.nn.batch import LoraBatch
from lolctl.nn.spec import TaskSpec


@dataclass
class TrainConfig:
    epochs: int = 300  # upper bound; early stopping usually ends sooner
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 30  # epochs without a better validation loss before stopping
    seed: int = 0  # initialisation and batch order
    split_seed: int = 0  # the random train/val/test split of rows without a `split` column
    resplit: bool = False  # ignore the `split` column: split every row at random with split_seed
    balance_tasks: bool = True  # weight each task's loss by 1 / the loss of predicting its training prior


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        return d


def normalisation(tasks: tuple[TaskSpec, ...], y: dict[str, np.ndarray], train: np.ndarray) -> dict[str, Any]:
    """Mean and std of each regression column over the training rows."""
    out: dict[str, Any] = {}
    for t in tasks:
        if t.kind != "regression":
            continue
        col = y[t.name][train]
        mean = np.nanmean(col, axis=0) if np.isfinite(col).any() else np.zeros(col.shape[1])
        std = np.nanstd(col, axis=0) if np.isfinite(col).any() else np.ones(col.shape[1])
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        out[t.name] = {"mean": [float(v) for v in np.nan_to_num(mean)], "std": [float(v) for v in std]}
    return out


def target_tensors(tasks: tuple[TaskSpec, ...], y: dict[str, np.ndarray], norm: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for t in tasks:
        if t.kind == "regression":
            v = (y[t.name] - np.asarray(norm[t.name]["mean"])) / np.asarray(norm[t.name]["std"])
            out[t.name] = torch.as_tensor(v, dtype=torch.float32)
        elif t.kind == "multilabel":
            out[t.name] = torch.as_tensor(y[t.name], dtype=torch.float32)
        else:
            out[t.name] = torch.as_tensor(y[t.name], dtype=torch.long)
    return out


def task_loss(task: TaskSpec, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task.kind == "multiclass":
        if not (target >= 0).any():
            return out.sum() * 0.0
        return torch.nn.functional.cross_entropy(out, target, ignore_index=-1)
    mask = ~torch.isnan(target)
    if not mask.any():
        return out.sum() * 0.0
    if task.kind == "regression":
        return ((out - torch.nan_to_num(target)) ** 2)[mask].mean()
    return torch.nn.functional.binary_cross_entropy_with_logits(out[mask], target[mask])


def prior_losses(tasks: tuple[TaskSpec, ...], y: dict[str, torch.Tensor], rows: np.ndarray) -> dict[str, float]:
    """Each task's loss on ``rows`` when predicting its prior over those rows (mean, base rates, class
    frequencies): about 1 for a normalised regression, the label entropy for classification.

    Dividing by it puts the tasks on one scale, so that neither the gradient nor the early-stopping criterion is
    dominated by the tasks that start with the largest loss (in the MiniLM zoo: three regressions at 1.0 against a
    membership loss of 0.47 that a model can only lower by a few hundredths). A multilabel task's loss is the mean
    over its k labels, so its weight is k times larger: each label counts as much as a binary task."""
    idx = torch.as_tensor(rows)
    out = {}
    for t in tasks:
        target = y[t.name][idx]
        if t.kind == "multiclass":
            known = target[target >= 0]
            freq = torch.bincount(known, minlength=t.out_dim).double() / max(1, known.numel())
            logits = freq.clamp_min(1e-6).log().float().expand(target.shape[0], -1)
        else:
            prior = torch.nanmean(target.double(), dim=0).nan_to_num(0.0)
            if t.kind == "multilabel":
                prior = torch.logit(prior.clamp(1e-6, 1 - 1e-6))
            logits = prior.float().expand_as(target)
        loss = float(task_loss(t, logits, target))
        loss = loss if math.isfinite(loss) and loss > 1e-3 else 1.0
        # a multilabel task is k binary tasks whose losses are averaged: weigh it as k tasks, not one
        out[t.name] = loss / t.out_dim if t.kind == "multilabel" else loss
    return out


Run = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # rows of the training batch -> the model's outputs on them

FEATURE_CACHE_BYTES = 1 << 29  # fixed features of a whole zoo up to 512 MiB are computed once (``runner``)


def runner(model: LoraModel, batch: LoraBatch) -> Run:
    """``idx -> model(batch.select(idx))``, after ``prepare``. A model with ``fixed_features`` gets its head input
    computed once for every adapter (in chunks, no gradient) and only its head run per step: the same outputs, without
    recomputing MLP+SVD's singular values on every step of every epoch (three quarters of its step time)."""
    def full(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return model(batch.select(idx))

    if not model.fixed_features or batch.size == 0:
        return full
    with torch.no_grad():
        first = model.head_input(batch.select([0]))
        if batch.size * first.shape[1] * first.element_size() > FEATURE_CACHE_BYTES:
            return full
        rows = torch.arange(batch.size)
        cached = torch.cat([model.head_input(batch.select(rows[i : i + 256])) for i in range(0, batch.size, 256)])

    def head_only(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return model.read_out(model.head(cached[idx.to(cached.device)]))

    return head_only


def _loss(
    model: LoraModel,
    run: Run,
    y: dict[str, torch.Tensor],
    idx: torch.Tensor,
    weights: dict[str, float] | None = None,
) -> torch.Tensor:
    out = run(idx)
    return torch.stack([
        task_loss(t, out[t.name], y[t.name][idx].to(out[t.name].device)) / (weights or {}).get(t.name, 1.0)
        for t in model.tasks
    ]).sum()


@torch.no_grad()
def _mean_loss(
    model: LoraModel,
    run: Run,
    y: dict[str, torch.Tensor],
    idx: np.ndarray,
    bs: int,
    weights: dict[str, float] | None = None,
) -> float:
    if idx.size == 0:
        return math.nan
    model.eval()
    total = 0.0
    for start in range(0, idx.size, bs):
        chunk = torch.as_tensor(idx[start : start + bs])
        total += float(_loss(model, run, y, chunk, weights)) * chunk.numel()
    return total / idx.size


def adamw(model: LoraModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel per step) where torch has it for the model's device: the same update, ~10x faster
    per step for MLP+Dense's 57 M-weight first layer on one idle CPU thread (0.33 s -> 0.034 s,
    `benchmarks/paused.sh python -m benchmarks.dense_optimizer`); unfused otherwise."""
    params = list(model.parameters())
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch or a device without the fused kernel
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def fit(
    model: LoraModel,
    batch: LoraBatch,
    y: dict[str, np.ndarray],
    split: np.ndarray,
    norm: dict[str, Any],
    config: TrainConfig,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on the rows whose split is "train"; early-stop on "val" (or train when no val)."""
    gen = torch.Generator().manual_seed(config.seed)
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    monitor = val if val.size else train
    model.prepare(batch.select(train))
    run = runner(model, batch)
    targets = target_tensors(model.tasks, y, norm)
    weights = prior_losses(model.tasks, targets, train) if config.balance_tasks else None
    opt = adamw(model, config)
    best, best_state, best_epoch, waited = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    history = []
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        perm = torch.as_tensor(train)[torch.randperm(train.size, generator=gen)]
        running = 0.0
        for start in range(0, perm.numel(), config.batch_size):
            idx = perm[start : start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = _loss(model, run, targets, idx, weights)
            loss.backward()
            opt.step()
            running += float(loss.detach()) * idx.numel()
        train_loss = running / max(1, train.size)
        val_loss = _mean_loss(model, run, targets, monitor, config.batch_size * 4, weights)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if progress:
            progress(epoch, config.epochs, train_loss, val_loss)
        if val_loss < best - 1e-6:
            best, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    if model.finalize():  # the model now stores a compressed form: the validation loss is that form's
        best = _mean_loss(model, run, targets, monitor, config.batch_size * 4, weights)
    return TrainResult(best_epoch, epoch, best, history)


def evaluate(tasks: tuple[TaskSpec, ...], pred: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, Any]:
    """Metrics per task; a regression task with several columns reports each column under its name."""
    out: dict[str, Any] = {}
    for t in tasks:
        if t.kind == "regression":
            for j, col in enumerate(t.columns):
                key = t.name if len(t.columns) == 1 else f"{t.name}.{col}"
                out[key] = {"kind": "regression", **metrics.regression_metrics(y[t.name][:, j], pred[t.name][:, j])}
        elif t.kind == "multilabel":
            out[t.name] = {"kind": "multilabel", **metrics.multilabel_metrics(y[t.name], pred[t.name], list(t.labels))}
        else:
            out[t.name] = {"kind": "multiclass", **metrics.multiclass_metrics(y[t.name], pred[t.name], list(t.labels))}
    return out


def intervals(
    tasks: tuple[TaskSpec, ...], pred: dict[str, np.ndarray], y: dict[str, np.ndarray], coverage: float = 0.9
) -> dict[str, Any]:
    """Residual quantiles (y − ŷ) per regression column: the interval for a new prediction is ŷ + [lo, hi]."""
    a = (1.0 - coverage) / 2
    out = {}
    for t in tasks:
        if t.kind != "regression":
            continue
        res = y[t.name] - pred[t.name]
        lo = [
            float(np.nanquantile(res[:, j], a)) if np.isfinite(res[:, j]).any() else 0.0 for j in range(res.shape[1])
        ]
        hi = [
            float(np.nanquantile(res[:, j], 1 - a)) if np.isfinite(res[:, j]).any() else 0.0
            for j in range(res.shape[1])
        ]
        out[t.name] = {"coverage": coverage, "lo": lo, "hi": hi, "n": int(np.isfinite(res[:, 0]).sum())}
    return out
