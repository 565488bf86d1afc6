"""GL-net: a GL(r)^L-invariant network on LoRA factors (Putterman et al., arXiv 2410.04207, §4).

Per module i the equivariant layers act on the left only: (U, V) ↦ (W1_i U, W2_i V) — by Schur's lemma the only
GL(r)-equivariant linear maps (no U↔V mixing, no bias). Between layers the GL nonlinearity gates whole rows with
signs of the invariant U'V'ᵀ: rows of U' by 1[U'V'ᵀ 1 > 0], rows of V' by 1[1ᵀ U'V'ᵀ > 0], computed as U'(V'ᵀ1) and
V'(U'ᵀ1) so the h × h product is never formed. Dropout drops whole rows (a diagonal on the left, so it commutes with
g). The invariant head takes each module's U'V'ᵀ (h × h), concatenates over modules and feeds an MLP.

Shapes: B adapters, L modules (L_g in a shape group), n × m per module, R padded rank, h hidden width. Only the first
layer depends on (n, m), so it runs once per shape group — one bmm on the group's (L_g, n, B·R) layout, which
``LoraBatch`` stores without a copy — and the per-module input scale is applied to its small output; from then on
all L modules are one (B, L, h, R) tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lolctl.canonical import singular_values
from lolctl.errors import LolctlError
from lolctl.nn.base import LoraModel, ModelConfig, frobenius_norms, per_module_weight
from lolctl.nn.batch import LoraBatch
from lolctl.nn.spec import InputSpec, TaskSpec


@dataclass
class GLNetConfig(ModelConfig):
    hidden: int = 32  # h_equiv: rows of U' and V' per module
    layers: int = 2  # equivariant layers (the first maps n → h and m → h; the rest are h × h per module)
    equiv_dropout: float = 0.0  # probability of dropping a whole row of U' / V'
    singular_values: int = 0  # if > 0, also feed the top-k singular values of each ΔW to the head (invariant too)
    data_init: bool = True  # first layer from the training set's principal directions of ΔW (see prepare)
    anchors: int = 0  # if > 0, also feed the head each module's cosine similarity to this many training adapters
    anchor_rank: int = 0  # set by prepare: the (padded) rank of the stored anchors
    probes: str = ""  # a probe file (lolctl zoo probes): base-model input groups whose response to ΔW the head sees
    probe_groups: int = 0  # set from the probe file: groups G, input width d, basis columns k (kept as buffers)
    probe_dim: int = 0
    probe_k: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1 or self.layers < 1:
            raise LolctlError("L180", "glnet config", "hidden and layers must be at least 1")
        if not 0.0 <= self.equiv_dropout < 1.0:
            raise LolctlError("L180", "glnet config equiv_dropout", f"must be in [0, 1), got {self.equiv_dropout}")


def gl_gate(U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GL nonlinearity on (..., h, R) factors: keep the rows whose row / column sum of U Vᵀ is positive."""
    left = torch.einsum("...hr,...r->...h", U, V.sum(-2))  # U (Vᵀ 1)
    right = torch.einsum("...hr,...r->...h", V, U.sum(-2))  # V (Uᵀ 1) = (1ᵀ U Vᵀ)ᵀ
    return U * (left > 0).unsqueeze(-1).to(U.dtype), V * (right > 0).unsqueeze(-1).to(V.dtype)


