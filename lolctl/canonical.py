"""SVD canonical form of LoRA factors through QR, in O((n + m) r^2): ΔW = U V^T is never formed.

U = Q_u R_u, V = Q_v R_v, then the small SVD R_u R_v^T = P diag(S) H^T gives ΔW = (Q_u P) diag(S) (Q_v H)^T.
Signs are fixed deterministically: the largest-magnitude entry of every left singular vector is made positive
(the right vector flips with it). All functions accept leading batch dimensions: U (..., n, r), V (..., m, r).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SVDFactors(NamedTuple):
    left: torch.Tensor  # (..., n, r) orthonormal columns; zero columns past the numerical rank of ΔW
    S: torch.Tensor  # (..., r) singular values of ΔW, descending, zero-padded
    right: torch.Tensor  # (..., m, r)


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def svd_factors(U: torch.Tensor, V: torch.Tensor) -> SVDFactors:
    """The r nonzero singular triplets of ΔW = U V^T, with deterministic signs."""
    if U.shape[-1] != V.shape[-1]:
        raise ValueError(f"rank mismatch: U has {U.shape[-1]} columns, V has {V.shape[-1]}")
    dtype = _work_dtype(U)
    U, V = U.to(dtype), V.to(dtype)
    r = U.shape[-1]
    Qu, Ru = torch.linalg.qr(U)  # (..., n, k1), (..., k1, r), k1 = min(n, r)
    Qv, Rv = torch.linalg.qr(V)  # (..., m, k2), (..., k2, r)
    P, S, Ht = torch.linalg.svd(Ru @ Rv.transpose(-1, -2))  # (k1, k), (k,), (k, k2) with k = min(k1, k2)
    k = S.shape[-1]
    left = Qu @ P[..., :, :k]  # (..., n, k)
    right = Qv @ Ht[..., :k, :].transpose(-1, -2)  # (..., m, k)
    # sign fix: largest-|.| entry of each left vector positive
    idx = left.abs().argmax(dim=-2, keepdim=True)  # (..., 1, k)
    sign = torch.sign(torch.gather(left, -2, idx))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    left, right = left * sign, right * sign
    # numerically-zero singular values (rank-deficient factors) get exactly zero triplets: their vectors are arbitrary
    alive = S > S[..., :1] * (100 * torch.finfo(dtype).eps * max(U.shape[-2], V.shape[-2], r))
    S = torch.where(alive, S, torch.zeros_like(S))
    left, right = left * alive.unsqueeze(-2), right * alive.unsqueeze(-2)
    if k < r:  # rank larger than a side of the layer: pad with zero triplets
        pad = r - k
        left = torch.nn.functional.pad(left, (0, pad))
        right = torch.nn.functional.pad(right, (0, pad))
        S = torch.nn.functional.pad(S, (0, pad))
    return SVDFactors(left, S, right)


def singular_values(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Singular values of ΔW = U V^T (..., r), descending, without forming ΔW."""
    dtype = _work_dtype(U)
    Ru = torch.linalg.qr(U.to(dtype), mode="r")[1]
    Rv = torch.linalg.qr(V.to(dtype), mode="r")[1]
    S = torch.linalg.svdvals(Ru @ Rv.transpose(-1, -2))
    r = U.shape[-1]
    return torch.nn.functional.pad(S, (0, r - S.shape[-1])) if S.shape[-1] < r else S


def canonicalize(U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced canonical factors (left sqrt(S), right sqrt(S)): GL(r)-invariant wherever singular values are
    distinct, and still multiply to ΔW exactly. Zero singular values give zero columns (so rank deficiency is safe).
    """
    left, S, right = svd_factors(U, V)
    root = S.sqrt().unsqueeze(-2)
    return left * root, right * root
