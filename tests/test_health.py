from __future__ import annotations

import torch

from lolctl.factors import Adapter, AdapterMeta, ModuleFactors, Payload
from lolctl.group import GL
from lolctl.health import health


def _module(name, U, V, scale=2.0, **kw):
    return ModuleFactors(name, U, V, scale, "lora_alpha/r", dtype="F32", **kw)


def _adapter(modules, **kw):
    return Adapter("mem://test", AdapterMeta(format="peft", dtypes={"F32": 2 * len(modules)}), modules, **kw)


def test_stats_match_dense_svd():
    gen = torch.Generator().manual_seed(0)
    mods = [
        _module(
            f"layer.{i}.q",
            torch.randn(12, 4, generator=gen, dtype=torch.float64),
            torch.randn(9, 4, generator=gen, dtype=torch.float64),
        )
        for i in range(3)
    ]
    rep = health(_adapter(mods))
    for m, st in zip(mods, rep.modules):
        S = torch.linalg.svdvals(m.delta())[:4]
        assert torch.allclose(torch.tensor(st["singular_values"], dtype=torch.float64), S, atol=1e-10)
        assert abs(st["fro_norm"] - float(torch.linalg.norm(m.delta()))) < 1e-9
        assert abs(st["spectral_norm"] - float(S[0])) < 1e-9
        assert abs(st["stable_rank"] - float((S**2).sum() / S[0] ** 2)) < 1e-9
        assert 1.0 <= st["effective_rank"] <= 4.0
        assert 1 <= st["energy_rank_90"] <= st["energy_rank_99"] <= 4
    assert rep.findings == []
    assert rep.summary["modules"] == 3 and rep.summary["ranks"] == [4]


def test_stats_are_gl_invariant():
    gen = torch.Generator().manual_seed(1)
    U, V = (
        torch.randn(10, 3, generator=gen, dtype=torch.float64),
        torch.randn(7, 3, generator=gen, dtype=torch.float64),
    )
    U2, V2 = GL.act(U, V, GL(3).random(generator=gen))
    a = health(_adapter([_module("m", U, V)])).modules[0]
    b = health(_adapter([_module("m", U2, V2)])).modules[0]
    for key in ("singular_values", "fro_norm", "stable_rank", "effective_rank", "energy_rank_99"):
        assert torch.allclose(torch.tensor(a[key], dtype=torch.float64), torch.tensor(b[key], dtype=torch.float64))


def _codes(rep):
    return {f.code: f for f in rep.findings}


def test_findings_inert_collapsed_nonfinite_scale_payload():
    gen = torch.Generator().manual_seed(2)
    V = torch.randn(9, 4, generator=gen)
    inert = _adapter([_module(f"l.{i}", torch.zeros(8, 4), V) for i in range(2)])
    f = _codes(health(inert))
    assert f["H202"].severity == "error"

    U = torch.randn(8, 4, generator=gen)
    U[:, 2:] = 0.0
    collapsed = _adapter([_module("a", U, V), _module("b", torch.zeros(8, 4), V)])
    f = _codes(health(collapsed))
    assert "H203" in f and "(2/4)" in f["H203"].message
    assert f["H202"].severity == "warning" and f["H202"].module == "b"

    bad = torch.randn(8, 4, generator=gen)
    bad[0, 0] = float("nan")
    f = _codes(health(_adapter([_module("nan", bad, V), _module("ok", torch.randn(8, 4, generator=gen), V)])))
    assert f["H201"].severity == "error" and f["H201"].module == "nan"

    f = _codes(health(_adapter([_module("s", torch.randn(8, 4, generator=gen), V, scale=64.0)])))
    assert "H206" in f

    big = Payload("classifier.weight", (1000, 384), "F32", 1000 * 384 * 4)
    f = _codes(health(_adapter([_module("p", torch.randn(8, 4, generator=gen), V)], payload=[big])))
    assert f["H207"].severity == "warning"


def test_mixed_dtypes_and_dora_stats():
    gen = torch.Generator().manual_seed(3)
    m = _module(
        "d",
        torch.randn(8, 2, generator=gen),
        torch.randn(5, 2, generator=gen),
        extras={"dora_magnitude": torch.rand(8, generator=gen) + 1},
    )
    ad = _adapter([m])
    ad.meta.dtypes = {"F32": 2, "BF16": 1}
    rep = health(ad)
    assert "H208" in _codes(rep)
    dora = rep.modules[0]["dora_magnitude"]
    assert 1.0 <= dora["min"] <= dora["mean"] <= dora["max"] <= 2.0
