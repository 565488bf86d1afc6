"""Metrics against values worked out by hand (no sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lolctl.nn import metrics


def test_regression_metrics():
    assert metrics.r2([1, 2, 3], [1, 2, 4]) == pytest.approx(0.5)
    assert metrics.mae([1, 2, 3], [1, 2, 4]) == pytest.approx(1 / 3)
    assert math.isnan(metrics.r2([2, 2, 2], [1, 2, 3]))  # constant target: undefined
    assert metrics.r2([1, math.nan, 3], [1, 100, 3]) == pytest.approx(1.0)  # NaN targets are ignored


def test_kendall_tau_b():
    assert metrics.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert metrics.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))  # a tie in y
    assert metrics.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    y = rng.normal(size=1300)  # more than one block of rows
    assert metrics.kendall_tau(y, 2 * y + 1) == pytest.approx(1.0)


def test_auroc_accuracy_ece():
    assert metrics.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(metrics.auroc([1, 1], [0.2, 0.3]))
    assert metrics.accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]) == pytest.approx(0.5)
    assert metrics.ece([1, 0, 1, 1], [0.9, 0.9, 0.1, 0.1]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.9)
    assert metrics.ece([1, 0], [1.0, 0.0]) == pytest.approx(0.0)  # p = 1 falls in the last bin


def test_reliability_bins_are_what_ece_sums():
    bins = metrics.reliability([1, 0, 1, 1, float("nan")], [0.95, 0.91, 0.15, 0.05, 0.5])
    assert [(b["lo"], b["n"]) for b in bins] == [(0.0, 1), (0.1, 1), (0.9, 2)]  # the unknown label left out
    assert bins[2]["probability"] == pytest.approx(0.93) and bins[2]["frequency"] == pytest.approx(0.5)
    assert metrics.ece_of(bins) == pytest.approx(metrics.ece([1, 0, 1, 1], [0.95, 0.91, 0.15, 0.05]))
    # multiclass: the top label's probability against being right; multilabel: every known pair
    P = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    top = metrics.reliability_of("multiclass", P, np.array([0, 0, -1]))
    assert [(b["n"], b["frequency"]) for b in top] == [(1, 0.0), (1, 1.0)]
    pairs = metrics.reliability_of("multilabel", P, np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 0.0]]))
    assert sum(b["n"] for b in pairs) == 5


def test_multilabel_and_multiclass_summaries():
    Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=float)
    P = np.array([[0.9, 0.2], [0.1, 0.7], [0.8, 0.4], [0.3, 0.1]])
    m = metrics.multilabel_metrics(Y, P, ["a", "b"])
    assert m["per_label"]["a"]["accuracy"] == 1.0 and m["per_label"]["b"]["accuracy"] == 0.75
    assert m["accuracy"] == pytest.approx(0.875) and m["auroc"] == pytest.approx(1.0) and m["n"] == 4
    # label b: 2 true, 1 predicted, 1 hit → F1 2/3; a: F1 1. Exact set: rows 0, 1, 3 right, row 2 misses b
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3) / 2) and m["exact_set"] == pytest.approx(0.75)
    y = np.array([0, 2, 1, -1])
    P3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]])
    mc = metrics.multiclass_metrics(y, P3, ["p", "q", "s"])
    assert mc["n"] == 3 and mc["accuracy"] == pytest.approx(2 / 3)


def test_prior_losses_put_tasks_on_one_scale():
    """The balancing weights are the loss of predicting each task's prior: ≈ 1 for a normalised regression, the
    label entropy for classification — and a task with a smaller prior loss weighs more in training."""
    import torch

    from lolctl.nn.spec import TaskSpec
    from lolctl.nn.train import prior_losses

    tasks = (
        TaskSpec("q", "regression", ("q",)),
        TaskSpec("m", "multilabel", ("m[a]", "m[b]"), ("a", "b")),
        TaskSpec("c", "multiclass", ("c",), ("x", "y", "z")),
    )
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1000, 1, generator=gen)
    y = {"q": (q - q.mean()) / q.std(), "m": torch.tensor([[1.0, 0.0]] * 200 + [[0.0, 0.0]] * 800),
         "c": torch.tensor([0] * 495 + [1] * 495 + [-1] * 10)}
    got = prior_losses(tasks, y, np.arange(1000))
    assert got["q"] == pytest.approx(1.0, abs=2e-3)
    h = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))  # label a; label b is constant 0 (entropy ~0)
    assert got["m"] == pytest.approx(h / 2 / 2, abs=1e-3)  # mean over 2 labels, weighed as 2 tasks
    assert got["c"] == pytest.approx(math.log(2), abs=1e-3)  # two classes seen, -1 rows ignored
