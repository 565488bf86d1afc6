"""Uncertainty fitted on the validation split: temperatures for probabilities, and per-adapter intervals.

**Temperature** (per classification task): the T that minimises the validation negative log-likelihood of the
probabilities recomputed from logits / T (a grid over 0.2 … 5); ECE before and after is stored with it.

**Local conformal intervals** (per regression column): the difficulty of an adapter is σ̂(x), the mean absolute
validation residual of its k nearest validation adapters in the model's head representation (the invariant
features after the head MLP, standardised). On the validation split σ̂ is computed leave-one-out and the interval
multiplier q is the conformal quantile ⌈(n+1)·0.9⌉/n of |y − ŷ| / σ̂; a new adapter gets ŷ ± q·σ̂(x). The width
thus follows how wrong the model was on similar adapters, while the 90 % level is set on held-out data. (The
validation split also chose the early-stopping epoch, so the coverage is measured on test, not assumed.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lolctl.nn import metrics
from lolctl.nn.spec import TaskSpec

TEMPERATURES = np.exp(np.linspace(math.log(0.2), math.log(5.0), 81))
NEIGHBOURS = 20
COVERAGE = 0.9


def apply_temperature(kind: str, probs: np.ndarray, T: float) -> np.ndarray:
    """Probabilities recomputed from logits / T (sigmoid per label for multilabel, softmax for multiclass)."""
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    if kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / T))
    z = np.log(p) / T
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _nll(kind: str, probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    if kind == "multilabel":
        keep = ~np.isnan(y)
        return float(-(y[keep] * np.log(p[keep]) + (1 - y[keep]) * np.log(1 - p[keep])).mean())
    keep = y >= 0
    return float(-np.log(p[keep, y[keep].astype(int)]).mean())


def _ece(kind: str, probs: np.ndarray, y: np.ndarray) -> float:
    return metrics.ece_of(metrics.reliability_of(kind, probs, y))


def fit_temperatures(tasks: tuple[TaskSpec, ...], pred: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict:
    """{task: {"temperature", "n", "ece_before", "ece_after"}} for every classification task (val rows given)."""
    out: dict[str, Any] = {}
    for t in tasks:
        if t.kind == "regression":
            continue
        known = ~np.isnan(y[t.name]).all(axis=1) if t.kind == "multilabel" else y[t.name] >= 0
        if known.sum() < 5:
            continue
        P, Y = pred[t.name][known], y[t.name][known]
        losses = [_nll(t.kind, apply_temperature(t.kind, P, T), Y) for T in TEMPERATURES]
        T = float(TEMPERATURES[int(np.argmin(losses))])
        after = metrics.reliability_of(t.kind, apply_temperature(t.kind, P, T), Y)
        out[t.name] = {"temperature": T, "n": int(known.sum()), "ece_before": _ece(t.kind, P, Y),
                       "ece_after": metrics.ece_of(after), "shown": shown_limits(t.kind, after)}
    return out


LIMIT_BIN = 10  # adapters (or pairs) an end bin needs before its observed frequency limits what is shown


def shown_limits(kind: str, bins: list[dict[str, float]]) -> list[float]:
    """[low, high]: the most extreme probabilities the validation split supports, from the calibrated model's
    reliability diagram there (``metrics.reliability_of``). Where its most confident bin (p ≥ 0.9; for multiclass
    the top label) was right less often than it claimed, ``high`` is the frequency it was right; for multilabel,
    ``low`` likewise from the least confident bin (p < 0.1). Bins of fewer than LIMIT_BIN leave the end unlimited
    (0 or 1); the probability floor still applies."""
    low, high = 0.0, 1.0
    top, bottom = bins[-1] if bins else None, bins[0] if bins else None
    if top and top["lo"] >= 0.9 and top["n"] >= LIMIT_BIN and top["frequency"] < top["probability"]:
        high = max(0.5, top["frequency"])
    if kind == "multilabel" and bottom and bottom["hi"] <= 0.1 and bottom["n"] >= LIMIT_BIN \
            and bottom["frequency"] > bottom["probability"]:
        low = min(0.5, bottom["frequency"])
    return [float(low), float(high)]


def limit_probabilities(kind: str, probs: np.ndarray, shown: list[float] | None, floor: float) -> np.ndarray:
    """One prediction's probabilities as they may be shown: inside [floor, 1 − floor] and the task's measured
    ``shown`` limits. Multilabel: each label clipped. Multiclass: the top label lowered to the limit and the excess
    shared by the others in proportion, so the probabilities still sum to 1."""
    low, high = shown or (0.0, 1.0)
    low, high = max(low, floor), min(high, 1.0 - floor)
    p = np.asarray(probs, dtype=np.float64).copy()
    if kind == "multilabel":
        return np.clip(p, low, high)
    top = int(p.argmax())
    if p[top] > high:
        rest = p.sum() - p[top]
        excess = p[top] - high
        p[top] = high
        others = np.arange(p.size) != top
        p[others] = p[others] + excess * (p[others] / rest if rest > 0 else 1.0 / max(1, others.sum()))
    return np.clip(p, floor, 1.0 - floor)


def calibrate(tasks: tuple[TaskSpec, ...], out: dict[str, np.ndarray], calib: dict[str, Any]) -> dict:
    """Apply each classification task's stored temperature."""
    if not calib:
        return out
    out = dict(out)
    for t in tasks:
        T = float((calib.get(t.name) or {}).get("temperature", 1.0))
        if t.kind != "regression" and T != 1.0:
            out[t.name] = apply_temperature(t.kind, out[t.name], T)
    return out


