"""A/B check behind the minilm-wordnet design: which side should carry the LoRA?

Trains N single-topic LoRAs (clean, lr 1.5e-3 … 3e-3, 50 steps, batch 16, 200 pairs) with the LoRA on the lemma
side or on the definition side, and asks a zero-parameter GL-invariant probe which topic each one was trained on:
the topic whose embeddings-layer tokens ΔW of layer 0 acts on most strongly, tr(ΔW Σ_topic ΔWᵀ).
Usage: HF_HUB_OFFLINE=1 python scripts/zoo_ab_side.py {lemma,gloss} [N]      (frozen work cached in /tmp/zoo-ab)
Result recorded in docs/zoo.md (N = 20): lemma side 55 % correct, definition side 90 % (chance 10 %).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from lolctl.zoo.recipes.base import Job
from lolctl.zoo.recipes.minilm_wordnet import LENGTHS, MinilmWordnet, WordnetSettings


def main() -> None:
    torch.set_num_threads(1)
    side, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20
    recipe = MinilmWordnet(WordnetSettings(adapted=side, p_noisy=0.0, p_verbs=0.0, topic_mix=(1.0,), lr_min=1.5e-3,
                                           lr_max=3e-3, steps_min=50, steps_max=50, batches=(16,), size_min=200,
                                           size_max=200))
    zoo = Path("/tmp/zoo-ab")
    zoo.mkdir(exist_ok=True)
    recipe.prepare(zoo)
    ctx = recipe.load(zoo)
    moments = []
    for t in range(len(recipe.settings.topics)):
        rows = torch.tensor([i for f in LENGTHS for i in ctx["pools"][(t, f)][:150]])
        ids, mask = ctx[f"{side}_ids"][rows].long(), ctx[f"{side}_mask"][rows].bool()
        X = ctx["bert"].embed(ids)[mask].double()
        moments.append(X.T @ X / len(X))
    ranks, start = [], time.perf_counter()
    for i in range(count):
        out = recipe.train(ctx, Job(i, "val", 4))
        topic = next(k for k, name in enumerate(recipe.settings.topics) if out.targets[f"membership[{name}]"])
        response = np.zeros(len(moments))
        for name in ("query", "value"):
            U, V = out.factors[f"base_model.model.encoder.layer.0.attention.self.{name}"]
            M = (U @ V.T).double()
            e = np.array([torch.trace(M @ S @ M.T).item() for S in moments])
            response += np.log(e / e.mean())
        ranks.append(int((response > response[topic]).sum()))
    print(f"{side}: topic named correctly {np.mean(np.array(ranks) == 0):.2f}, mean rank of the true topic "
          f"{np.mean(ranks):.2f}, {(time.perf_counter() - start) / count:.1f} s/LoRA")


if __name__ == "__main__":
    main()
