"""What every lolctl model shares: a config dataclass, an input spec, task heads, and input normalisation.

A model computes a feature vector per adapter (``features(batch)`` → (B, D)); an MLP with one linear output per task
turns it into predictions. ``forward(batch)`` returns ``{task name: (B, out_dim)}`` — normalised values for regression,
logits for classification. Data-dependent buffers (the per-module input scale; O-Align's template) are fitted by
``prepare(train_batch)`` before training and saved with the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from lolctl.errors import LolctlError
from lolctl.nn.batch import GroupFactors, LoraBatch
from lolctl.nn.spec import InputSpec, TaskSpec


@dataclass
class ModelConfig:
    """Fields shared by all models (the invariant head)."""

    head_hidden: int = 128  # width of the head MLP (h_inv)
    head_layers: int = 2  # hidden layers of the head MLP
    dropout: float = 0.0  # dropout in the head MLP
    unit_norm: bool = False  # scale each module's ΔW to unit norm and give the head its log-norm (invariant) instead

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, int) or value < 0):
                raise LolctlError("L180", f"model config {f.name}", f"must be a non-negative integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LolctlError("L180", "model config dropout", f"must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mlp(d_in: int, hidden: int, layers: int, dropout: float) -> tuple[nn.Sequential, int]:
    """``layers`` × (Linear, GELU, Dropout); returns the stack and its output width."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.GELU()]
        if dropout:
            mods.append(nn.Dropout(dropout))
        d = hidden
    return nn.Sequential(*mods), d


SMALL_BATCH = 16  # frobenius_norms: up to this many adapters, one product per shape group (copies are tiny)


def frobenius_norms(batch: LoraBatch) -> torch.Tensor:
    """‖ΔW_i‖_F per module (B, L) from the r × r Gram matrices: ‖U Vᵀ‖² = tr((UᵀU)(VᵀV)); ΔW is never formed.

    One bmm per module: a module's (B, n, R) slice is a strided view in either batch layout, never copied; for a
    batch of at most SMALL_BATCH adapters one product per shape group instead (scoring one adapter at a time).
    Computed once per batch (``LoraBatch.cached``)."""
    return batch.cached("frobenius_norms", (), lambda: _frobenius_norms(batch))


def _frobenius_norms(batch: LoraBatch) -> torch.Tensor:
    out = torch.zeros(batch.size, len(batch.spec), dtype=batch.dtype, device=batch.device)
    for g in batch.groups:
        if batch.size <= SMALL_BATCH:  # a few adapters (scoring): one product per group beats L tiny ones
            gu, gv = g.U.transpose(-1, -2) @ g.U, g.V.transpose(-1, -2) @ g.V  # (B, L_g, R, R)
            out[:, list(g.indices)] = (gu * gv).sum((-1, -2)).clamp_min(0).sqrt()
            continue
        for j, i in enumerate(g.indices):
            U, V = g.U[:, j], g.V[:, j]  # (B, n, R), (B, m, R)
            gu, gv = U.transpose(-1, -2) @ U, V.transpose(-1, -2) @ V  # (B, R, R)
            out[:, i] = (gu * gv).sum((-1, -2)).clamp_min(0).sqrt()
    return out


