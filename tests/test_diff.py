"""lolctl.diff: GL-invariant comparison of two adapters' updates, checked against dense computations."""

from __future__ import annotations

import math

import pytest
import scipy.linalg
import torch

from lolctl.diff import diff_adapters, diff_factors, module_diff, principal_angles
from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, ModuleFactors
from lolctl.group import GL
from lolctl.testing import assert_invariant, assert_sensitive, random_factors

SHAPES = [(12, 9), (7, 15), (10, 10)]


def _numbers(d) -> torch.Tensor:
    """Every figure of a diff as one float64 vector (for the invariance checkers)."""
    values = [d.cosine, d.rel_diff, d.norm_a, d.norm_b]
    for m in d.modules:
        values += [m.cosine, m.rel_diff, m.norm_a, m.norm_b, *m.col_angles, *m.row_angles]
    return torch.tensor(values, dtype=torch.float64)


def _split_diff(count_a: int):
    """fn(factors of A + factors of B) -> the diff's figures: lets the checkers act on both sides independently."""

    def fn(factors):
        a = [(f"m{i}", U, V) for i, (U, V) in enumerate(factors[:count_a])]
        b = [(f"m{i}", U, V) for i, (U, V) in enumerate(factors[count_a:])]
        return _numbers(diff_factors(a, b))

    return fn


def _related_pair(gen: torch.Generator, ranks_a: list[int], ranks_b: list[int]):
    """B shares part of A's update (so angles and cosines are not all generic), plus its own directions."""
    a = random_factors(SHAPES, ranks_a, generator=gen)
    b = []
    for (Ua, Va), rb, (n, m) in zip(a, ranks_b, SHAPES):
        k = min(rb, Ua.shape[1]) // 2
        Ub = torch.cat([Ua[:, :k], torch.randn(n, rb - k, generator=gen, dtype=torch.float64)], 1)
        Vb = torch.cat([Va[:, :k], torch.randn(m, rb - k, generator=gen, dtype=torch.float64)], 1)
        b.append((Ub, Vb))
    return a, b


@pytest.mark.parametrize("ranks_a,ranks_b", [([4, 4, 4], [4, 4, 4]), ([2, 4, 6], [5, 3, 6]), ([1, 8, 3], [3, 1, 8])])
def test_invariant_under_independent_gl_per_module_and_side(ranks_a, ranks_b):
    gen = torch.Generator().manual_seed(sum(ranks_a) * 7 + sum(ranks_b))
    a, b = _related_pair(gen, ranks_a, ranks_b)
    fn = _split_diff(len(a))
    assert_invariant(fn, a + b, trials=4, generator=gen)
    assert_sensitive(fn, a + b, generator=gen)


def test_refactored_copy_is_identical():
    gen = torch.Generator().manual_seed(3)
    a = random_factors(SHAPES, [4, 2, 6], generator=gen)
    copy = [GL.act(U, V, GL(U.shape[1]).random(generator=gen, cond=50.0)) for U, V in a]
    d = diff_factors([(f"m{i}", U, V) for i, (U, V) in enumerate(a)],
                     [(f"m{i}", U, V) for i, (U, V) in enumerate(copy)])
    assert d.cosine == pytest.approx(1.0, abs=1e-12)
    assert d.rel_diff < 1e-12
    assert d.max_col_angle < 1e-6 and d.max_row_angle < 1e-6  # degrees
    for m in d.modules:
        assert m.cosine == pytest.approx(1.0, abs=1e-12) and m.rel_diff < 1e-12
        assert len(m.col_angles) == len(m.row_angles) == m.rank_a
    assert not d.only_a and not d.only_b and not d.mismatched


def _dense_angles(Da: torch.Tensor, Db: torch.Tensor, ka: int, kb: int) -> tuple[list[float], list[float]]:
    """Principal angles (degrees, ascending) of the dense ΔW's column and row spaces, via scipy."""
    out = []
    for X, Y in ((Da, Db), (Da.T, Db.T)):
        qa = torch.linalg.svd(X)[0][:, :ka].numpy()
        qb = torch.linalg.svd(Y)[0][:, :kb].numpy()
        out.append(sorted(math.degrees(t) for t in scipy.linalg.subspace_angles(qa, qb)))
    return out[0], out[1]


@pytest.mark.parametrize("n,m,ra,rb,seed", [(12, 9, 4, 4, 0), (7, 15, 2, 5, 1), (10, 10, 6, 3, 2), (20, 6, 1, 6, 3)])
def test_agrees_with_dense_computation(n, m, ra, rb, seed):
    gen = torch.Generator().manual_seed(seed)
    ((Ua, Va),) = random_factors([(n, m)], ra, generator=gen)
    ((Ub, Vb),) = random_factors([(n, m)], rb, generator=gen)
    Ub[:, :1], Vb[:, :1] = Ua[:, :1], Va[:, :1]  # one shared direction: a non-trivial cosine and a 0° angle
    Da, Db = Ua @ Va.T, Ub @ Vb.T
    d = module_diff("x", Ua, Va, Ub, Vb)
    dense_cos = float((Da * Db).sum() / (Da.norm() * Db.norm()))
    assert d.cosine == pytest.approx(dense_cos, abs=1e-12)
    assert d.rel_diff == pytest.approx(float((Da - Db).norm() / Da.norm()), rel=1e-10)
    assert d.norm_a == pytest.approx(float(Da.norm()), rel=1e-12)
    assert d.norm_b == pytest.approx(float(Db.norm()), rel=1e-12)
    ka, kb = min(ra, n, m), min(rb, n, m)
    col, row = _dense_angles(Da, Db, ka, kb)
    assert len(d.col_angles) == len(col) == min(ka, kb)
    # scipy's dense route resolves small angles to ~√eps rad (2e-6°); ours are checked to 1e-9 rad separately
    assert list(d.col_angles) == pytest.approx(col, abs=1e-5)
    assert list(d.row_angles) == pytest.approx(row, abs=1e-5)
    assert min(d.col_angles) < 1e-6  # the shared direction


