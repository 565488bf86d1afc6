"""SVD canonical form of LoRA factors in O((n + m) r^2): ΔW = U V^T is never formed.

U = Q_u R_u, V = Q_v R_v, then the small SVD R_u R_v^T = P diag(S) H^T gives ΔW = (Q_u P) diag(S) (Q_v H)^T.

R comes from the Gram route where it is safe: R = chol(X^T X) with the r × r Gram formed in float64 (BLAS-3, far
faster on CPU than Householder QR of a tall n × r factor), Q = X R^-1. The Gram squares the condition number, so a
factor falls back to QR when Cholesky fails or cond(R) > GRAM_MAX_COND (rank deficient or nearly so, r > n, NaN):
in float64 the Gram route then errs by at most ≈ 1e-16 · GRAM_MAX_COND² relative to the largest singular value.

Signs are fixed deterministically: the largest-magnitude entry of every left singular vector is made positive
(the right vector flips with it). All functions accept leading batch dimensions: U (..., n, r), V (..., m, r).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch

GRAM_MAX_COND = 1e3  # cond(R) above this: QR instead of the Gram route


class SVDFactors(NamedTuple):
    left: torch.Tensor  # (..., n, r) orthonormal columns; zero columns past the numerical rank of ΔW
    S: torch.Tensor  # (..., r) singular values of ΔW, descending, zero-padded
    right: torch.Tensor  # (..., m, r)


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


_GRAMS: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}  # id(factor) -> (factor, its _version, Gram)


def _cached_gram(X: torch.Tensor) -> torch.Tensor:
    """The float64 Gram of one 2-D factor, memoized while the factor lives and is not modified in place (health and
    the canonical form of one adapter read every factor once for both). The result must not be modified."""
    hit = _GRAMS.get(id(X))
    if hit is not None and hit[0]() is X and hit[1] == X._version:
        return hit[2]
    x = X.double()
    G = x.mT @ x
    key = id(X)
    _GRAMS[key] = (weakref.ref(X, lambda _ref: _GRAMS.pop(key, None)), X._version, G)
    return G


def gram(X: torch.Tensor) -> torch.Tensor:
    """X^T X (..., r, r) formed in float64, one leading slice at a time (the float64 copy stays cache-sized)."""
    if X.ndim == 2:
        return _cached_gram(X)
    if X.dtype == torch.float64:
        return X.mT @ X
    flat = X.reshape(-1, *X.shape[-2:])
    out = torch.empty(flat.shape[0], X.shape[-1], X.shape[-1], dtype=torch.float64)
    for i, x in enumerate(flat):
        x = x.double()
        torch.matmul(x.mT, x, out=out[i])
    return out.reshape(*X.shape[:-2], X.shape[-1], X.shape[-1])


def r_from_gram(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper-triangular R with R^T R = G (float64), and a mask (...,) of where it may be trusted."""
    R, info = torch.linalg.cholesky_ex(G, upper=True)
    d = torch.linalg.svdvals(torch.where(torch.isfinite(R), R, torch.zeros_like(R)))
    ok = (info == 0) & torch.isfinite(R).all((-1, -2)) & (d[..., -1] * GRAM_MAX_COND > d[..., 0])
    return R, ok


