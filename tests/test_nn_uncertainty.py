"""Uncertainty from the validation split: temperatures, local conformal intervals, and the head representation they
read (GL-invariant in float64, sensitive to a wrong action)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_nn_models import GL_INVARIANT, SPEC, factors, make

from lolctl.nn.batch import LoraBatch
from lolctl.nn.metrics import reliability_of
from lolctl.nn.spec import TaskSpec
from lolctl.nn.uncertainty import (
    apply_temperature,
    coverage_report,
    fit_local_intervals,
    fit_temperatures,
    limit_probabilities,
    local_intervals,
    shown_limits,
)
from lolctl.testing import assert_invariant, assert_sensitive

REG = (TaskSpec("quality", "regression", ("quality",)),)


@pytest.mark.parametrize("name", GL_INVARIANT)
def test_representation_is_gl_invariant_and_sensitive(name):
    model = make(name)

    def fn(f):
        return model.representation(LoraBatch.from_factors(SPEC, f)).detach()

    f = factors(4)
    assert_invariant(fn, f, generator=torch.Generator().manual_seed(5))
    assert_sensitive(fn, f, generator=torch.Generator().manual_seed(6))


def test_temperature_undoes_a_known_overconfidence():
    """Labels drawn from p; the model reports p sharpened by T = 3 → the fitted T is near 3 and ECE drops."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, size=(4000, 2))
    y = (rng.uniform(size=p.shape) < p).astype(float)
    shown = apply_temperature("multilabel", p, 1 / 3)
    task = (TaskSpec("m", "multilabel", ("m[a]", "m[b]"), ("a", "b")),)
    got = fit_temperatures(task, {"m": shown}, {"m": y})["m"]
    assert got["temperature"] == pytest.approx(3.0, rel=0.15) and got["ece_after"] < got["ece_before"] / 2
    probs = rng.dirichlet([1, 1, 1], size=3000)
    labels = np.array([rng.choice(3, p=q) for q in probs])
    got = fit_temperatures((TaskSpec("c", "multiclass", ("c",), ("x", "y", "z")),),
                           {"c": apply_temperature("multiclass", probs, 0.5)}, {"c": labels})["c"]
    assert got["temperature"] == pytest.approx(2.0, rel=0.15)


def test_shown_limits_come_from_the_confident_ends_that_were_wrong():
    """Issue 11: no probability shown as more certain than validation supports. A model that says 0.99 and is
    right 4 times in 5 may show at most 0.8; one that says 0.01 for pairs that are members 1 time in 10 shows at
    least 0.1; a calibrated end (or a bin too small to measure) leaves the end open."""
    rng = np.random.default_rng(3)
    n = 200
    y = (rng.uniform(size=n) < 0.8).astype(int)  # multiclass truth: label 0 for 80 % of the adapters
    probs = np.tile([0.99, 0.01], (n, 1))  # always 0.99 for label 0
    low, high = shown_limits("multiclass", reliability_of("multiclass", probs, y * 0 + (1 - y)))  # right: truth 0
    assert (low, high) == (0.0, pytest.approx(((1 - y) == 0).mean()))
    always_right = reliability_of("multiclass", probs, np.zeros(n, dtype=int))
    assert shown_limits("multiclass", always_right) == [0.0, 1.0]  # always right: open
    few = reliability_of("multiclass", probs[:5], np.ones(5, dtype=int))
    assert shown_limits("multiclass", few) == [0.0, 1.0]  # 5 < LIMIT_BIN: open
    pairs = np.column_stack([np.full(n, 0.01), np.full(n, 0.95)])
    truth = np.column_stack([(np.arange(n) % 10 == 0), np.ones(n)]).astype(float)  # 1 in 10 of the "0.01" pairs
    assert shown_limits("multilabel", reliability_of("multilabel", pairs, truth)) == pytest.approx([0.1, 1.0])


def test_limit_probabilities_keeps_a_distribution():
    p = limit_probabilities("multiclass", np.array([0.98, 0.015, 0.005]), [0.0, 0.8], floor=0.01)
    assert p[0] == pytest.approx(0.8) and p.sum() == pytest.approx(1.0) and p[1] > p[2] >= 0.01
    assert p[1] / p[2] == pytest.approx(0.015 / 0.005)  # the excess shared in proportion
    m = limit_probabilities("multilabel", np.array([0.999, 0.0001, 0.5]), [0.05, 0.9], floor=0.01)
    assert m.tolist() == pytest.approx([0.9, 0.05, 0.5])
    assert limit_probabilities("multilabel", np.array([1.0, 0.0]), None, floor=0.01).tolist() == [0.99, 0.01]


def test_local_intervals_follow_difficulty_and_cover():
    """Noise 10x larger in one half of the representation space: intervals there are wider, and the 90 % level
    holds on fresh data overall (within sampling error)."""
    rng = np.random.default_rng(1)

    def draw(n):
        h = rng.normal(size=(n, 3))
        noisy = h[:, 0] > 0
        y = rng.normal(size=n) * np.where(noisy, 1.0, 0.1)
        return h, y[:, None], noisy

    h, y, _ = draw(400)
    config, stored = fit_local_intervals(REG, h, {"quality": np.zeros_like(y)}, {"quality": y})
    spans = {"quality": config["quality"]}
    h2, y2, noisy2 = draw(2000)
    iv = local_intervals(REG, h2, {"quality": np.zeros_like(y2)}, spans,
                         {k: torch.as_tensor(v) for k, v in stored.items()})["quality"][:, 0]
    width = iv[:, 1] - iv[:, 0]
    assert np.median(width[noisy2]) > 5 * np.median(width[~noisy2])
    report = coverage_report(y2[:, 0], iv)
    assert 0.86 <= report["coverage"] <= 0.95, report
    assert report["width_p90"] > 3 * report["width_p10"]


def test_local_intervals_from_few_rows_still_follow_difficulty():
    """20 calibration rows, fewer than 2 x the default 20 neighbours: k drops to 10, so the widths still differ (with
    every row a neighbour they would all be one width)."""
    rng = np.random.default_rng(2)
    h = rng.normal(size=(20, 3))
    y = (rng.normal(size=20) * np.where(h[:, 0] > 0, 1.0, 0.1))[:, None]
    config, stored = fit_local_intervals(REG, h, {"quality": np.zeros_like(y)}, {"quality": y})
    assert config["quality"]["k"] == 10
    iv = local_intervals(REG, rng.normal(size=(50, 3)), {"quality": np.zeros((50, 1))}, {"quality": config["quality"]},
                         {k: torch.as_tensor(v) for k, v in stored.items()})["quality"][:, 0]
    assert np.unique(np.round(iv[:, 1] - iv[:, 0], 9)).size > 1


def test_predictions_are_clipped_to_what_the_target_can_be():
    from lolctl.nn.about import clip_prediction, task_bounds

    config = {"training_data": {"recipe": {"recipe": {"name": "minilm-wordnet"}}}}
    bounds = task_bounds(config)
    assert clip_prediction(0.03, (-0.05, 0.10), bounds["quality"]) == (0.03, [0.0, 0.10])
    assert clip_prediction(1.2, (0.9, 1.4), bounds["own_quality"]) == (1.0, [0.9, 1.0])
    assert bounds["log_size"][2] == "log2 pairs"
    assert clip_prediction(-3.0, (-4.0, 2.0), None) == (-3.0, [-4.0, 2.0])  # unknown target: left alone
    own = task_bounds({"task_bounds": {"score": [0, 10, "points"]}, **config})  # the config's own bounds win
    assert own == {"score": (0.0, 10.0, "points")}
