"""The paper's baselines, with GL-net's interface (``forward(batch) → {task: outputs}``).

- ``mlp``: flatten every U and V (fixed rank; lower ranks are zero-padded). No symmetry.
- ``mlp_svd``: singular values of each ΔW (QR-based, ΔW never formed), zero-padded to ``max_rank``. GL-invariant.
- ``mlp_oalign``: orthogonal Procrustes of each module's stacked [U; V] to a template LoRA (the first training
  adapter), then flatten. O(r)-invariant, NOT GL-invariant.
- ``mlp_dense``: flatten each ΔW = U Vᵀ. GL-invariant and complete, but n·m inputs per module: refuses (L173) when
  the first layer would exceed ``memory_budget_mb``.
- ``transformer``: one token per module from the SVD canonical form (top singular triplets, balanced as
  left·√S and right·√S, plus all singular values), a per-module embedding, a TransformerEncoder, mean pooling.
  GL-invariant wherever the top singular values are distinct (the canonical form is then unique).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lolctl.canonical import singular_values, svd_factors
from lolctl.errors import LolctlError
from lolctl.nn.base import LoraModel, ModelConfig, per_module_weight
from lolctl.nn.batch import LoraBatch
from lolctl.nn.spec import InputSpec, TaskSpec


def _fit_rank(t: torch.Tensor, R: int) -> torch.Tensor:
    """Zero-pad or truncate the last dim to R."""
    return torch.nn.functional.pad(t, (0, R - t.shape[-1])) if t.shape[-1] < R else t[..., :R]


@dataclass
class MLPConfig(ModelConfig):
    rank: int = 4  # the fixed rank of the flattened factors (lower ranks are zero-padded; higher are refused)


class MLP(LoraModel):
    name = "mlp"
    config_class = MLPConfig
    invariance = "none"
    config: MLPConfig

    def __init__(self, config: MLPConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        self.build_head(sum(mod.n + mod.m for mod in spec.modules) * config.rank)

    @property
    def max_rank(self) -> int | None:
        return self.config.rank

    def features(self, batch: LoraBatch) -> torch.Tensor:
        R, B = self.config.rank, batch.size
        parts = [torch.cat([_fit_rank(g.U, R), _fit_rank(g.V, R)], dim=2).reshape(B, -1) for g in batch.groups]
        return torch.cat(parts, dim=1)


@dataclass
class MLPSVDConfig(ModelConfig):
    max_rank: int = 32  # singular values per module (zero-padded)


class MLPSVD(LoraModel):
    name = "mlp_svd"
    config_class = MLPSVDConfig
    config: MLPSVDConfig

    def __init__(self, config: MLPSVDConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        self.build_head(len(spec) * config.max_rank)

    @property
    def max_rank(self) -> int | None:
        return self.config.max_rank

    def features(self, batch: LoraBatch) -> torch.Tensor:
        parts = [_fit_rank(singular_values(g.U, g.V).to(g.U.dtype), self.config.max_rank) for g in batch.groups]
        return torch.cat(parts, dim=1).reshape(batch.size, -1)


class MLPOAlign(LoraModel):
    name = "mlp_oalign"
    config_class = MLPConfig
    invariance = "O(r) per module (not GL(r))"
    config: MLPConfig

    def __init__(self, config: MLPConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        for k, g in enumerate(spec.groups):  # template [U; V] per module, set by prepare()
            self.register_buffer(f"template{k}", torch.zeros(len(g.indices), g.n + g.m, config.rank))
        self.build_head(sum(mod.n + mod.m for mod in spec.modules) * config.rank)

    @property
    def max_rank(self) -> int | None:
        return self.config.rank

    @torch.no_grad()
    def prepare(self, batch: LoraBatch) -> None:
        super().prepare(batch)
        first, _ = self.normalise(batch.select([0]))
        for k, g in enumerate(first.groups):
            X = torch.cat([g.U[0], g.V[0]], dim=1)  # (L_g, n + m, R)
            getattr(self, f"template{k}").copy_(_fit_rank(X, self.config.rank))

    def features(self, batch: LoraBatch) -> torch.Tensor:
        parts = []
        for k, g in enumerate(batch.groups):
            X = _fit_rank(torch.cat([g.U, g.V], dim=2), self.config.rank)  # (B, L_g, n + m, r)
            T = getattr(self, f"template{k}").to(X.dtype)  # (L_g, n + m, r)
            P, _, Qh = torch.linalg.svd(X.transpose(-1, -2) @ T)  # Procrustes: argmin_Q ‖X Q − T‖, Q orthogonal
            parts.append((X @ (P @ Qh)).reshape(batch.size, -1))
        return torch.cat(parts, dim=1)


@dataclass
class MLPDenseConfig(ModelConfig):
    memory_budget_mb: float = 2048.0  # refuse when the first layer (weights, grads, 2 AdamW moments) needs more


class MLPDense(LoraModel):
    name = "mlp_dense"
    config_class = MLPDenseConfig
    config: MLPDenseConfig

    def __init__(self, config: MLPDenseConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        d_in = sum(mod.n * mod.m for mod in spec.modules)
        width = config.head_hidden if config.head_layers else sum(t.out_dim for t in tasks)
        need_mb = 4 * 4 * d_in * width / 2**20
        if need_mb > config.memory_budget_mb:
            raise LolctlError(
                "L173",
                "mlp_dense",
                f"{d_in:,} dense inputs (sum of n*m over {len(spec)} modules) need ~{need_mb:,.0f} MB for the first "
                f"layer, over the budget of {config.memory_budget_mb:,.0f} MB",
                "use glnet or mlp_svd, or raise memory_budget_mb / lower head_hidden",
            )
        self.build_head(d_in)

    @property
    def rank_free(self) -> bool:
        return True  # ΔW itself, whatever the rank

    def features(self, batch: LoraBatch) -> torch.Tensor:
        parts = [torch.einsum("blnr,blmr->blnm", g.U, g.V).reshape(batch.size, -1) for g in batch.groups]
        return torch.cat(parts, dim=1)


@dataclass
class TransformerConfig(ModelConfig):
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    triplets: int = 4  # top singular triplets per module token (zero-padded)
    max_rank: int = 32  # singular values per module token (zero-padded)


class Transformer(LoraModel):
    name = "transformer"
    config_class = TransformerConfig
    invariance = "GL(r) per module (where the top singular values are distinct)"
    config: TransformerConfig

    def __init__(self, config: TransformerConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        if config.d_model % max(config.heads, 1):
            raise LolctlError("L180", "transformer config", "d_model must be divisible by heads")
        k, d = config.triplets, config.d_model
        self.embed = nn.ParameterList(
            [per_module_weight(len(g.indices), d, (g.n + g.m) * k + config.max_rank) for g in spec.groups]
        )
        self.position = nn.Parameter(torch.zeros(len(spec), d))
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, config.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.build_head(d)

    @property
    def max_rank(self) -> int | None:
        return self.config.max_rank

    def features(self, batch: LoraBatch) -> torch.Tensor:
        k, B = self.config.triplets, batch.size
        tokens = []
        for j, g in enumerate(batch.groups):
            left, S, right = svd_factors(g.U, g.V)  # (B, L_g, n, R), (B, L_g, R), (B, L_g, m, R)
            root = S.sqrt().unsqueeze(-2)
            balanced = torch.cat([_fit_rank(left * root, k), _fit_rank(right * root, k)], dim=2)
            x = torch.cat([balanced.flatten(2), _fit_rank(S, self.config.max_rank)], dim=2).to(g.U.dtype)
            tokens.append(torch.einsum("ldf,blf->bld", self.embed[j].to(x.dtype), x))
        x = torch.cat(tokens, dim=1) + self.position.to(tokens[0].dtype)  # (B, L, d) in slot order
        return self.encoder(x).mean(dim=1).reshape(B, -1)
