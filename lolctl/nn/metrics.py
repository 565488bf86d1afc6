"""Evaluation metrics in numpy (no sklearn): R², Kendall τ-b, MAE, accuracy, AUROC, expected calibration error.

Every function takes 1-D arrays and ignores NaN targets; a metric that is undefined on the data (a constant target,
a single class) is NaN, which the reports show as "n/a".
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _valid(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.float64).ravel(), np.asarray(p, dtype=np.float64).ravel()
    keep = ~np.isnan(y)
    return y[keep], p[keep]


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _valid(y, pred)
    total = float(((y - y.mean()) ** 2).sum()) if y.size else 0.0
    if total == 0.0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / total


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = _valid(y, pred)
    return float(np.abs(y - pred).mean()) if y.size else float("nan")


def kendall_tau(y: np.ndarray, pred: np.ndarray) -> float:
    """Kendall's τ-b (ties handled), O(N²) memory in blocks of rows."""
    y, pred = _valid(y, pred)
    n = y.size
    if n < 2:
        return float("nan")
    concord = tie_y = tie_p = 0.0
    for start in range(0, n, 512):
        dy = np.sign(y[start : start + 512, None] - y[None, :])
        dp = np.sign(pred[start : start + 512, None] - pred[None, :])
        concord += float((dy * dp).sum())
        tie_y += float((dy != 0).sum())
        tie_p += float((dp != 0).sum())
    if tie_y == 0 or tie_p == 0:
        return float("nan")
    return concord / np.sqrt(tie_y * tie_p)


def accuracy(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> float:
    y, prob = _valid(y, prob)
    return float(((prob >= threshold) == (y > 0.5)).mean()) if y.size else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties share their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    sx = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U), NaN when only one class is present."""
    y, score = _valid(y, score)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def reliability(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability diagram of binary probabilities: per equal-width bin of ``prob`` that holds any, its range, count,
    mean probability and observed frequency of y = 1 (a calibrated model has frequency ≈ probability)."""
    y, prob = _valid(y, prob)
    idx = np.minimum((prob * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(sel.sum()),
                        "probability": float(prob[sel].mean()), "frequency": float(y[sel].mean())})
    return out


def ece(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of binary probabilities: Σ_bins (|bin|/N) · |mean(y) − mean(prob)|."""
    return ece_of(reliability(y, prob, bins))


def ece_of(diagram: list[dict[str, float]]) -> float:
    """The expected calibration error of a :func:`reliability` diagram (NaN for an empty one)."""
    total = sum(b["n"] for b in diagram)
    if not total:
        return float("nan")
    return float(sum(b["n"] / total * abs(b["frequency"] - b["probability"]) for b in diagram))


def reliability_of(kind: str, probs: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """The reliability diagram of a classification task, as its ECE is measured: every known (adapter, label) pair
    for multilabel, the top label's probability against being right for multiclass."""
    if kind == "multilabel":
        keep = ~np.isnan(y)
        return reliability(y[keep], probs[keep], bins)
    keep = y >= 0
    return reliability((probs[keep].argmax(1) == y[keep]).astype(float), probs[keep].max(1), bins)


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "r2": r2(y, pred),
        "kendall_tau": kendall_tau(y, pred),
        "mae": mae(y, pred),
        "n": int((~np.isnan(y)).sum()),
    }


def multilabel_metrics(Y: np.ndarray, P: np.ndarray, labels: list[str]) -> dict[str, object]:
    """Y, P: (N, k) targets in {0, 1} and probabilities."""
    per = {
        lab: {"accuracy": accuracy(Y[:, j], P[:, j]), "auroc": auroc(Y[:, j], P[:, j]), "ece": ece(Y[:, j], P[:, j])}
        for j, lab in enumerate(labels)
    }
    known = ~np.isnan(Y).any(axis=1)
    hard = P >= 0.5
    exact = float((hard[known] == (Y[known] == 1)).all(axis=1).mean()) if known.any() else float("nan")
    return {
        "accuracy": float(np.nanmean([v["accuracy"] for v in per.values()])),
        "auroc": _nanmean([v["auroc"] for v in per.values()]),
        "macro_f1": _nanmean([f1(Y[:, j], P[:, j]) for j in range(Y.shape[1])]),
        "exact_set": exact,  # share of adapters whose whole label set is right at threshold 0.5
        "ece": ece(Y.ravel(), P.ravel()),
        "n": int((~np.isnan(Y[:, 0])).sum()) if Y.size else 0,
        "per_label": per,
    }


def multiclass_metrics(y: np.ndarray, P: np.ndarray, labels: list[str]) -> dict[str, object]:
    """y: (N,) class index (−1 = missing); P: (N, k) probabilities."""
    keep = y >= 0
    y, P = y[keep].astype(int), P[keep]
    if not y.size:
        return {"accuracy": float("nan"), "auroc": float("nan"), "ece": float("nan"), "n": 0}
    top = P.argmax(1)
    onehot = np.eye(len(labels))[y]
    return {
        "accuracy": float((top == y).mean()),
        "auroc": _nanmean([auroc(onehot[:, j], P[:, j]) for j in range(len(labels))]),  # macro one-vs-rest
        "ece": ece((top == y).astype(float), P.max(1)),  # top-label calibration
        "n": int(y.size),
    }


def f1(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of the positive label at ``threshold`` (NaN when there are no positives and none predicted)."""
    keep = ~np.isnan(y)
    t, p = y[keep] == 1, prob[keep] >= threshold
    tp, denom = float((t & p).sum()), float(t.sum() + p.sum())
    return 2 * tp / denom if denom else float("nan")


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def json_safe(obj: Any) -> Any:
    """NaN / inf (undefined metrics) → None and numpy scalars → Python, recursively, so output stays strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
