"""The Gram/Cholesky route of lolctl.canonical: accuracy across conditioning, QR fallback, GL invariance."""

from __future__ import annotations

import pytest
import torch

from lolctl.canonical import GRAM_MAX_COND, canonicalize, gram, r_from_gram, singular_values, svd_factors
from lolctl.factors import Adapter, AdapterMeta, ModuleFactors
from lolctl.health import health
from lolctl.testing import assert_invariant, random_factors


def _conditioned(n: int, r: int, cond: float, gen: torch.Generator) -> torch.Tensor:
    """A random n × r factor whose singular values span [1/cond, 1] geometrically."""
    Q1 = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))[0]
    Q2 = torch.linalg.qr(torch.randn(r, r, generator=gen, dtype=torch.float64))[0]
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), r, dtype=torch.float64)
    return (Q1 * s) @ Q2.T


def _takes_gram_route(U: torch.Tensor, V: torch.Tensor) -> bool:
    return bool(r_from_gram(gram(U))[1].all() and r_from_gram(gram(V))[1].all())


@pytest.mark.parametrize("cond", [1.0, 1e2, 0.9 * GRAM_MAX_COND, 1e5, 1e9])
def test_matches_dense_svd_across_conditioning(cond):
    gen = torch.Generator().manual_seed(int(cond) % 1000)
    U, V = _conditioned(60, 6, cond, gen), _conditioned(45, 6, 3.0, gen)
    assert _takes_gram_route(U, V) == (cond < GRAM_MAX_COND)  # well-conditioned: Gram; otherwise QR fallback
    dense = torch.linalg.svd(U @ V.T)
    left, S, right = svd_factors(U, V)
    tol = 1e-10 * float(dense.S[0])
    torch.testing.assert_close(S, dense.S[:6], rtol=0, atol=tol)
    torch.testing.assert_close(singular_values(U, V), dense.S[:6], rtol=0, atol=tol)
    torch.testing.assert_close((left * S) @ right.T, U @ V.T, rtol=0, atol=tol)
    torch.testing.assert_close(left.T @ left, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-9)
    # the singular vectors agree with the dense ones up to sign (singular values here are distinct)
    align = (left * dense.U[:, :6]).sum(0).abs()
    torch.testing.assert_close(align, torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-6)


def test_float32_gram_route_is_accurate():
    gen = torch.Generator().manual_seed(3)
    U, V = _conditioned(300, 8, 50.0, gen).float(), _conditioned(200, 8, 5.0, gen).float()
    dense = torch.linalg.svdvals(U.double() @ V.double().T)[:8]
    S = singular_values(U, V)
    assert S.dtype == torch.float32
    torch.testing.assert_close(S.double(), dense, rtol=0, atol=1e-6 * float(dense[0]))
    left, S2, right = svd_factors(U, V)
    torch.testing.assert_close(S2.double(), dense, rtol=0, atol=1e-6 * float(dense[0]))
    torch.testing.assert_close(left.T @ left, torch.eye(8), rtol=0, atol=1e-5)


def test_rank_deficient_rows_fall_back_to_qr_in_a_mixed_batch():
    gen = torch.Generator().manual_seed(5)
    (U, V), = random_factors([(30, 20)], 4, 3, generator=gen)
    U[1, :, 3] = U[1, :, 0] - 2 * U[1, :, 1]  # exactly rank 3: Cholesky fails or cond(R) explodes
    V[2, :, 2] = 0.0  # a dead column of V
    _, ok_u = r_from_gram(gram(U))
    _, ok_v = r_from_gram(gram(V))
    assert (ok_u & ok_v).tolist() == [True, False, False]
    left, S, right = svd_factors(U, V)
    for b in range(3):
        dense = torch.linalg.svdvals(U[b] @ V[b].T)[:4]
        torch.testing.assert_close(S[b], torch.where(dense > 1e-10, dense, torch.zeros_like(dense)), atol=1e-10,
                                   rtol=0)
        torch.testing.assert_close((left[b] * S[b]) @ right[b].T, U[b] @ V[b].T, atol=1e-10, rtol=0)
        torch.testing.assert_close(singular_values(U[b], V[b]), dense, atol=1e-10, rtol=0)
    assert int((S[1] > 0).sum()) == 3 and int((S[2] > 0).sum()) == 3


