"""The README's main job: `lolctl score` with no argument scores the bundled MiniLM examples with the built-in
checkpoint chosen by base model (no --checkpoint given), as a real subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # scores the bundled examples in a subprocess (quick set: pytest -m 'not slow')

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "lolctl" / "data" / "examples"
CHECKPOINT = REPO / "models" / "minilm-wordnet-glnet"


@pytest.mark.skipif(not CHECKPOINT.is_dir(), reason="no built-in MiniLM checkpoint in models/")
def test_score_without_arguments_scores_the_bundled_examples(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lolctl", "score", "--format", "json"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bundled example adapters" in proc.stderr and "Traceback" not in proc.stderr
    records = json.loads(proc.stdout)["records"]
    assert sorted(Path(r["source"]).name for r in records) == sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    labels = json.loads((CHECKPOINT / "config.json").read_text())
    for rec in records:
        pred = rec["prediction"]
        assert rec["status"] == "ok" and pred["checkpoint"] == labels["name"]
        assert pred["ood"]["flag"] is False, pred["ood"]
        quality = pred["tasks"]["quality"]
        lo, hi = quality["interval"]
        assert math.isfinite(quality["value"]) and 0.0 <= lo <= quality["value"] <= hi <= 1.0  # an accuracy
        assert pred["tasks"]["log_size"]["unit"] == "log2 pairs" and 5.0 <= pred["tasks"]["log_size"]["value"] <= 10.0
        probs = pred["tasks"]["membership"]["probs"]
        assert "noun.animal" in probs and all(0.0 <= p <= 1.0 for p in probs.values())
        noise = pred["tasks"]["noise"]["probs"]
        assert abs(sum(noise.values()) - 1.0) < 1e-5
