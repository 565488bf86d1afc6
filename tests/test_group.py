"""The group object and the public checkers — including tests that the checkers FAIL when they should."""

from __future__ import annotations

import pytest
import torch

from lolctl.group import GL, GLProduct
from lolctl.testing import assert_equivariant, assert_invariant, assert_sensitive, random_factors


@pytest.mark.parametrize("r", [1, 2, 4, 16])
def test_random_elements_are_well_conditioned(r):
    gen = torch.Generator().manual_seed(r)
    g = GL(r).random(8, cond=4.0, generator=gen)
    assert g.shape == (8, r, r) and g.dtype == torch.float64
    cond = torch.linalg.cond(g)
    assert float(cond.max()) <= 4.0 + 1e-9


def test_action_preserves_delta_and_wrong_action_does_not():
    gen = torch.Generator().manual_seed(0)
    ((U, V),) = random_factors([(12, 9)], 4, generator=gen)
    g = GL(4).random(generator=gen)
    U2, V2 = GL.act(U, V, g)
    torch.testing.assert_close(U2 @ V2.T, U @ V.T, rtol=0, atol=1e-12)
    U3, V3 = GL.wrong_act(U, V, g)
    assert (U3 @ V3.T - U @ V.T).abs().max() > 1e-3


def test_product_acts_per_module():
    gen = torch.Generator().manual_seed(1)
    factors = random_factors([(5, 6), (7, 3)], [2, 3], generator=gen)
    gs = GLProduct((2, 3)).random(generator=gen)
    moved = GLProduct.act(factors, gs)
    for (U, V), (U2, V2) in zip(factors, moved):
        torch.testing.assert_close(U2 @ V2.T, U @ V.T, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        GLProduct.act(factors, gs[:1])


def _delta(factors):
    return [U @ V.mT for U, V in factors]


def test_checkers_pass_on_invariant_and_equivariant_functions():
    factors = random_factors([(6, 5), (4, 8)], 3, generator=torch.Generator().manual_seed(2))
    assert_invariant(_delta, factors)
    assert_sensitive(_delta, factors)
    assert_equivariant(lambda f: [(2.0 * U, V) for U, V in f], factors)


def test_invariance_checker_fails_on_non_invariant_function():
    factors = random_factors([(6, 5)], 3, generator=torch.Generator().manual_seed(3))
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda f: [U for U, _ in f], factors)
    # U^T U is O(r)-invariant but not GL(r)-invariant: the checker tells the groups apart
    gram = lambda f: [U.mT @ U @ (V.mT @ V) for U, V in f]  # noqa: E731
    with pytest.raises(AssertionError):
        assert_invariant(gram, factors)


def test_equivariance_checker_fails_on_non_equivariant_function():
    factors = random_factors([(6, 5)], 3, generator=torch.Generator().manual_seed(4))
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda f: [(U.abs(), V) for U, V in f], factors)
    # V V^T V is O(r)-equivariant but not GL(r)-equivariant
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda f: [(U, V @ (V.mT @ V)) for U, V in f], factors)


def test_sensitivity_checker_fails_on_constant_function():
    factors = random_factors([(6, 5)], 3, generator=torch.Generator().manual_seed(5))
    with pytest.raises(AssertionError, match="insensitive"):
        assert_sensitive(lambda f: torch.ones(3, dtype=torch.float64), factors)