def _qr_svd(U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left, S, right) without padding or sign fix, through Householder QR (any shape, any rank)."""
    Qu, Ru = torch.linalg.qr(U)  # (..., n, k1), (..., k1, r), k1 = min(n, r)
    Qv, Rv = torch.linalg.qr(V)  # (..., m, k2), (..., k2, r)
    P, S, Ht = torch.linalg.svd(Ru @ Rv.transpose(-1, -2))  # (k1, k), (k,), (k, k2) with k = min(k1, k2)
    k = S.shape[-1]
    return Qu @ P[..., :, :k], S, Qv @ Ht[..., :k, :].transpose(-1, -2)


Factors = torch.Tensor | Sequence[torch.Tensor]  # (B, n, r) batched, or B same-shape (n, r) tensors


def _gram_svd(U: Factors, V: Factors, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`_qr_svd` for B factor pairs with r ≤ n, m: Gram route, QR for the untrusted rows. A list of factors
    is never stacked: each is read once for its Gram and once for its product with the r × r matrix."""
    n, r = U[0].shape
    m = V[0].shape[0]
    Ru, ok_u = r_from_gram(gram(U) if isinstance(U, torch.Tensor) else torch.stack([gram(u) for u in U]))
    Rv, ok_v = r_from_gram(gram(V) if isinstance(V, torch.Tensor) else torch.stack([gram(v) for v in V]))
    ok = ok_u & ok_v
    eye = torch.eye(r, dtype=torch.float64)
    Ru, Rv = torch.where(ok[:, None, None], Ru, eye), torch.where(ok[:, None, None], Rv, eye)
    P, S, Ht = torch.linalg.svd(Ru @ Rv.mT)
    # Q P = X R^-1 P: one (n × r)·(r × r) product per factor
    Mu = torch.linalg.solve_triangular(Ru, P, upper=True).to(dtype)
    Mv = torch.linalg.solve_triangular(Rv, Ht.mT, upper=True).to(dtype)
    S = S.to(dtype)
    if isinstance(U, torch.Tensor) and isinstance(V, torch.Tensor):
        left, right = U.to(dtype) @ Mu, V.to(dtype) @ Mv
    else:
        left, right = torch.empty(len(U), n, r, dtype=dtype), torch.empty(len(V), m, r, dtype=dtype)
        for i in range(len(U)):
            torch.matmul(U[i].to(dtype), Mu[i], out=left[i])
            torch.matmul(V[i].to(dtype), Mv[i], out=right[i])
    for i in (~ok).nonzero().flatten().tolist():
        left[i], S[i], right[i] = _qr_svd(U[i].to(dtype), V[i].to(dtype))
    return left, S, right


def _sign_fix(left: torch.Tensor) -> torch.Tensor:
    """±1 (..., 1, k) making the largest-|.| entry of each column positive (the first such entry on ties; +1 for a
    zero column), from argmax and argmin: two reading passes, no |left| temporary."""
    if left.shape[-2] == 0:
        return torch.ones(*left.shape[:-2], 1, left.shape[-1], dtype=left.dtype)
    imax, imin = left.argmax(dim=-2, keepdim=True), left.argmin(dim=-2, keepdim=True)  # (..., 1, k)
    hi, lo = torch.gather(left, -2, imax), torch.gather(left, -2, imin)
    positive = (hi > -lo) | ((hi == -lo) & ((imax <= imin) | (hi == 0)))
    return torch.where(positive, 1.0, -1.0).to(left.dtype)