def test_rank_above_a_side_and_zero_factors():
    gen = torch.Generator().manual_seed(6)
    (U, V), = random_factors([(3, 9)], 6, generator=gen)
    S = singular_values(U, V)
    torch.testing.assert_close(S[:3], torch.linalg.svdvals(U @ V.T)[:3], atol=1e-10, rtol=0)
    assert (S[3:] == 0).all()
    zero = singular_values(torch.zeros(10, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64))
    assert (zero == 0).all()


def test_gl_invariance_on_the_gram_route():
    gen = torch.Generator().manual_seed(9)
    factors = random_factors([(40, 30), (25, 25)], 5, generator=gen)
    assert all(_takes_gram_route(U, V) for U, V in factors)
    assert_invariant(lambda f: [singular_values(U, V) for U, V in f], factors, generator=gen)
    assert_invariant(lambda f: [torch.cat(svd_factors(U, V)[0::2], -2) for U, V in f], factors, generator=gen)


def test_health_uses_the_same_values_for_float32_and_rank_deficient_modules():
    gen = torch.Generator().manual_seed(11)
    U = torch.randn(2, 50, 4, generator=gen)
    V = torch.randn(2, 40, 4, generator=gen)
    U[1, :, 3] = 0.0
    mods = [ModuleFactors(f"m{i}", U[i], V[i].T.contiguous().T, 1.0, "default", dtype="F32") for i in range(2)]
    rep = health(Adapter("mem://t", AdapterMeta(format="peft", dtypes={"F32": 4}), mods))
    for i, st in enumerate(rep.modules):
        dense = torch.linalg.svdvals(U[i].double() @ V[i].double().T)[:4]
        got = torch.tensor(st["singular_values"], dtype=torch.float64)
        torch.testing.assert_close(got, dense, atol=1e-9 * float(dense[0]), rtol=0)
    assert rep.modules[1]["numerical_rank"] == 3


def test_lists_of_factors_equal_the_stacked_batch():
    gen = torch.Generator().manual_seed(13)
    (U, V), = random_factors([(30, 20)], 4, 3, generator=gen)
    U[2, :, 1] = 0.0  # one row on the QR fallback
    Us, Vs = list(U.float()), [v.T.contiguous().T for v in V.float()]  # V as transposed views, like the reader's
    for got, want in zip(canonicalize(Us, Vs), canonicalize(U.float(), V.float())):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(svd_factors(Us, Vs), svd_factors(U, V)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    (U3, V3), = random_factors([(2, 9)], 4, 2, generator=gen)  # r > n: QR route for lists too
    torch.testing.assert_close(svd_factors(list(U3), list(V3)).S, svd_factors(U3, V3).S)
    with pytest.raises(ValueError, match="rank mismatch"):
        svd_factors([U[0]], [V[0][:, :3]])


def test_memoized_grams_follow_in_place_changes():
    gen = torch.Generator().manual_seed(17)
    (U, V), = random_factors([(20, 15)], 3, generator=gen)
    before = singular_values(U, V)
    U[:, 0] *= 3.0  # in place: the memoized Gram of U must not be reused
    after = singular_values(U, V)
    torch.testing.assert_close(after, torch.linalg.svdvals(U @ V.T)[:3], rtol=0, atol=1e-10)
    assert not torch.allclose(before, after)


def test_sign_fix_picks_the_first_largest_magnitude_entry_even_on_ties():
    from lolctl.canonical import _sign_fix

    gen = torch.Generator().manual_seed(19)
    for _ in range(300):
        x = torch.randint(-3, 4, (2, 5, 4), generator=gen).double()  # many exact ties, zero columns
        idx = x.abs().argmax(dim=-2, keepdim=True)
        first = torch.sign(torch.gather(x, -2, idx))
        assert torch.equal(_sign_fix(x), torch.where(first == 0, torch.ones_like(first), first))