def test_sensitive_to_small_changes():
    gen = torch.Generator().manual_seed(5)
    ((U, V),) = random_factors([(16, 12)], 4, generator=gen)
    for eps in (1e-6, 1e-3, 1e-1):
        U2 = U + eps * torch.randn(U.shape, generator=gen, dtype=torch.float64)
        d = module_diff("x", U, V, U2, V)
        dense = float((U @ V.T - U2 @ V.T).norm() / (U @ V.T).norm())
        assert d.rel_diff == pytest.approx(dense, rel=1e-6)
        assert d.rel_diff > 0.1 * eps
        assert d.cosine < 1.0 or eps < 1e-5
    # a scaled copy: same direction, not the same update
    d = module_diff("x", U, V, 2 * U, V)
    assert d.cosine == pytest.approx(1.0, abs=1e-12) and d.rel_diff == pytest.approx(1.0, rel=1e-12)
    # the negated update
    d = module_diff("x", U, V, -U, V)
    assert d.cosine == pytest.approx(-1.0, abs=1e-12) and d.rel_diff == pytest.approx(2.0, rel=1e-12)


def test_orthogonal_updates_and_angles_of_90_degrees():
    U = torch.eye(6, dtype=torch.float64)
    a = module_diff("x", U[:, :2], U[:, :2], U[:, 2:4], U[:, 2:4])
    assert a.cosine == pytest.approx(0.0, abs=1e-15)
    assert a.rel_diff == pytest.approx(math.sqrt(2), rel=1e-12)
    assert list(a.col_angles) == pytest.approx([90.0, 90.0]) and list(a.row_angles) == pytest.approx([90.0, 90.0])


def test_principal_angles_small_angle_accuracy():
    """atan2(sin, cos): an angle of 1e-9 rad is resolved (arccos of the cosine alone would give 0 or ~1e-8)."""
    t = 1e-9
    A = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    B = torch.tensor([[math.cos(t)], [math.sin(t)]], dtype=torch.float64)
    assert float(principal_angles(A, B)[0]) == pytest.approx(t, rel=1e-6)


def _adapter(source: str, modules: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Adapter:
    return Adapter(source, AdapterMeta("peft"),
                   [ModuleFactors(name, U, V, 1.0, "test") for name, (U, V) in modules.items()])


def test_modules_present_in_one_only_and_shape_mismatch():
    gen = torch.Generator().manual_seed(9)
    (p, q, s, t) = random_factors([(8, 6), (5, 7), (8, 6), (6, 8)], 2, generator=gen)
    a = _adapter("A", {"common": p, "only_in_a": q, "reshaped": s})
    b = _adapter("B", {"common": p, "only_in_b": q, "reshaped": t})
    d = diff_adapters(a, b)
    assert [m.name for m in d.modules] == ["common"]
    assert d.only_a == ["only_in_a"] and d.only_b == ["only_in_b"]
    assert d.mismatched == [{"name": "reshaped", "shape_a": [8, 6], "shape_b": [6, 8]}]
    dense = [(U @ V.T).norm() ** 2 for U, V in (p, q, s, t)]
    norm_a, norm_b = math.sqrt(dense[0] + dense[1] + dense[2]), math.sqrt(dense[0] + dense[1] + dense[3])
    assert d.norm_a == pytest.approx(norm_a, rel=1e-12) and d.norm_b == pytest.approx(norm_b, rel=1e-12)
    assert d.cosine == pytest.approx(float(dense[0]) / (norm_a * norm_b), rel=1e-12)
    # q is counted on both sides (present in each under another name), s and t as they are
    assert d.rel_diff == pytest.approx(math.sqrt(2 * dense[1] + dense[2] + dense[3]) / norm_a, rel=1e-12)
    doc = d.to_dict()
    assert doc["schema"] == "lolctl.diff/v1" and doc["overall"]["cosine"] == d.cosine
    assert doc["modules"][0]["cosine"] == pytest.approx(1.0)


def test_zero_update_has_no_cosine_and_nan_is_refused():
    gen = torch.Generator().manual_seed(10)
    ((U, V),) = random_factors([(8, 6)], 2, generator=gen)
    d = module_diff("x", torch.zeros_like(U), V, U, V)
    assert d.cosine is None and d.rel_diff is None and d.col_angles == ()
    d = module_diff("x", U, V, torch.zeros_like(U), V)
    assert d.cosine is None and d.rel_diff == pytest.approx(1.0)
    bad = U.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(LolctlError) as err:
        diff_adapters(_adapter("A", {"x": (U, V)}), _adapter("B", {"x": (bad, V)}))
    assert err.value.code == "L146" and "B: x" in err.value.where
