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

import warnings
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
    fixed_features = True
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
    fixed_features = True
    config_class = MLPSVDConfig
    config: MLPSVDConfig

    def __init__(self, config: MLPSVDConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        self.build_head(len(spec) * config.max_rank)

    @property
    def max_rank(self) -> int | None:
        return self.config.max_rank

    def features(self, batch: LoraBatch) -> torch.Tensor:
        return _fit_rank(_singular_values(batch), self.config.max_rank).reshape(batch.size, -1)

    def scaled_features(self, batch: LoraBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The singular values of the unscaled batch, computed once per batch for every MLP+SVD member of a
        composite, divided by what ΔW_i is divided by (σ(ΔW / c) = σ(ΔW) / c for c > 0)."""
        root, lognorm = self.module_scale(batch)
        order = [i for g in batch.groups for i in g.indices]  # the singular values' module order
        divisor = root[:, order].square().unsqueeze(-1).to(batch.dtype)
        return (_fit_rank(_singular_values(batch), self.config.max_rank) / divisor).reshape(batch.size, -1), lognorm


def _singular_values(batch: LoraBatch) -> torch.Tensor:
    """(B, L, R) singular values of every module's ΔW, modules in shape-group order; once per batch."""
    return batch.cached("singular_values", (), lambda: torch.cat(
        [singular_values(g.U, g.V).to(g.U.dtype) for g in batch.groups], dim=1))


class MLPOAlign(LoraModel):
    name = "mlp_oalign"
    config_class = MLPConfig
    invariance = "O(r) per module (not GL(r))"
    fixed_features = True  # the template is set by prepare()
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


# With low_rank: the trained W_hi = A_hi B_hiᵀ start this many times larger than a dense layer's default init.
# Measured on the 1,024-LoRA MiniLM split (noise + gloss length, seed 0; docs/models.md): gains 1, 10, 100, 900
# (factors x1, x3.2, x10, x30) gave validation losses 0.203 / 0.572, 0.199 / 0.524, 0.169 / 0.458, 0.414 / 0.659.
LOW_RANK_INIT_GAIN = 100.0


@dataclass
class MLPDenseConfig(ModelConfig):
    memory_budget_mb: float = 2048.0  # refuse when the first layer (weights, grads, 2 AdamW moments) needs more
    store_rank: int = 0  # if > 0: after training, keep each hidden unit's weights on each module's ΔW at this rank
    factored: bool = False  # set by ``finalize``: the first layer is stored as rank-``store_rank`` factors
    low_rank: int = 0  # if > 0: train the first layer as rank-q factors from the start (ΔW never formed)


class MLPDense(LoraModel):
    """An MLP on the flattened ΔW_i = U_i V_iᵀ of every module: GL-invariant because it reads ΔW itself.

    The first layer has one n × m weight matrix W_hi per hidden unit h and module i and computes Σ_i <W_hi, ΔW_i>
    (1.77 M inputs per unit for MiniLM's 12 modules). With ``store_rank=q`` training is unchanged, then ``finalize``
    truncates every W_hi to its top q singular triplets, W_hi ≈ A_hi B_hiᵀ, and the model keeps only the factors:
    <A Bᵀ, U Vᵀ> = Σ_qr (Aᵀ U)_qr (Bᵀ V)_qr, so the stored first layer is H × Σ_i (n_i + m_i) × q floats instead of
    H × Σ_i n_i m_i, and no ΔW is formed when scoring. Why: on the MiniLM zoo the trained W_hi are close to low-rank
    — truncating the gloss-length member to q = 16 kept test accuracy within about one point (docs/models.md) — while
    the dense layer made a two-member checkpoint 448 MB.

    With ``low_rank=q`` the first layer is those factors from the start, randomly initialised so that the entries of
    W_hi = A_hi B_hiᵀ have LOW_RANK_INIT_GAIN times the dense layer's default std: ~Σ_i (n_i + m_i) q H weights to
    train instead of Σ_i n_i m_i H, and no ΔW is formed in training either (docs/models.md measures the trade).
    """

    name = "mlp_dense"
    config_class = MLPDenseConfig
    config: MLPDenseConfig

    def __init__(self, config: MLPDenseConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        if config.store_rank and not config.head_layers:
            raise LolctlError("L180", "mlp_dense store_rank", "needs a hidden layer to factor (head_layers >= 1)",
                              "set head_layers=1 or more, or store_rank=0")
        if config.low_rank:
            if config.store_rank not in (0, config.low_rank):
                raise LolctlError("L180", "mlp_dense low_rank", f"low_rank={config.low_rank} trains the stored "
                                  f"factors, so store_rank={config.store_rank} cannot differ",
                                  "drop store_rank or set it to low_rank")
            config.store_rank, fresh = config.low_rank, not config.factored
            config.factored = True
        else:
            fresh = False
        if config.factored:
            if not config.store_rank:
                raise LolctlError("L180", "mlp_dense factored", "a factored first layer needs store_rank > 0",
                                  "retrain the checkpoint")
            H, q = config.head_hidden, config.store_rank
            self.first_A = nn.ParameterList([nn.Parameter(torch.zeros(len(g.indices), g.n, H * q))
                                             for g in spec.groups])
            self.first_B = nn.ParameterList([nn.Parameter(torch.zeros(len(g.indices), g.m, H * q))
                                             for g in spec.groups])
            if fresh:  # std((A Bᵀ)_jk) = √q σ² = LOW_RANK_INIT_GAIN / √(3 d_in) (nn.Linear's default: 1 / √(3 d_in))
                sigma = (LOW_RANK_INIT_GAIN**2 / (3.0 * sum(mod.n * mod.m for mod in spec.modules) * q)) ** 0.25
                for factor in (*self.first_A, *self.first_B):
                    nn.init.normal_(factor, std=sigma)
            with warnings.catch_warnings():  # without unit_norm head[0] reads nothing (Linear(0, H): its bias only)
                warnings.simplefilter("ignore", UserWarning)
                self.build_head(0)  # the dense part of the first layer is the factors; head[0] reads the log-norms
            return
        d_in = sum(mod.n * mod.m for mod in spec.modules)
        width = config.head_hidden if config.head_layers else sum(t.out_dim for t in tasks)
        need_mb = 4 * 4 * d_in * width / 2**20
        if need_mb > config.memory_budget_mb:
            raise LolctlError(
                "L173",
                "mlp_dense",
                f"{d_in:,} dense inputs (sum of n*m over {len(spec)} modules) need ~{need_mb:,.0f} MB for the first "
                f"layer, over the budget of {config.memory_budget_mb:,.0f} MB",
                "use glnet or mlp_svd, or raise memory_budget_mb / lower head_hidden (store_rank shrinks only "
                "the saved layer, not training)",
            )
        self.build_head(d_in)

    @property
    def rank_free(self) -> bool:
        return True  # ΔW itself, whatever the rank

    def features(self, batch: LoraBatch) -> torch.Tensor:
        if self.config.factored:
            return torch.zeros(batch.size, 0, dtype=batch.dtype, device=batch.device)
        parts = [torch.einsum("blnr,blmr->blnm", g.U, g.V).reshape(batch.size, -1) for g in batch.groups]
        return torch.cat(parts, dim=1)

    def representation(self, batch: LoraBatch) -> torch.Tensor:
        if not self.config.factored:
            return super().representation(batch)
        scaled, lognorm = self.normalise(batch)
        x = lognorm if lognorm is not None else self.features(scaled)
        first = self.head[0]
        assert isinstance(first, nn.Linear)
        return self.head[1:](first(x.to(first.weight.dtype)) + self.factored_units(scaled))

    def factored_units(self, batch: LoraBatch) -> torch.Tensor:
        """Σ_i <A_hi B_hiᵀ, ΔW_i> per hidden unit h (B, H): one bmm per shape group and side, ΔW never formed."""
        H, q = self.config.head_hidden, self.config.store_rank
        B, R = batch.size, batch.max_rank
        out = torch.zeros(B, H, dtype=batch.dtype, device=batch.device)
        for k, g in enumerate(batch.groups):
            L_g = len(g.indices)
            a = torch.bmm(self.first_A[k].to(g.U.dtype).mT, g.flat_U()).view(L_g, H, q, B, R)  # Aᵀ U
            b = torch.bmm(self.first_B[k].to(g.V.dtype).mT, g.flat_V()).view(L_g, H, q, B, R)  # Bᵀ V
            out = out + torch.einsum("lhqbr,lhqbr->bh", a, b)
        return out

    @torch.no_grad()
    def finalize(self) -> bool:
        """With ``store_rank=q``: replace the trained dense first layer by its per-unit, per-module rank-q truncation
        (SVD, the best rank-q approximation in Frobenius norm) and keep only the factors."""
        q = self.config.store_rank
        if not q or self.config.factored:
            return False
        first = self.head[0]
        assert isinstance(first, nn.Linear)
        W, H = first.weight.detach(), self.config.head_hidden
        As, Bs, offset = [], [], 0
        for g in self.spec.groups:
            L_g = len(g.indices)
            block = W[:, offset : offset + L_g * g.n * g.m].reshape(H, L_g, g.n, g.m).transpose(0, 1).double()
            offset += L_g * g.n * g.m
            P, S, Qh = torch.linalg.svd(block, full_matrices=False)  # (L_g, H, n, k), (L_g, H, k), (L_g, H, k, m)
            k = min(q, S.shape[-1])
            root = S[..., :k].sqrt().unsqueeze(-2)
            A = torch.zeros(L_g, H, g.n, q, dtype=W.dtype, device=W.device)
            Bm = torch.zeros(L_g, H, g.m, q, dtype=W.dtype, device=W.device)
            A[..., :k] = (P[..., :k] * root).to(W.dtype)
            Bm[..., :k] = (Qh[..., :k, :].mT * root).to(W.dtype)
            As.append(A.permute(0, 2, 1, 3).reshape(L_g, g.n, H * q))  # columns: unit-major, then rank
            Bs.append(Bm.permute(0, 2, 1, 3).reshape(L_g, g.m, H * q))
        rest = W[:, offset:]  # the log-norm inputs (unit_norm), else nothing
        self.config.factored = True
        self.first_A = nn.ParameterList([nn.Parameter(a.contiguous()) for a in As])
        self.first_B = nn.ParameterList([nn.Parameter(b.contiguous()) for b in Bs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            head0 = nn.Linear(rest.shape[1], H).to(device=W.device, dtype=W.dtype)
        head0.weight.copy_(rest)
        head0.bias.copy_(first.bias)
        self.head[0] = head0
        return True


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