def _triplets(U: Factors, V: Factors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left, S, right, column factor): the raw triplets, S with numerically-zero values set to 0 and padded to r,
    and the per-column factor (..., 1, k) — ±1 for the sign fix, 0 for dead triplets — still to be applied."""
    ru = U.shape[-1] if isinstance(U, torch.Tensor) else U[0].shape[-1]
    rv = V.shape[-1] if isinstance(V, torch.Tensor) else V[0].shape[-1]
    if ru != rv:
        raise ValueError(f"rank mismatch: U has {ru} columns, V has {rv}")
    dtype = _work_dtype(U if isinstance(U, torch.Tensor) else U[0])
    if isinstance(U, torch.Tensor):
        V = torch.as_tensor(V) if isinstance(V, torch.Tensor) else torch.stack(list(V))
        n, m, r = U.shape[-2], V.shape[-2], U.shape[-1]
        batch: tuple[int, ...] = tuple(U.shape[:-2])
        gram_ok = r <= min(n, m) and U.numel() > 0 and V.numel() > 0
    else:
        (n, r), m, batch = U[0].shape, V[0].shape[0], (len(U),)
        gram_ok = r <= min(n, m)
        if not gram_ok:
            U, V = torch.stack(list(U)), torch.stack(list(V))
    if gram_ok:
        Ug = U.reshape(-1, n, r) if isinstance(U, torch.Tensor) else U
        Vg = V.reshape(-1, m, r) if isinstance(V, torch.Tensor) else V
        left, S, right = _gram_svd(Ug, Vg, dtype)
        left, S, right = left.reshape(*batch, n, r), S.reshape(*batch, r), right.reshape(*batch, m, r)
    else:
        assert isinstance(U, torch.Tensor) and isinstance(V, torch.Tensor)  # stacked above
        left, S, right = _qr_svd(U.to(dtype), V.to(dtype))
    sign = _sign_fix(left)
    # numerically-zero singular values (rank-deficient factors) get exactly zero triplets: their vectors are arbitrary
    alive = S > S[..., :1] * (100 * torch.finfo(dtype).eps * max(n, m, r))
    S = torch.where(alive, S, torch.zeros_like(S))
    col = sign * alive.unsqueeze(-2)
    if S.shape[-1] < r:  # rank larger than a side of the layer: pad with zero triplets
        pad = r - S.shape[-1]
        left, right = torch.nn.functional.pad(left, (0, pad)), torch.nn.functional.pad(right, (0, pad))
        S, col = torch.nn.functional.pad(S, (0, pad)), torch.nn.functional.pad(col, (0, pad))
    return left, S, right, col


def svd_factors(U: Factors, V: Factors) -> SVDFactors:
    """The r nonzero singular triplets of ΔW = U V^T, with deterministic signs (inputs as for canonicalize)."""
    left, S, right, col = _triplets(U, V)
    return SVDFactors(left.mul_(col), S, right.mul_(col))


def _qr_r(X: torch.Tensor) -> torch.Tensor:
    """R (..., r, r) of X (..., n, r) by QR in float64, zero-padded to r rows when n < r."""
    R = torch.linalg.qr(X.double(), mode="r")[1]
    return torch.nn.functional.pad(R, (0, 0, 0, X.shape[-1] - R.shape[-2])) if R.shape[-2] < X.shape[-1] else R


def singular_values_from_grams(
    Gu: torch.Tensor,
    Gv: torch.Tensor,
    U: torch.Tensor | Sequence[torch.Tensor],
    V: torch.Tensor | Sequence[torch.Tensor],
) -> torch.Tensor:
    """Singular values (B, r) in float64 of U[i] V[i]^T given their float64 Grams Gu, Gv (B, r, r); the factors
    themselves are touched only for the rows that need the QR fallback."""
    Ru, ok_u = r_from_gram(Gu)
    Rv, ok_v = r_from_gram(Gv)
    for i in (~(ok_u & ok_v)).nonzero().flatten().tolist():
        Ru[i], Rv[i] = _qr_r(U[i]), _qr_r(V[i])
    return torch.linalg.svdvals(Ru @ Rv.mT)


def singular_values(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Singular values of ΔW = U V^T (..., r), descending, without forming ΔW."""
    dtype = _work_dtype(U)
    r = U.shape[-1]
    batch = U.shape[:-2]
    Uf, Vf = U.reshape(-1, U.shape[-2], r), V.reshape(-1, V.shape[-2], r)
    S = singular_values_from_grams(gram(Uf), gram(Vf), Uf, Vf)
    return S.reshape(*batch, r).to(dtype)


def canonicalize(U: Factors, V: Factors) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced canonical factors (left sqrt(S), right sqrt(S)): GL(r)-invariant wherever singular values are
    distinct, and still multiply to ΔW exactly. Zero singular values give zero columns (so rank deficiency is safe).
    U, V are batched tensors, or lists of same-shape factors (then the results are stacked (B, ·, r), and the
    inputs are not: cheaper than stacking them first).
    """
    left, S, right, col = _triplets(U, V)
    col = col * S.sqrt().unsqueeze(-2)
    return left.mul_(col), right.mul_(col)
