"""What averaging several trained checkpoints would give: each checkpoint's calibrated predictions on a zoo's split,
averaged over the first 1, 2, ... of them (regression values and class / topic probabilities), scored with lolctl's
own metrics. A measurement for choosing `lolctl train --ensemble N`, not a way to build one.

    python scripts/seed_ensemble.py runs/comparison/shipped-s0 runs/comparison/shipped-s1 runs/comparison/shipped-s2 \
        --zoo tests/data/minilm-wordnet-test --split test
"""

from __future__ import annotations

import argparse

import numpy as np

from lolctl.nn import metrics
from lolctl.nn.workflow import predict_zoo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--zoo", default="tests/data/minilm-wordnet-test")
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)
    runs = [predict_zoo(c, args.zoo, args.split, device="cpu") for c in args.checkpoints]
    tasks, y = runs[0].tasks, runs[0].y
    print(f"| checkpoints averaged | {' | '.join(t.name for t in tasks)} |")
    print("|---" * (len(tasks) + 1) + "|")
    for k in range(1, len(runs) + 1):
        cells = []
        for t in tasks:
            pred = np.mean([r.pred[t.name] for r in runs[:k]], axis=0)
            if t.kind == "regression":
                cells.append(f"R² {metrics.regression_metrics(y[t.name][:, 0], pred[:, 0])['r2']:.3f}")
            elif t.kind == "multilabel":
                cells.append(f"AUROC {metrics.multilabel_metrics(y[t.name], pred, list(t.labels))['auroc']:.3f}")
            else:
                cells.append(f"acc {metrics.multiclass_metrics(y[t.name], pred, list(t.labels))['accuracy']:.3f}")
        print(f"| {k} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
