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


# --- H205 magnitude outlier ---------------------------------------------------------------------------------------
def _outlier_factors(boost: float = 30.0, layers: int = 6):
    from lolctl.testing import random_factors

    gen = torch.Generator().manual_seed(5)
    factors = random_factors([(16, 12)] * layers + [(16, 12)] * layers, 3, generator=gen)
    U, V = factors[2]
    factors[2] = (boost * U, V)  # layer 2's query: 30x its siblings
    return factors


def _outlier_ratios(factors):
    """Per module: σ₁ / median σ₁ of its siblings when H205 flags it, else 0 (a tensor, for lolctl.testing)."""
    from lolctl.health import magnitude_outliers, module_stats

    layers = len(factors) // 2
    names = [f"encoder.layer.{i}.attention.self.{m}" for m in ("query", "value") for i in range(layers)]
    mods = [_module(n, U, V) for n, (U, V) in zip(names, factors)]
    hits = dict(magnitude_outliers(mods, module_stats(mods)))
    return torch.tensor([hits.get(n, 0.0) for n in names], dtype=torch.float64)


def test_magnitude_outlier_fires_is_gl_invariant_and_sensitive():
    from lolctl.testing import assert_invariant, assert_sensitive

    factors = _outlier_factors()
    ratios = _outlier_ratios(factors)
    assert ratios[2] > 10 and (ratios[[0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11]] == 0).all()
    gen = torch.Generator().manual_seed(6)
    assert_invariant(_outlier_ratios, factors, generator=gen)
    assert_sensitive(_outlier_ratios, factors, generator=gen)
    assert (_outlier_ratios(_outlier_factors(boost=3.0)) == 0).all()  # 3x is not an outlier


def test_magnitude_outlier_finding_and_nan_module_in_the_summary():
    factors = _outlier_factors()
    names = [f"encoder.layer.{i}.attention.self.{m}" for m in ("query", "value") for i in range(6)]
    mods = [_module(n, U.float(), V.float()) for n, (U, V) in zip(names, factors)]
    rep = health(_adapter(mods))
    h205 = _codes(rep)["H205"]
    assert h205.severity == "warning" and h205.module == "encoder.layer.2.attention.self.query"
    assert rep.summary["nonfinite_modules"] == 0
    bad_U = mods[5].U.clone()
    bad_U[0, 0] = float("nan")
    mods[5] = _module(mods[5].name, bad_U, mods[5].V)
    rep = health(_adapter(mods))
    assert rep.summary["nonfinite_modules"] == 1 and "H201" in _codes(rep)
    from rich.console import Console

    from lolctl.report.health import summary_table

    console = Console(record=True, width=100)
    console.print(summary_table("x", rep.summary))
    assert "‖ΔW‖_F (all but 1 NaN/Inf)" in console.export_text()
