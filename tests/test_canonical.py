from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lolctl.canonical import canonicalize, singular_values, svd_factors
from lolctl.testing import assert_invariant, assert_sensitive, random_factors


@pytest.mark.parametrize("n,m,r", [(10, 7, 4), (32, 32, 1), (5, 40, 8), (3, 9, 6), (16, 12, 16)])
def test_matches_dense_svd(n, m, r):
    gen = torch.Generator().manual_seed(n * m + r)
    ((U, V),) = random_factors([(n, m)], r, 2, generator=gen)
    left, S, right = svd_factors(U, V)
    delta = U @ V.mT
    dense = torch.linalg.svdvals(delta)[..., :r]
    k = min(n, m, r)
    torch.testing.assert_close(S[..., :k], dense[..., :k], rtol=1e-10, atol=1e-10)
    assert (S[..., k:] == 0).all()
    torch.testing.assert_close((left * S.unsqueeze(-2)) @ right.mT, delta, rtol=1e-10, atol=1e-10)
    eye = torch.eye(k, dtype=U.dtype)
    torch.testing.assert_close(left[..., :k].mT @ left[..., :k], eye.expand(2, k, k), rtol=0, atol=1e-10)


def test_signs_are_deterministic_and_invariant():
    factors = random_factors([(20, 11), (9, 9)], 4, generator=torch.Generator().manual_seed(7))
    assert_invariant(lambda f: [torch.cat(svd_factors(U, V)[0::2], -2) for U, V in f], factors)
    assert_invariant(lambda f: [canonicalize(U, V) for U, V in f], factors)
    assert_sensitive(lambda f: [canonicalize(U, V) for U, V in f], factors)
    for U, V in factors:
        left = svd_factors(U, V).left
        idx = left.abs().argmax(0)
        assert (left[idx, torch.arange(left.shape[1])] > 0).all()


def test_rank_deficient_factors():
    gen = torch.Generator().manual_seed(8)
    ((U, V),) = random_factors([(15, 12)], 4, generator=gen)
    U[:, 2] = U[:, 0] + U[:, 1]
    U[:, 3] = 0.0
    S = singular_values(U, V)
    assert int((S > 1e-8).sum()) == 2
    assert_invariant(lambda f: [canonicalize(U, V) for U, V in f], [(U, V)])
    a, b = canonicalize(U, V)
    torch.testing.assert_close(a @ b.T, U @ V.T, rtol=1e-10, atol=1e-10)
    zero = svd_factors(torch.zeros(6, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64))
    assert (zero.S == 0).all() and (zero.left == 0).all()


def test_low_precision_inputs_are_upcast():
    U = torch.randn(8, 2).to(torch.bfloat16)
    V = torch.randn(6, 2).to(torch.bfloat16)
    S = singular_values(U, V)
    assert S.dtype == torch.float32
    dense = torch.linalg.svdvals(U.float() @ V.float().T)[:2]
    torch.testing.assert_close(S, dense, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 24), m=st.integers(1, 24), r=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_property_reconstruction(n, m, r, seed):
    ((U, V),) = random_factors([(n, m)], r, generator=torch.Generator().manual_seed(seed))
    left, S, right = svd_factors(U, V)
    assert S.shape == (r,) and left.shape == (n, r) and right.shape == (m, r)
    assert (S[:-1] >= S[1:] - 1e-12).all()
    torch.testing.assert_close((left * S) @ right.T, U @ V.T, rtol=1e-9, atol=1e-9)
