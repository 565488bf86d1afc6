"""How much of a trained MLP+Dense member survives ``store_rank=q``: truncate every dense member of a checkpoint with
the model's own ``finalize`` at each rank q and score the zoo's split (docs/models.md, ``mlp_dense`` ``store_rank``).

    python3 scripts/dense_store_rank.py runs/exp/dense-s0 tests/data/minilm-wordnet-test --ranks 4 16 64
"""

from __future__ import annotations

import argparse

from lolctl.nn.baselines import MLPDense
from lolctl.nn.checkpoint import load_checkpoint
from lolctl.nn.data import load_factors, targets
from lolctl.nn.train import evaluate
from lolctl.nn.workflow import _eval_rows
from lolctl.zoo.format import load_zoo


def headline(found: dict) -> str:
    return "  ".join(f"{name} {m.get('accuracy', m.get('auroc', m.get('r2'))):.3f}" for name, m in found.items()
                     if isinstance(m, dict))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("zoo")
    ap.add_argument("--split", default="test")
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 16, 64])
    args = ap.parse_args()
    zoo = load_zoo(args.zoo)
    batch = None
    for q in [0, *args.ranks]:
        ckpt = load_checkpoint(args.checkpoint, "cpu")
        dense = [(i, m) for i, m in enumerate(getattr(ckpt.model, "models", [ckpt.model])) if isinstance(m, MLPDense)]
        if not dense:
            raise SystemExit(f"{args.checkpoint}: no MLP+Dense member")
        tasks = tuple(t for m in dense for t in m[1].tasks)
        if batch is None:
            rows, _ = _eval_rows(zoo, ckpt.config, args.split)
            batch = load_factors(zoo)[0].respec(ckpt.spec).select(rows)
            y = {t.name: targets(zoo, t)[rows] for t in tasks}
        for _, model in dense:
            if q:
                model.config.store_rank = q
                model.finalize()
        pred = ckpt.predict_batch(batch)
        found = evaluate(tasks, {t.name: pred[t.name] for t in tasks}, y)
        print(f"{'dense' if not q else f'q = {q}':>8}  {headline(found)}", flush=True)


if __name__ == "__main__":
    main()