class LoraModel(nn.Module):
    """Base class: subclasses set ``name``/``config_class`` and implement ``features`` (and ``feature_dim``)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    invariance: ClassVar[str] = "GL(r) per module"  # documented symmetry of the outputs
    input_scale: torch.Tensor  # (L,) buffer
    head: nn.Sequential
    outputs: nn.ModuleDict
    # True when ``head_input`` has no trainable weights and no randomness once ``prepare`` has run (MLP+SVD's singular
    # values): ``fit`` then computes it once per adapter instead of on every step of every epoch.
    fixed_features: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.tasks = tuple(tasks)
        # ΔW_i is divided by input_scale[i] before anything else (U and V each by its square root): a scalar per
        # module commutes with GL(r), so every symmetry of the model survives.
        self.register_buffer("input_scale", torch.ones(len(spec)))

    @property
    def max_rank(self) -> int | None:
        """Largest rank the model accepts (None: any rank)."""
        return None

    @property
    def rank_free(self) -> bool:
        """True when the features are made the same way at every rank (no input slot per singular value or factor
        column), so a model trained at one rank has a chance at another. False unless a model says so: one fed
        σ_1..σ_k learns from rank-4 adapters what a zero σ_2 means, and rank-1 adapters then lie off its inputs."""
        return False

    def build_head(self, d_in: int) -> None:
        d_in += len(self.spec) if self.config.unit_norm else 0  # log ‖ΔW_i‖ per module
        self.head, d = mlp(d_in, self.config.head_hidden, self.config.head_layers, self.config.dropout)
        self.outputs = nn.ModuleDict({t.name: nn.Linear(d, t.out_dim) for t in self.tasks})

    def features(self, batch: LoraBatch) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def prepare(self, batch: LoraBatch) -> None:
        """Fit data-dependent buffers on the training set: the median ‖ΔW_i‖_F of each module."""
        scale = frobenius_norms(batch.to(dtype=torch.float64)).median(dim=0).values
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.input_scale.copy_(scale.to(self.input_scale))

    def finalize(self) -> bool:
        """Called once after training, on the best weights, before anything is measured or saved: a model that stores
        a compressed form of what it trained (``mlp_dense`` with ``store_rank``) switches to it here and returns
        True."""
        return False

    def check_rank(self, batch: LoraBatch) -> None:
        limit = self.max_rank
        if limit is not None and int(batch.ranks.max()) > limit:
            bad = int(batch.ranks.max(dim=0).values.argmax())
            raise LolctlError(
                "L171",
                self.spec.modules[bad].name,
                f"rank {int(batch.ranks.max())} exceeds the largest rank the {self.name} model accepts ({limit})",
                "use a GL-net checkpoint (any rank) or retrain with a larger max rank",
            )

    def module_scale(self, batch: LoraBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """√ of what ΔW_i is divided by, per adapter and module (B, L): √input_scale[i], with ``unit_norm`` times
        √‖ΔW_i‖_F, whose log-norms (B, L) are returned too (else None).

        Both are positive scalars per module (the norm is GL-invariant), so equivariance is untouched.
        """
        root = self.input_scale.to(batch.dtype).sqrt().expand(batch.size, -1)  # (B, L)
        lognorm = None
        if self.config.unit_norm:
            norms = frobenius_norms(batch) / self.input_scale.to(batch.dtype)
            norms = norms.clamp_min(1e-6)  # an all-zero module stays zero, with log-norm log(1e-6)
            lognorm, root = norms.log(), root * norms.sqrt()
        return root, lognorm

    def normalise(self, batch: LoraBatch) -> tuple[LoraBatch, torch.Tensor | None]:
        """Divide U and V of module i by ``module_scale`` (so ΔW_i by its square), returning log-norms (B, L)."""
        root, lognorm = self.module_scale(batch)
        groups = []
        for g in batch.groups:
            s = root[:, list(g.indices)].unsqueeze(-1).unsqueeze(-1)  # (B, L_g, 1, 1)
            groups.append(GroupFactors(g.indices, g.U / s, g.V / s))
        return LoraBatch(batch.spec, tuple(groups), batch.ranks), lognorm

    def scaled_features(self, batch: LoraBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``features`` of the normalised batch, and the log-norms. A model whose features are linear in each
        module's U and V up to its first nonlinearity (GL-net) overrides this to scale there instead: dividing
        the whole input is a full-size copy on every forward."""
        scaled, lognorm = self.normalise(batch)
        return self.features(scaled), lognorm

    def head_input(self, batch: LoraBatch) -> torch.Tensor:
        """What the head reads (B, d): the features of the normalised batch, then the log-norms under ``unit_norm``."""
        self.check_rank(batch)
        x, lognorm = self.scaled_features(batch)
        return x if lognorm is None else torch.cat([x, lognorm.to(x.dtype)], dim=1)

    def representation(self, batch: LoraBatch) -> torch.Tensor:
        """The head's representation (B, head_hidden) that the task outputs read: invariant like the outputs."""
        return self.head(self.head_input(batch))

    def read_out(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task outputs (standardised values or logits) from the head's representation."""
        return {name: layer(h) for name, layer in self.outputs.items()}

    def forward(self, batch: LoraBatch) -> dict[str, torch.Tensor]:
        return self.read_out(self.representation(batch))


def per_module_weight(count: int, d_out: int, d_in: int, gain: float = 1.0) -> nn.Parameter:
    """A stack of ``count`` independent (d_out × d_in) matrices, one per module, initialised like nn.Linear."""
    return nn.Parameter(torch.randn(count, d_out, d_in) * (gain / math.sqrt(d_in)))
