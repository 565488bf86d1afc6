"""The shipped checkpoint reproduces its model card on the committed test data.

models/minilm-wordnet-glnet/config.json stores the metrics `lolctl train` measured on the zoo's held-out splits (its
README.md card is generated from them); tests/data/minilm-wordnet-test holds those splits' adapters, packed in
float16 with per-module scales (`lolctl zoo pack`, scripts/train_default_checkpoint.sh). Evaluating the checkpoint
there must give the stored figures. Tolerance: 0.01 absolute on every metric — the float16 packing moves predictions
by ~1e-4 (relative rounding 5e-4 of each factor), enough to flip a label that sits at the 0.5 threshold, and one of
256 adapters flipping moves an accuracy by 0.004.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lolctl.nn.checkpoint import find_checkpoint_for
from lolctl.nn.workflow import eval_zoo

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "models" / "minilm-wordnet-glnet"
DATA = ROOT / "tests" / "data" / "minilm-wordnet-test"
RANKS = ROOT / "data" / "minilm-wordnet-test-r8r16"  # test_r8, test_r16 (64 each), packed beside the training data
TOLERANCE = 0.01

pytestmark = pytest.mark.usefixtures("one_thread")


def _stored() -> dict:
    return json.loads((CHECKPOINT / "config.json").read_text())["metrics"]


@pytest.mark.parametrize("split", ["test", "test_r1", "test_r2", "test_r8", "test_r16"])
@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_checkpoint_reproduces_its_card(split: str) -> None:
    stored = _stored()
    if split not in stored:
        pytest.fail(f"{CHECKPOINT}/config.json has no {split} metrics: run scripts/train_default_checkpoint.sh")
    got = eval_zoo(str(CHECKPOINT), RANKS if split in ("test_r8", "test_r16") else DATA, split=split, device="cpu")
    assert got["n"] == next(iter(stored[split].values()))["n"]
    compared = 0
    for task, want in stored[split].items():
        have = got["metrics"][task]
        for key, value in want.items():
            if key in ("kind", "n", "per_label") or not isinstance(value, float) or not math.isfinite(value):
                continue
            assert have[key] == pytest.approx(value, abs=TOLERANCE), f"{split} {task}.{key}"
            compared += 1
    assert compared >= 15  # 3 regression tasks x 3 metrics + 4 classification tasks x 3 metrics, minus undefined
    from lolctl.nn.metrics import ece_of

    for task, diagram in got["reliability"].items():  # the reliability bins eval reports are the ones ECE sums
        assert sum(b["n"] for b in diagram) > 0 and ece_of(diagram) == pytest.approx(stored[split][task]["ece"],
                                                                                       abs=TOLERANCE), task
    assert set(got["reliability"]) == {"membership", "noise", "gloss_length", "pos_mix"}


def test_interval_widths_follow_the_adapter_and_cover_the_test_split() -> None:
    """Issue 11: local conformal intervals (calibration.safetensors) — widths differ across the test split, and the
    90% intervals hold the truth for 85-95% of it."""
    got = eval_zoo(str(CHECKPOINT), DATA, split="test", device="cpu")["metrics"]
    for task in ("quality", "own_quality", "log_size"):
        iv = got[task]["interval90"]
        assert iv["width_p90"] > 1.3 * iv["width_p10"], task
        assert 0.85 <= iv["coverage"] <= 0.95, task


def test_card_shows_the_stored_test_metrics() -> None:
    card = (CHECKPOINT / "README.md").read_text()
    quality = _stored()["test"]["quality"]["r2"]
    assert f"| quality | r2 | {quality:.3f} |" in card
    assert "Preview" not in card


def test_score_finds_the_default_checkpoint_for_minilm_adapters() -> None:
    """`lolctl score` on an all-MiniLM-L6-v2 adapter picks this checkpoint without being told."""
    from lolctl.read import read_adapter

    adapter = read_adapter(ROOT / "lolctl" / "data" / "examples" / "minilm-wordnet-00178")
    found = find_checkpoint_for(adapter.meta.base_model)
    assert found is not None and Path(found).resolve() == CHECKPOINT.resolve()
