"""Inference with any lolctl model: predictions in the targets' units, head representations, update magnitudes.

What ``lolctl score`` needs from a trained model, apart from :mod:`lolctl.nn.train` (which fits models and uses
these for its metrics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lolctl.nn.base import LoraModel, frobenius_norms
from lolctl.nn.batch import LoraBatch


@torch.no_grad()
def predict(model: LoraModel, batch: LoraBatch, norm: dict[str, Any], bs: int = 256) -> dict[str, np.ndarray]:
    """Predictions in the targets' units: regression values (N, k), multilabel / multiclass probabilities (N, k)."""
    if model.training:  # eval() walks every submodule: ~1 ms, a third of a one-adapter prediction
        model.eval()
    outs: dict[str, list[np.ndarray]] = {t.name: [] for t in model.tasks}
    for start in range(0, batch.size, bs):
        out = model(batch.select(range(start, min(batch.size, start + bs))))
        for t in model.tasks:
            o = out[t.name].double()
            if t.kind == "regression":
                o = o * torch.tensor(norm[t.name]["std"], dtype=o.dtype, device=o.device) + torch.tensor(
                    norm[t.name]["mean"], dtype=o.dtype, device=o.device
                )
            elif t.kind == "multilabel":
                o = torch.sigmoid(o)
            else:
                o = torch.softmax(o, dim=-1)
            outs[t.name].append(o.cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


@torch.no_grad()
def embeddings(model: LoraModel, batch: LoraBatch, bs: int = 256) -> np.ndarray:
    """(N, head_hidden) head representations of every adapter (for local intervals)."""
    if model.training:
        model.eval()
    return np.concatenate([model.representation(batch.select(range(s, min(batch.size, s + bs)))).double().cpu().numpy()
                           for s in range(0, batch.size, bs)])


@torch.no_grad()
def scale_stats(model: LoraModel, batch: LoraBatch) -> torch.Tensor:
    """Per adapter: mean over modules of log(‖ΔW_i‖_F / input_scale_i) — how far from the training median."""
    norms = frobenius_norms(batch.to(dtype=torch.float64)).clamp_min(1e-30)
    return (norms / model.input_scale.double().cpu().to(norms.device)).log().mean(dim=1)
