"""An immutable batch of LoRA factors laid out for the models: one stacked tensor pair per shape group.

For a group of L_g modules of shape (n, m), ``U`` is (B, L_g, n, R) and ``V`` is (B, L_g, m, R), where R is the
largest rank in the batch. Memory layout: every constructor below stores a group as (L_g, n, B, R) contiguous and
exposes ``U`` as a permuted view of it, so :meth:`GroupFactors.flat_U` is (L_g, n, B·R) without a copy — the first
GL-net layer is then one bmm per group (docs/performance.md §2). A group built from other tensors works too (only
slower). Lower ranks are padded with zero columns: U Vᵀ is unchanged, and every model in
:mod:`lolctl.nn` gives the same output for a zero-padded input as for the unpadded one (GL-net exactly; the rest by
construction of their features; O-Align for generic inputs). ``ranks`` (B, L) keeps the true rank of every module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lolctl.factors import Adapter
from lolctl.nn.spec import InputSpec

Factors = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GroupFactors:
    indices: tuple[int, ...]  # module positions in the spec
    U: torch.Tensor  # (B, L_g, n, R)
    V: torch.Tensor  # (B, L_g, m, R)

    def flat_U(self) -> torch.Tensor:
        """U as (L_g, n, B·R): a view for a group laid out by this module, a copy otherwise."""
        return _flat(self.U)

    def flat_V(self) -> torch.Tensor:
        """V as (L_g, m, B·R), like :meth:`flat_U`."""
        return _flat(self.V)


def _flat(t: torch.Tensor) -> torch.Tensor:
    B, L, n, R = t.shape
    return t.permute(1, 2, 0, 3).reshape(L, n, B * R)


def laid_out(t: torch.Tensor) -> torch.Tensor:
    """(B, L_g, n, R) with storage (L_g, n, B, R) contiguous; no copy if ``t`` already is."""
    return t.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)


def _from_lnbr(t: torch.Tensor) -> torch.Tensor:
    """(L_g, n, B, R) storage → the (B, L_g, n, R) view (contiguous first if it is not)."""
    return t.contiguous().permute(2, 0, 1, 3)


def _lnbr(t: torch.Tensor) -> torch.Tensor:
    """The (L_g, n, B, R) view of a (B, L_g, n, R) group tensor."""
    return t.permute(1, 2, 0, 3)


def _pad(t: torch.Tensor, R: int) -> torch.Tensor:
    return t if t.shape[-1] == R else torch.nn.functional.pad(t, (0, R - t.shape[-1]))


@dataclass(frozen=True)
class LoraBatch:
    spec: InputSpec
    groups: tuple[GroupFactors, ...]
    ranks: torch.Tensor  # (B, L) true rank of each module
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)  # see cached()

    def cached(self, name: str, tensors: Sequence[torch.Tensor], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, once per batch for one ``name`` and the same ``tensors`` (the same objects, not changed in
        place since): parameter-free features of the batch that several models read — a composite's members share
        their anchor adapters and probe basis (``load_checkpoint`` makes repeated buffers one tensor), so a 7-member
        checkpoint computes them once, not 7 times."""
        key = (name, *((id(t), t._version) for t in tensors))
        hit = self.memo.get(key)
        if hit is None:  # the entry holds the tensors, so their ids cannot be reused while it lives
            hit = self.memo[key] = (tuple(tensors), compute())
        return hit[1]

    @property
    def size(self) -> int:
        return int(self.ranks.shape[0])

    def __len__(self) -> int:
        return self.size

    @property
    def max_rank(self) -> int:
        return int(self.groups[0].U.shape[-1])

    @property
    def dtype(self) -> torch.dtype:
        return self.groups[0].U.dtype

    @property
    def device(self) -> torch.device:
        return self.groups[0].U.device

    @classmethod
    def from_factors(cls, spec: InputSpec, factors: Factors) -> LoraBatch:
        """From one (U (B, n, r_i), V (B, m, r_i)) pair per module, in spec order (a missing batch dim means B=1)."""
        if len(factors) != len(spec):
            raise ValueError(f"{len(factors)} modules given, the spec has {len(spec)}")
        factors = [(U, V) if U.dim() == 3 else (U.unsqueeze(0), V.unsqueeze(0)) for U, V in factors]
        R = max(int(U.shape[-1]) for U, _ in factors)
        groups = []
        for g in spec.groups:
            Us = _from_lnbr(torch.stack([_pad(factors[i][0], R).transpose(0, 1) for i in g.indices]))
            Vs = _from_lnbr(torch.stack([_pad(factors[i][1], R).transpose(0, 1) for i in g.indices]))
            if Us.shape[2] != g.n or Vs.shape[2] != g.m:
                raise ValueError(f"group ({g.n}, {g.m}) got factors of shape {tuple(Us.shape)}, {tuple(Vs.shape)}")
            groups.append(GroupFactors(g.indices, Us, Vs))
        B = int(factors[0][0].shape[0])
        ranks = torch.tensor([int(U.shape[-1]) for U, _ in factors], dtype=torch.long).expand(B, -1).clone()
        return cls(spec, tuple(groups), ranks)

    @classmethod
    def from_adapters(
        cls, adapters: Sequence[Adapter], spec: InputSpec, dtype: torch.dtype = torch.float32
    ) -> LoraBatch:
        """Stack adapters after checking each against ``spec`` (LolctlError L171 on a mismatch)."""
        if not adapters:
            raise ValueError("no adapters to batch")
        for adapter in adapters:
            spec.check(adapter)
        R = max(max(a.ranks) for a in adapters)
        by_name = [{mod.name: mod for mod in a.modules} for a in adapters]
        groups = []
        for g in spec.groups:
            names = [spec.modules[i].name for i in g.indices]
            Us = _from_lnbr(  # stored (L_g, n, B, R)
                torch.stack([torch.stack([_pad(mods[nm].U.to(dtype), R) for mods in by_name], dim=1) for nm in names])
            )
            Vs = _from_lnbr(
                torch.stack([torch.stack([_pad(mods[nm].V.to(dtype), R) for mods in by_name], dim=1) for nm in names])
            )
            groups.append(GroupFactors(g.indices, Us, Vs))
        ranks = torch.tensor([[mods[nm].rank for nm in spec.names] for mods in by_name], dtype=torch.long)
        return cls(spec, tuple(groups), ranks)

    def factors(self) -> Factors:
        """One (U (B, n, R), V (B, m, R)) pair per module, in spec order (rank-padded)."""
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.spec)
        for g in self.groups:
            for j, i in enumerate(g.indices):
                out[i] = (g.U[:, j], g.V[:, j])
        return out  # type: ignore[return-value]

    def select(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> LoraBatch:
        """The adapters at ``index``, with rank padding trimmed to the largest rank among them."""
        idx = torch.as_tensor(index, dtype=torch.long)
        ranks = self.ranks[idx]
        R = max(1, int(ranks.max())) if ranks.numel() else self.max_rank
        groups = tuple(
            GroupFactors(
                g.indices,
                _from_lnbr(torch.index_select(_lnbr(g.U)[..., :R], 2, idx.to(g.U.device))),
                _from_lnbr(torch.index_select(_lnbr(g.V)[..., :R], 2, idx.to(g.V.device))),
            )
            for g in self.groups
        )
        return LoraBatch(self.spec, groups, ranks)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LoraBatch:
        groups = tuple(GroupFactors(g.indices, g.U.to(device, dtype), g.V.to(device, dtype)) for g in self.groups)
        return LoraBatch(self.spec, groups, self.ranks)

    def pad_rank(self, R: int) -> LoraBatch:
        if R < self.max_rank:
            raise ValueError(f"cannot pad rank {self.max_rank} down to {R}")
        if R == self.max_rank:
            return self
        groups = tuple(
            GroupFactors(g.indices, _from_lnbr(_pad(_lnbr(g.U), R)), _from_lnbr(_pad(_lnbr(g.V), R)))
            for g in self.groups
        )
        return LoraBatch(self.spec, groups, self.ranks)

    @staticmethod
    def cat(batches: Sequence[LoraBatch]) -> LoraBatch:
        R = max(b.max_rank for b in batches)
        padded = [b.pad_rank(R) for b in batches]
        first = padded[0]
        groups = tuple(
            GroupFactors(
                g.indices,
                _from_lnbr(torch.cat([_lnbr(b.groups[k].U) for b in padded], dim=2)),
                _from_lnbr(torch.cat([_lnbr(b.groups[k].V) for b in padded], dim=2)),
            )
            for k, g in enumerate(first.groups)
        )
        return LoraBatch(first.spec, groups, torch.cat([b.ranks for b in padded]))

    def respec(self, spec: InputSpec) -> LoraBatch:
        """The same factors laid out for another spec with the same modules (in any order); L171 on a mismatch."""
        if spec == self.spec:
            return self
        from lolctl.errors import LolctlError

        mine = {mod.name: (i, mod.shape) for i, mod in enumerate(self.spec.modules)}
        for mod in spec.modules:
            if mod.name not in mine or mine[mod.name][1] != mod.shape:
                got = f"shape {mine[mod.name][1]}" if mod.name in mine else "no such module"
                raise LolctlError(
                    "L171",
                    mod.name,
                    f"the model expects {mod.n}x{mod.m}; the adapters have {got}",
                    "use a checkpoint trained on the same base model and target modules",
                )
        if len(mine) != len(spec):
            extra = sorted(set(mine) - set(spec.names))[0]
            raise LolctlError(
                "L171",
                extra,
                "the adapters have modules the model was not trained on",
                "use a checkpoint trained on the same target modules",
            )
        old = self.factors()
        order = [mine[name][0] for name in spec.names]
        groups = tuple(
            GroupFactors(
                g.indices,
                _from_lnbr(torch.stack([old[order[i]][0].transpose(0, 1) for i in g.indices])),
                _from_lnbr(torch.stack([old[order[i]][1].transpose(0, 1) for i in g.indices])),
            )
            for g in spec.groups
        )
        return LoraBatch(spec, groups, self.ranks[:, order])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name → tensor dict (for a safetensors cache; (B, L_g, n, R) contiguous, the format of older caches
        too); rebuild with :meth:`from_tensors`."""
        out = {"ranks": self.ranks.contiguous()}
        for k, g in enumerate(self.groups):
            out[f"group{k}.U"] = g.U.contiguous()
            out[f"group{k}.V"] = g.V.contiguous()
        return out

    @classmethod
    def from_tensors(cls, spec: InputSpec, tensors: dict[str, torch.Tensor]) -> LoraBatch:
        groups = tuple(
            GroupFactors(g.indices, laid_out(tensors[f"group{k}.U"]), laid_out(tensors[f"group{k}.V"]))
            for k, g in enumerate(spec.groups)
        )
        return cls(spec, groups, tensors["ranks"])