def row_dropout(t: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole rows of (..., h, R) factors: a random diagonal on the left, which commutes with any g."""
    if not training or p == 0.0:
        return t
    keep = torch.rand(t.shape[:-1], device=t.device, dtype=t.dtype) >= p
    return t * keep.unsqueeze(-1).to(t.dtype) / (1.0 - p)


class GLNet(LoraModel):
    name = "glnet"
    config_class = GLNetConfig
    config: GLNetConfig

    def __init__(self, config: GLNetConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...]) -> None:
        super().__init__(config, spec, tasks)
        h, L = config.hidden, len(spec)
        self.in_U = nn.ParameterList([per_module_weight(len(g.indices), h, g.n) for g in spec.groups])
        self.in_V = nn.ParameterList([per_module_weight(len(g.indices), h, g.m) for g in spec.groups])
        # modules in "slot" order: the concatenation of the shape groups' indices
        self.hid_U = nn.ParameterList([per_module_weight(L, h, h, gain=2**0.5) for _ in range(config.layers - 1)])
        self.hid_V = nn.ParameterList([per_module_weight(L, h, h, gain=2**0.5) for _ in range(config.layers - 1)])
        if config.probes and not config.probe_groups:
            config.probe_groups, config.probe_dim, config.probe_k = probe_shape(config.probes)
        self.build_head(L * h * h + L * config.singular_values + L * config.anchors
                        + len(self._probed) * config.probe_groups)
        if config.anchors:
            self._anchor_buffers(max(1, config.anchor_rank))
        if config.probe_groups:
            G, d, k = config.probe_groups, config.probe_dim, config.probe_k
            self.register_buffer("probe_basis", torch.zeros(G, d, k))
            self.register_buffer("probe_mean", torch.zeros(len(self._probed) * G))
            self.register_buffer("probe_std", torch.ones(len(self._probed) * G))

    @property
    def _probed(self) -> list[int]:
        """Modules (spec order) whose input width is the probe groups' (the V side: ΔW = U Vᵀ reads V's space)."""
        d = self.config.probe_dim
        return [i for i, mod in enumerate(self.spec.modules) if d and mod.m == d]

    def probe_responses(self, batch: LoraBatch) -> torch.Tensor:
        """(B, P·G): log of how strongly each probed module's ΔW acts on each probe group's inputs, relative to its
        size: log ‖ΔW_i P_g‖² − log ‖ΔW_i‖², with P_g P_gᵀ the group's input second moment (Σ_g, top k).

        ‖ΔW P‖² = tr((UᵀU)(VᵀP)(VᵀP)ᵀ): GL-invariant (U g, V g⁻ᵀ give gᵀ(UᵀU)g and g⁻¹(VᵀP)), scale-free, and
        defined at any rank. The response to a topic's definition tokens is the zero-parameter probe that named a
        MiniLM LoRA's topic 90 % of the time (docs/zoo.md). Computed once per batch and probe basis."""
        basis = self._buffer("probe_basis")
        return batch.cached(f"probe_responses{self._probed}", (basis,), lambda: self._probe_responses(batch, basis))

    def _probe_responses(self, batch: LoraBatch, basis: torch.Tensor) -> torch.Tensor:
        P = basis.to(batch.dtype)  # (G, d, k)
        G, d, k = P.shape
        flat = P.permute(1, 0, 2).reshape(d, G * k)
        probed = set(self._probed)
        out = []
        for g in batch.groups:
            for j, i in enumerate(g.indices):
                if i not in probed:
                    continue
                U, V = g.U[:, j], g.V[:, j]  # (B, n, R), (B, d, R)
                gram = U.mT @ U  # (B, R, R)
                A = (V.mT @ flat).view(batch.size, -1, G, k)  # (B, R, G, k): Vᵀ P_g
                resp = torch.einsum("brs,bsgk,brgk->bg", gram, A, A)  # tr(UᵀU A Aᵀ) per group
                norm2 = torch.einsum("brs,brs->b", gram, V.mT @ V)  # ‖ΔW‖²
                out.append((resp.clamp_min(1e-30).log() - norm2.clamp_min(1e-30).log()[:, None], i))
        out.sort(key=lambda pair: pair[1])  # spec order, whatever the shape groups' order
        return torch.cat([r for r, _ in out], dim=1)

    @property
    def rank_free(self) -> bool:
        return not self.config.singular_values  # the trunk and the anchor cosines are defined at any rank

    def _anchor_buffers(self, rank: int, device: torch.device | None = None) -> None:
        """Anchors per shape group: (L_g, n, K·R) and (L_g, m, K·R), each adapter's ΔW_i scaled to unit norm."""
        K = self.config.anchors
        for k, g in enumerate(self.spec.groups):
            self.register_buffer(f"anchor_U{k}", torch.zeros(len(g.indices), g.n, K * rank, device=device))
            self.register_buffer(f"anchor_V{k}", torch.zeros(len(g.indices), g.m, K * rank, device=device))
        self.register_buffer("anchor_mean", torch.zeros(len(self.spec) * K, device=device))
        self.register_buffer("anchor_std", torch.ones(len(self.spec) * K, device=device))

    def prepare(self, batch: LoraBatch) -> None:
        """Fit the input scale; with ``data_init`` also set the first layer to the training set's principal
        directions of ΔW, per module: the rows of W1_i are the top-h eigenvectors of Σ_b ΔW_b ΔW_bᵀ / ‖ΔW_b‖², those
        of W2_i of Σ_b ΔW_bᵀ ΔW_b / ‖ΔW_b‖² (random rows where h exceeds the rank of the sum). Each eigenvector
        enters twice, as +p and −p/2: the GL gate keeps a row only where its row sum of U'V'ᵀ is positive, which for a
        direction shared by all adapters would otherwise switch it off for all of them at once. (The second copy is
        −p/2, not −p: the rows must not sum to zero, or the V gate, which sums U' over rows, would see only rounding.)

        Both sums are GL-invariant (ΔW ΔWᵀ = U (VᵀV) Uᵀ, formed from the factors), so the initialisation does not
        depend on how any adapter's factors were written. Why: a random h × n first layer keeps about (h/n)² of each
        ΔW's energy, so the zoo's common directions — where its adapters differ in what they learned — are found only
        slowly from few adapters; starting in their span keeps most of the energy for the head from the first step."""
        super().prepare(batch)
        if self.config.anchors:
            self._prepare_anchors(batch)
        if self.config.probe_groups:
            self._prepare_probes(batch)
        if not self.config.data_init:
            return
        h = self.config.hidden
        with torch.no_grad():
            for k, g in enumerate(batch.groups):
                for j in range(len(g.indices)):
                    U, V = g.U[:, j].double(), g.V[:, j].double()  # (B, n, R), (B, m, R)
                    UtU, VtV = U.mT @ U, V.mT @ V
                    w = torch.einsum("brs,bsr->b", UtU, VtV).clamp_min(1e-300)  # ‖ΔW_b‖²
                    for weights, X, G in ((self.in_U[k], U, VtV), (self.in_V[k], V, UtU)):
                        XG = (X @ G) / w[:, None, None]  # (B, n, R)
                        M = XG.transpose(0, 1).reshape(X.shape[1], -1) @ X.transpose(0, 1).reshape(X.shape[1], -1).T
                        vals, vecs = torch.linalg.eigh(M)  # ascending
                        top = vecs.flip(-1).T[: min((h + 1) // 2, int((vals > vals.max() * 1e-12).sum()))]
                        rows = torch.stack([top, -0.5 * top], dim=1).reshape(-1, top.shape[1])[:h]  # p1, -p1/2, ...
                        weights[j, : rows.shape[0]] = rows.to(weights.dtype)

    def _prepare_anchors(self, batch: LoraBatch) -> None:
        """Store ``anchors`` training adapters (a seeded choice; cycled if the training set is smaller), each
        module's factors divided by √‖ΔW_i‖ so that their inner products with an input are cosines, and the mean and
        std of those cosines over the training set (the head sees them standardised)."""
        K, R = self.config.anchors, batch.max_rank
        pick = torch.randperm(batch.size, generator=torch.Generator().manual_seed(0))
        pick = pick.repeat((K + batch.size - 1) // batch.size)[:K]
        chosen = batch.select(pick).pad_rank(R)
        norms = frobenius_norms(chosen).clamp_min(1e-30).sqrt()  # √‖ΔW_i‖ per anchor and module (K, L)
        self.config.anchor_rank = R
        self._anchor_buffers(R, device=self.input_scale.device)
        with torch.no_grad():
            for k, g in enumerate(chosen.groups):
                s = norms[:, list(g.indices)].T.reshape(len(g.indices), 1, K, 1).to(g.U.dtype)
                L_g = len(g.indices)
                self._buffer(f"anchor_U{k}").copy_((g.U.permute(1, 2, 0, 3) / s).reshape(L_g, -1, K * R))
                self._buffer(f"anchor_V{k}").copy_((g.V.permute(1, 2, 0, 3) / s).reshape(L_g, -1, K * R))
        self._fit_standardiser(self.anchor_cosines, batch, "anchor")

    @torch.no_grad()
    def _fit_standardiser(self, feature: Any, batch: LoraBatch, prefix: str) -> None:
        """``{prefix}_mean`` / ``{prefix}_std``: the training set's mean and std of ``feature(batch)`` (B, D)."""
        values = torch.cat([feature(batch.select(range(i, min(batch.size, i + 256))))
                            for i in range(0, batch.size, 256)])
        self._buffer(f"{prefix}_mean").copy_(values.mean(0))
        std = values.std(0).clamp_min(1e-6) if batch.size > 1 else torch.ones_like(values[0])
        self._buffer(f"{prefix}_std").copy_(std)

    def _prepare_probes(self, batch: LoraBatch) -> None:
        """Load the probe basis from ``probes`` (when given: a reloaded checkpoint has it as a buffer already) and
        the training set's mean and std of every response (the head sees them standardised)."""
        if self.config.probes:
            basis = read_probes(self.config.probes)[1]
            if tuple(basis.shape) != tuple(self._buffer("probe_basis").shape):
                raise LolctlError("L180", self.config.probes, f"probe basis {tuple(basis.shape)} is not the model's "
                                  f"{tuple(self._buffer('probe_basis').shape)}", "retrain with this probe file")
            self._buffer("probe_basis").copy_(basis)
        self._fit_standardiser(self.probe_responses, batch, "probe")

    def anchor_cosines(self, batch: LoraBatch) -> torch.Tensor:
        """(B, L·K): cos(ΔW_b,i, anchor_k,i) = tr((U_bᵀ U_k)(V_kᵀ V_b)) / ‖ΔW_b,i‖, modules in slot order.

        GL-invariant: U_b g and V_b g⁻ᵀ give gᵀ(U_bᵀU_k) and (V_kᵀV_b)g⁻ᵀ, whose product has the same trace.
        Computed once per batch and anchor set."""
        anchors = [self._buffer(f"anchor_{side}{k}") for k in range(len(self.spec.groups)) for side in "UV"]
        key = f"anchor_cosines{self._slots}{self.config.anchors},{self.config.anchor_rank}"
        return batch.cached(key, anchors, lambda: self._anchor_cosines(batch))

    def _anchor_cosines(self, batch: LoraBatch) -> torch.Tensor:
        K, Ra = self.config.anchors, self.config.anchor_rank
        B, R = batch.size, batch.max_rank
        out = []
        for k, g in enumerate(batch.groups):
            L_g = len(g.indices)
            aU = self._buffer(f"anchor_U{k}").to(g.U.dtype)
            aV = self._buffer(f"anchor_V{k}").to(g.V.dtype)
            uu = torch.bmm(g.flat_U().transpose(1, 2), aU).view(L_g, B, R, K, Ra)  # U_bᵀ U_k
            vv = torch.bmm(g.flat_V().transpose(1, 2), aV).view(L_g, B, R, K, Ra)  # V_bᵀ V_k
            out.append((uu * vv).sum(dim=(2, 4)))  # (L_g, B, K): Σ_rs (U_bᵀU_k)_rs (V_bᵀV_k)_rs = <ΔW_b, ΔW_k>
        cos = torch.cat(out).permute(1, 0, 2)  # (B, L, K), slot order
        norm = frobenius_norms(batch)[:, self._slots].clamp_min(1e-30).to(cos.dtype)  # ‖ΔW_b,i‖ (B, L)
        return (cos / norm.unsqueeze(-1)).reshape(B, -1)

    def _buffer(self, name: str) -> torch.Tensor:
        """A buffer registered at run time (typed for mypy)."""
        out = getattr(self, name)
        assert isinstance(out, torch.Tensor)
        return out

    @property
    def _slots(self) -> list[int]:
        return [i for g in self.spec.groups for i in g.indices]

    def equivariant(
        self, batch: LoraBatch, root: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivariant trunk: (U', V'), each (B, L, h, R), modules in slot order.

        ``root`` (B, L): divide each module's U and V by it (``module_scale``). The first layer is linear, so the
        division is applied to its (h × B·R) output rather than to the (n × B·R) input: (W U) / s = W (U / s)."""
        p = self.config.equiv_dropout
        B, R = batch.size, batch.max_rank
        Us, Vs = [], []
        for k, g in enumerate(batch.groups):
            # one bmm per group on the (L_g, n, B·R) layout (a view for a LoraBatch-built group): (L_g, h, B·R)
            U = torch.bmm(self.in_U[k].to(g.U.dtype), g.flat_U()).view(len(g.indices), -1, B, R)
            V = torch.bmm(self.in_V[k].to(g.V.dtype), g.flat_V()).view(len(g.indices), -1, B, R)
            if root is not None:
                s = root[:, list(g.indices)].to(U.dtype).transpose(0, 1).reshape(len(g.indices), 1, B, 1)
                U, V = U / s, V / s
            Us.append(U)
            Vs.append(V)
        U = torch.cat(Us).permute(2, 0, 1, 3)  # (B, L, h, R)
        V = torch.cat(Vs).permute(2, 0, 1, 3)
        U, V = gl_gate(U, V)
        U, V = row_dropout(U, p, self.training), row_dropout(V, p, self.training)
        for WU, WV in zip(self.hid_U, self.hid_V):
            U = torch.einsum("lij,bljr->blir", WU.to(U.dtype), U)
            V = torch.einsum("lij,bljr->blir", WV.to(V.dtype), V)
            U, V = gl_gate(U, V)
            U, V = row_dropout(U, p, self.training), row_dropout(V, p, self.training)
        return U, V

    def features(self, batch: LoraBatch, root: torch.Tensor | None = None) -> torch.Tensor:
        """Invariant features of ``batch`` with each module's U and V divided by ``root`` (B, L) (None: by 1)."""
        U, V = self.equivariant(batch, root)
        B = U.shape[0]
        inv = torch.einsum("blir,bljr->blij", U, V).reshape(B, -1)  # per-module U'V'ᵀ (h × h), concatenated
        if self.config.anchors:  # cosines are scale-free: ``root`` does not matter
            mean, std = self._buffer("anchor_mean").to(inv.dtype), self._buffer("anchor_std").to(inv.dtype)
            cos = (self.anchor_cosines(batch) - mean) / std
            inv = torch.cat([inv, cos], dim=1)
        if self.config.probe_groups:  # scale-free too
            mean, std = self._buffer("probe_mean").to(inv.dtype), self._buffer("probe_std").to(inv.dtype)
            inv = torch.cat([inv, (self.probe_responses(batch).to(inv.dtype) - mean) / std], dim=1)
        k = self.config.singular_values
        if not k:
            return inv
        svs = []
        for g in batch.groups:
            s = singular_values(g.U, g.V).to(g.U.dtype)  # (B, L_g, R)
            if root is not None:
                s = s / root[:, list(g.indices)].to(s.dtype).square().unsqueeze(-1)  # σ(ΔW / c²) = σ(ΔW) / c²
            s = torch.nn.functional.pad(s, (0, max(0, k - s.shape[-1])))[..., :k]
            svs.append(s)
        return torch.cat([inv, torch.cat(svs, dim=1).reshape(B, -1)], dim=1)

    def scaled_features(self, batch: LoraBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        root, lognorm = self.module_scale(batch)
        return self.features(batch, root), lognorm


# -- probe files (lolctl zoo probes) --------------------------------------------------------------------------------
PROBES_FORMAT = "lolctl-probes/1"


def write_probes(path: str | Path, names: list[str], moments: list[torch.Tensor], k: int, source: str) -> Path:
    """Save the top-``k`` square roots P_g (d × k, P_g P_gᵀ ≈ Σ_g) of each group's input second moment Σ_g."""
    from safetensors.torch import save

    bases = []
    for S in moments:
        vals, vecs = torch.linalg.eigh(S.double())  # ascending
        top = vals.flip(0)[:k].clamp_min(0)
        bases.append((vecs.flip(1)[:, :k] * top.sqrt()).float())
    path = Path(path)
    meta = {"format": PROBES_FORMAT, "names": json.dumps(names), "source": source}
    path.write_bytes(save({"basis": torch.stack(bases).contiguous()}, metadata=meta))
    return path


def read_probes(path: str | Path) -> tuple[list[str], torch.Tensor]:
    """(group names, basis (G, d, k)) of a probe file; L176 naming the file when it is not one."""
    names, basis, _ = read_probe_file(path)
    return names, basis


def read_probe_file(path: str | Path) -> tuple[list[str], torch.Tensor, str]:
    """:func:`read_probes` and the command the file records having been made with (its ``source``, or '')."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != PROBES_FORMAT:
                raise LolctlError("L176", str(path), f"not a {PROBES_FORMAT} file", "make one with lolctl zoo probes")
            return list(json.loads(meta["names"])), fh.get_tensor("basis").float(), str(meta.get("source", ""))
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise LolctlError("L176", str(path), f"cannot read the probe file ({err})",
                          "make one with lolctl zoo probes") from err


def probe_shape(path: str | Path) -> tuple[int, int, int]:
    G, d, k = read_probes(path)[1].shape
    return int(G), int(d), int(k)
