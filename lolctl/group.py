"""The symmetry group of LoRA factors: GL(r) per module, acting by (U, V) -> (U g, V g^-T).

A :class:`GL` knows its dimension, draws random well-conditioned elements and applies the action; a
:class:`GLProduct` is GL(r_1) x ... x GL(r_L), one independent element per module. Tensors may carry leading batch
dimensions: U is (..., n, r), V is (..., m, r), g is (..., r, r).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GL:
    """GL(r), acting on LoRA factors."""

    r: int

    def random(
        self,
        *batch: int,
        cond: float = 4.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """A random element with condition number at most ``cond``: Q1 diag(s) Q2 with s in [1, cond], random sign.

        Well-conditioned elements keep float64 equivariance checks tight; they still cover rotations, reflections,
        shears and anisotropic scaling.
        """
        import torch

        dtype = dtype or torch.float64
        shape = (*batch, self.r, self.r)
        q1, _ = torch.linalg.qr(torch.randn(shape, generator=generator, dtype=dtype))
        q2, _ = torch.linalg.qr(torch.randn(shape, generator=generator, dtype=dtype))
        s = 1.0 + (cond - 1.0) * torch.rand((*batch, self.r), generator=generator, dtype=dtype)
        return (q1 * s.unsqueeze(-2)) @ q2

    def random_orthogonal(
        self, *batch: int, generator: torch.Generator | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        import torch

        q, _ = torch.linalg.qr(
            torch.randn((*batch, self.r, self.r), generator=generator, dtype=dtype or torch.float64)
        )
        return q

    @staticmethod
    def act(U: torch.Tensor, V: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V) -> (U g, V g^-T); leaves U V^T unchanged."""
        import torch

        g = g.to(U.dtype)
        return U @ g, V @ torch.linalg.inv(g).transpose(-1, -2)

    @staticmethod
    def wrong_act(U: torch.Tensor, V: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V) -> (U g, V g): NOT a symmetry (it changes ΔW unless g is orthogonal). Used by sensitivity tests."""
        g = g.to(U.dtype)
        return U @ g, V @ g


@dataclass(frozen=True)
class GLProduct:
    """GL(r_1) x ... x GL(r_L): one element per module."""

    ranks: tuple[int, ...]

    def random(
        self,
        *batch: int,
        cond: float = 4.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[torch.Tensor]:
        return [GL(r).random(*batch, cond=cond, generator=generator, dtype=dtype) for r in self.ranks]

    @staticmethod
    def act(
        factors: list[tuple[torch.Tensor, torch.Tensor]], gs: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(factors) != len(gs):
            raise ValueError(f"{len(factors)} modules but {len(gs)} group elements")
        return [GL.act(U, V, g) for (U, V), g in zip(factors, gs)]