# -- local conformal intervals ---------------------------------------------------------------------------------
def _standardise(h: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (h - mean) / std


def _knn_scale(query: np.ndarray, ref: np.ndarray, abs_res: np.ndarray, k: int, leave_one_out: bool) -> np.ndarray:
    """(Nq, c): mean |residual| of the k nearest reference rows (excluding the row itself when leave_one_out)."""
    d = ((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    if leave_one_out:
        np.fill_diagonal(d, np.inf)
    k = max(1, min(k, ref.shape[0] - int(leave_one_out)))
    near = np.argsort(d, axis=1)[:, :k]
    return np.stack([np.nanmean(abs_res[near, j], axis=1) for j in range(abs_res.shape[1])], axis=1)


def fit_local_intervals(
    tasks: tuple[TaskSpec, ...], h: np.ndarray, pred: dict[str, np.ndarray], y: dict[str, np.ndarray],
    k: int = NEIGHBOURS, coverage: float = COVERAGE,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config entries per regression task, tensors to store) from the validation rows' head features ``h``.

    At most half of the rows are neighbours (``k`` is lowered for fewer than 2k rows): with every row a neighbour,
    each adapter would get the same width."""
    k = max(1, min(k, h.shape[0] // 2))
    mean, std = h.mean(0), h.std(0) + 1e-6
    hs = _standardise(h, mean, std)
    config: dict[str, Any] = {}
    tensors = {"h": hs.astype(np.float32), "h_mean": mean.astype(np.float32), "h_std": std.astype(np.float32)}
    for t in tasks:
        if t.kind != "regression":
            continue
        abs_res = np.abs(y[t.name] - pred[t.name])  # (N, c)
        floor = np.maximum(np.nanmedian(abs_res, axis=0) * 0.1, 1e-9)
        sigma = np.maximum(_knn_scale(hs, hs, abs_res, k, leave_one_out=True), floor)
        ratio = abs_res / sigma
        qs = []
        for j in range(abs_res.shape[1]):
            r = np.sort(ratio[:, j][np.isfinite(ratio[:, j])])
            level = min(1.0, math.ceil((r.size + 1) * coverage) / max(r.size, 1))
            qs.append(float(np.quantile(r, level)) if r.size else 0.0)
        config[t.name] = {"method": "knn-conformal", "k": int(k), "q": qs, "floor": floor.tolist()}
        tensors[f"abs_res.{t.name}"] = np.nan_to_num(abs_res, nan=0.0).astype(np.float32)
    return config, tensors


def local_intervals(
    tasks: tuple[TaskSpec, ...], h: np.ndarray, pred: dict[str, np.ndarray], spans: dict[str, Any],
    stored: dict[str, torch.Tensor],
) -> dict[str, np.ndarray]:
    """{task: (N, c, 2)} intervals ŷ ± q·σ̂(x) for tasks with a knn-conformal entry; others are left out."""
    hs = _standardise(h, stored["h_mean"].numpy(), stored["h_std"].numpy())
    ref = stored["h"].numpy()
    out = {}
    for t in tasks:
        span = spans.get(t.name) or {}
        if t.kind != "regression" or span.get("method") != "knn-conformal" or f"abs_res.{t.name}" not in stored:
            continue
        sigma = np.maximum(_knn_scale(hs, ref, stored[f"abs_res.{t.name}"].numpy(), int(span["k"]), False),
                           np.asarray(span["floor"]))
        half = sigma * np.asarray(span["q"])
        out[t.name] = np.stack([pred[t.name] - half, pred[t.name] + half], axis=-1)
    return out


def coverage_report(y: np.ndarray, iv: np.ndarray) -> dict[str, float]:
    """Share of known targets inside their interval, and the mean / spread of the widths (one column)."""
    keep = np.isfinite(y)
    inside = (iv[keep, 0] <= y[keep]) & (y[keep] <= iv[keep, 1])
    width = iv[:, 1] - iv[:, 0]
    return {"coverage": float(inside.mean()) if keep.any() else float("nan"), "mean_width": float(width.mean()),
            "width_p10": float(np.quantile(width, 0.1)), "width_p90": float(np.quantile(width, 0.9))}


# -- rank fallback (lolctl.nn.composite): the fallback members' own calibration -----------------------------------
FALLBACK_PREFIX = "fallback."  # stored residuals of the fallback members: "fallback.abs_res.<task>"


def fallback_stored(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The stored calibration tensors as the fallback members' local intervals read them (shared features)."""
    out = {k: v for k, v in stored.items() if not k.startswith("abs_res.") and not k.startswith(FALLBACK_PREFIX)}
    out.update({k[len(FALLBACK_PREFIX):]: v for k, v in stored.items() if k.startswith(FALLBACK_PREFIX)})
    return out


def pick_rows(rows: np.ndarray, fallback: dict[str, np.ndarray], primary: dict[str, np.ndarray]) -> dict:
    """Per task, ``fallback``'s rows where ``rows`` (N,) is True and ``primary``'s elsewhere."""
    out = dict(primary)
    for name, values in fallback.items():
        if name in primary:
            where = rows.reshape((-1,) + (1,) * (values.ndim - 1))
            out[name] = np.where(where, values, primary[name])
    return out
