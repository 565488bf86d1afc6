"""Symmetries of GL-net and the baselines, in float64: invariance, equivariance, sensitivity, ranks, budgets."""

from __future__ import annotations

import pytest
import torch

from lolctl.errors import LolctlError
from lolctl.group import GL
from lolctl.nn import MODELS, InputSpec, LoraBatch, ModuleSpec, TaskSpec, build_model
from lolctl.nn.glnet import GLNet, gl_gate, row_dropout
from lolctl.testing import assert_equivariant, assert_invariant, assert_sensitive, random_factors

SPEC = InputSpec((ModuleSpec("a.q", 9, 7), ModuleSpec("a.v", 9, 7), ModuleSpec("b.o", 7, 9), ModuleSpec("b.q", 9, 7)))
SHAPES = [m.shape for m in SPEC.modules]
TASKS = (
    TaskSpec("quality", "regression", ("quality",)),
    TaskSpec("membership", "multilabel", ("membership[x]", "membership[y]"), ("x", "y")),
    TaskSpec("topic", "multiclass", ("topic",), ("p", "q", "s")),
)
GL_INVARIANT = ["glnet", "mlp_svd", "mlp_dense", "transformer"]
SMALL = {"transformer": {"d_model": 16, "heads": 2}, "glnet": {"hidden": 6}}


pytestmark = pytest.mark.usefixtures("one_thread")


def make(name: str, **values) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, {**SMALL.get(name, {}), **values}, SPEC, TASKS).double().eval()
    gen = torch.Generator().manual_seed(1)
    model.prepare(LoraBatch.from_factors(SPEC, random_factors(SHAPES, 4, 8, generator=gen)))
    return model


def as_fn(model):
    return lambda factors: {k: v.detach() for k, v in model(LoraBatch.from_factors(SPEC, factors)).items()}


def factors(r, batch=3, seed=2):
    return random_factors(SHAPES, r, batch, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_every_model():
    assert set(MODELS) == {"glnet", "mlp", "mlp_svd", "mlp_oalign", "mlp_dense", "transformer", "composite"}


@pytest.mark.parametrize("name", GL_INVARIANT)
def test_gl_invariant_and_sensitive(name):
    model = make(name)
    f = factors(4)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(3))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("name", GL_INVARIANT)
def test_accepts_ranks_1_to_32(name):
    model = make(name)
    for r in (1, 2, 5, 16, 32):
        out = as_fn(model)(factors(r, batch=2))
        assert out["quality"].shape == (2, 1) and out["membership"].shape == (2, 2) and out["topic"].shape == (2, 3)
        assert all(torch.isfinite(v).all() for v in out.values())
    assert_invariant(as_fn(model), factors(32, batch=1), trials=1, generator=torch.Generator().manual_seed(5))


def test_mixed_ranks_and_zero_padding_change_nothing():
    """Modules of different ranks in one adapter; padding a module with zero columns gives the same output."""
    for name in GL_INVARIANT:
        model = make(name)
        f = random_factors(SHAPES, [1, 3, 2, 5], 2, generator=torch.Generator().manual_seed(6))
        padded = [(torch.nn.functional.pad(U, (0, 3)), torch.nn.functional.pad(V, (0, 3))) for U, V in f]
        a, b = as_fn(model)(f), as_fn(model)(padded)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-9, msg=f"{name}: {k}")


def test_fixed_rank_models_refuse_higher_ranks():
    for name in ("mlp", "mlp_oalign"):
        model = make(name, rank=4)
        as_fn(model)(factors(3))  # lower ranks are zero-padded
        with pytest.raises(LolctlError) as err:
            as_fn(model)(factors(5))
        assert err.value.code == "L171" and "rank 5" in str(err.value)


def test_oalign_is_orthogonal_invariant_but_not_gl_invariant():
    model = make("mlp_oalign", rank=4)
    f = factors(4)
    assert_invariant(as_fn(model), f, orthogonal=True, generator=torch.Generator().manual_seed(7))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(8))
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(9))


def test_plain_mlp_is_not_invariant():
    model = make("mlp", rank=4)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(as_fn(model), factors(4), orthogonal=True, generator=torch.Generator().manual_seed(10))


def test_glnet_equivariant_trunk_and_pieces():
    model = make("glnet", layers=3)
    gen = torch.Generator().manual_seed(11)

    def trunk(fs):
        U, V = model.equivariant(LoraBatch.from_factors(SPEC, fs))  # (B, L, h, R) in slot order
        slots = [i for g in SPEC.groups for i in g.indices]
        out = [None] * len(SPEC)
        for j, i in enumerate(slots):
            out[i] = (U[:, j].detach(), V[:, j].detach())
        return out

    assert_equivariant(trunk, factors(3), generator=gen)
    # the gate alone, and row dropout with a fixed seed, are equivariant too
    hs = [(6, 6)] * 2
    assert_equivariant(
        lambda fs: [gl_gate(U, V) for U, V in fs], random_factors(hs, 3, 4, generator=gen), generator=gen
    )

    def dropped(fs):
        torch.manual_seed(12)
        return [(row_dropout(U, 0.5, True), row_dropout(V, 0.5, True)) for U, V in fs]

    assert_equivariant(dropped, random_factors(hs, 3, 4, generator=gen), generator=gen)
    # a wrong action is noticed by the checker: the trunk is not "equivariant" because it ignores its input
    with pytest.raises(AssertionError):
        f = factors(3)
        base = trunk(f)
        gs = [GL(3).random(3, generator=gen) for _ in f]
        moved = trunk([GL.wrong_act(U, V, g) for (U, V), g in zip(f, gs)])
        expected = [GL.act(U, V, g) for (U, V), g in zip(base, gs)]
        torch.testing.assert_close(
            torch.cat([m[0].flatten() for m in moved]), torch.cat([e[0].flatten() for e in expected])
        )


def test_glnet_gate_never_forms_hxh_product():
    """The gate equals the definition through U'V'ᵀ, computed without it."""
    U, V = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    M = U @ V.transpose(-1, -2)
    gu, gv = gl_gate(U, V)
    torch.testing.assert_close(gu, U * (M.sum(-1, keepdim=True) > 0))
    torch.testing.assert_close(gv, V * (M.sum(-2).unsqueeze(-1) > 0))


def test_glnet_with_singular_values_is_still_invariant():
    model = make("glnet", singular_values=4)
    f = factors(4)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(13))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(14))


def test_glnet_parameters_are_per_module_and_grouped():
    model = make("glnet", hidden=6, layers=2)
    assert isinstance(model, GLNet)
    assert [tuple(p.shape) for p in model.in_U] == [(3, 6, 9), (1, 6, 7)]  # two shape groups
    assert [tuple(p.shape) for p in model.hid_U] == [(4, 6, 6)]


def test_dense_refuses_past_memory_budget():
    big = InputSpec(tuple(ModuleSpec(f"m{i}", 4096, 4096) for i in range(12)))
    with pytest.raises(LolctlError) as err:
        build_model("mlp_dense", {}, big, TASKS)
    assert err.value.code == "L173" and "budget" in str(err.value)
    build_model("mlp_dense", {"memory_budget_mb": 1.0}, SPEC, TASKS)  # a small spec fits


def test_config_validation_names_the_field():
    with pytest.raises(LolctlError, match="hidden"):
        build_model("glnet", {"hidden": "wide"}, SPEC, TASKS)
    with pytest.raises(LolctlError, match="no such field"):
        build_model("glnet", {"widht": 3}, SPEC, TASKS)
    with pytest.raises(LolctlError, match="unknown model"):
        build_model("resnet", {}, SPEC, TASKS)


def test_batch_layout_roundtrip_and_respec():
    f = random_factors(SHAPES, [2, 3, 1, 2], 2, generator=torch.Generator().manual_seed(15))
    batch = LoraBatch.from_factors(SPEC, f)
    assert batch.max_rank == 3 and batch.ranks.tolist() == [[2, 3, 1, 2]] * 2
    for (U, V), (U2, V2) in zip(f, batch.factors()):
        torch.testing.assert_close(U2[..., : U.shape[-1]], U)
        assert not U2[..., U.shape[-1] :].any() and not V2[..., V.shape[-1] :].any()
    reordered = InputSpec(tuple(reversed(SPEC.modules)))
    moved = batch.respec(reordered)
    assert moved.ranks.tolist() == [[2, 1, 3, 2]] * 2
    torch.testing.assert_close(moved.factors()[0][0], batch.factors()[3][0])
    with pytest.raises(LolctlError, match="L171"):
        batch.respec(InputSpec((*SPEC.modules[:3], ModuleSpec("b.q", 9, 8))))


def test_fixed_rank_models_default_to_the_zoos_largest_rank():
    from lolctl.nn.workflow import rank_defaults

    assert rank_defaults("mlp", {}, 16) == {"rank": 16}
    assert rank_defaults("mlp_oalign", {"rank": "8"}, 16) == {"rank": "8"}  # an explicit value wins
    assert (
        rank_defaults("mlp_svd", {}, 4) == {"max_rank": 32} and rank_defaults("transformer", {}, 64)["max_rank"] == 64
    )
    assert rank_defaults("glnet", {}, 64) == {}  # any rank


def test_select_trims_rank_padding_and_cat_pads():
    low = LoraBatch.from_factors(SPEC, random_factors(SHAPES, 2, 2, generator=torch.Generator().manual_seed(16)))
    high = LoraBatch.from_factors(SPEC, random_factors(SHAPES, 6, 1, generator=torch.Generator().manual_seed(17)))
    both = LoraBatch.cat([low, high])
    assert both.size == 3 and both.max_rank == 6 and both.ranks[:, 0].tolist() == [2, 2, 6]
    assert both.select([0, 1]).max_rank == 2 and both.select([1, 2]).max_rank == 6
    model = make("glnet")
    torch.testing.assert_close(as_fn(model)(low.factors())["quality"], model(both.select([0, 1]))["quality"].detach())


@pytest.mark.parametrize("name", ["glnet", "mlp_svd"])
def test_unit_norm_option_keeps_invariance_and_sensitivity(name):
    model = make(name, unit_norm=True)
    f = factors(3)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(18))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(19))
    scaled = [(3.0 * U, V) for U, V in f]  # only the magnitudes change: the log-norm input sees it
    assert not torch.allclose(as_fn(model)(f)["quality"], as_fn(model)(scaled)["quality"])


def test_glnet_data_init_spans_the_principal_directions_and_ignores_factor_bases():
    """data_init: W1 rows = top eigenvectors of Σ ΔWΔWᵀ/‖ΔW‖² (orthonormal), identical (up to sign) when every
    adapter's factors are rewritten by a random g, changed when the adapters change; the model stays invariant."""
    gen = torch.Generator().manual_seed(30)
    train = random_factors(SHAPES, 2, 12, generator=gen)  # rank 2, 12 adapters: Σ has rank ≤ 7 for 9 x 7

    def prepared(f):
        torch.manual_seed(0)
        model = build_model("glnet", {"hidden": 4, "data_init": True}, SPEC, TASKS).double()
        model.prepare(LoraBatch.from_factors(SPEC, f))
        return model

    model = prepared(train)
    U, V = train[0]
    dw = U @ V.mT / torch.linalg.matrix_norm(U @ V.mT)[:, None, None]
    eigvals, eigvecs = torch.linalg.eigh((dw @ dw.mT).sum(0))
    W1 = model.in_U[0][0].detach()  # module a.q: rows p1, -p1/2, p2, -p2/2
    assert torch.allclose(W1[0::2], -2 * W1[1::2])
    top = W1[0::2]
    assert torch.allclose(top @ top.T, torch.eye(2, dtype=W1.dtype), atol=1e-10)
    assert torch.allclose((top @ eigvecs[:, -2:]).abs().sum(0), torch.ones(2, dtype=W1.dtype), atol=1e-8)
    gs = [GL(2).random(12, generator=torch.Generator().manual_seed(31 + i)) for i in range(len(SHAPES))]
    moved = prepared([GL.act(U_, V_, g) for (U_, V_), g in zip(train, gs)])
    for a, b in zip(list(model.in_U) + list(model.in_V), list(moved.in_U) + list(moved.in_V)):
        a, b = a.detach(), b.detach()
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
        assert torch.allclose(cos.abs(), torch.ones(a.shape[:2], dtype=a.dtype), atol=1e-8)
    other = prepared(random_factors(SHAPES, 2, 12, generator=torch.Generator().manual_seed(40)))
    assert not torch.allclose(other.in_U[0][0].detach().abs(), W1.abs(), atol=1e-3)
    f = factors(3)
    assert_invariant(as_fn(model.eval()), f, generator=torch.Generator().manual_seed(32))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(33))


def test_glnet_anchor_cosines_are_invariant_exact_and_saved():
    """anchors=K: the head also sees each module's cosine similarity to K stored training adapters — equal to the
    dense cos(ΔW_b, ΔW_k), GL-invariant with a g per module, sensitive to a wrong action, and round-tripped by the
    state dict (buffer shapes come from the saved config)."""
    model = make("glnet", anchors=5)
    assert model.config.anchor_rank == 4 and model.anchor_U0.shape == (3, 9, 5 * 4)
    f = factors(3)
    batch = LoraBatch.from_factors(SPEC, f)
    cos = model.anchor_cosines(batch).view(3, len(SPEC), 5)
    gen = torch.Generator().manual_seed(1)  # make() prepared on these training adapters; anchors = seeded choice
    train = random_factors(SHAPES, 4, 8, generator=gen)
    pick = torch.randperm(8, generator=torch.Generator().manual_seed(0))[:5]
    slots = [i for g in SPEC.groups for i in g.indices]
    for slot, i in enumerate(slots):
        dw = f[i][0] @ f[i][1].mT
        anchor = (train[i][0] @ train[i][1].mT)[pick]
        want = torch.einsum("bnm,knm->bk", dw, anchor) / (
            torch.linalg.matrix_norm(dw)[:, None] * torch.linalg.matrix_norm(anchor)[None, :])
        assert torch.allclose(cos[:, slot], want, atol=1e-12)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(34))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(35))
    clone = build_model("glnet", model.config.to_dict(), SPEC, TASKS).double().eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(as_fn(clone)(f)["quality"], as_fn(model)(f)["quality"])



def test_glnet_probe_responses_are_exact_invariant_and_saved(tmp_path):
    """probes=FILE: the head also sees log ‖ΔW_i P_g‖² − log ‖ΔW_i‖² for every module whose input width is the
    probes' — equal to the dense value, GL-invariant with a g per module, scale-free, sensitive to a wrong action;
    the basis is a buffer (a reloaded model needs no probe file); a file of another width probes the modules of
    that input width; a file that is not a probe file is one L176 error."""
    from lolctl.nn.glnet import read_probes, write_probes

    gen = torch.Generator().manual_seed(8)
    moments = [(lambda X: X.T @ X / 20)(torch.randn(20, 7, generator=gen, dtype=torch.float64)) for _ in range(3)]
    path = write_probes(tmp_path / "p.safetensors", ["a", "b", "c"], moments, k=5, source="test")
    names, basis = read_probes(path)
    assert names == ["a", "b", "c"] and basis.shape == (3, 7, 5)
    model = make("glnet", probes=str(path))
    probed = [i for i, mod in enumerate(SPEC.modules) if mod.m == 7]
    assert model._probed == probed and model.config.probe_groups == 3 and model.config.probe_dim == 7
    f = factors(3)
    resp = model.probe_responses(LoraBatch.from_factors(SPEC, f)).view(3, len(probed), 3)
    for slot, i in enumerate(probed):
        dw = f[i][0] @ f[i][1].mT  # (B, n, 7)
        P = basis.double()
        want = torch.log(torch.einsum("bnm,gmk->bgnk", dw, P).square().sum((-1, -2))) - torch.log(
            dw.square().sum((-1, -2)))[:, None]
        torch.testing.assert_close(resp[:, slot], want, rtol=1e-9, atol=1e-9)
    scaled = [(U * 3.0, V) for U, V in f]
    torch.testing.assert_close(model.probe_responses(LoraBatch.from_factors(SPEC, scaled)).view(3, -1, 3), resp)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(44))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(45))
    values = {**model.config.to_dict(), "probes": str(tmp_path / "gone.safetensors")}  # reload: no file needed
    clone = build_model("glnet", values, SPEC, TASKS).double().eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(as_fn(clone)(f)["quality"], as_fn(model)(f)["quality"])
    wide = write_probes(tmp_path / "w.safetensors", ["a"], [torch.eye(9, dtype=torch.float64)], k=2, source="test")
    other = make("glnet", probes=str(wide))  # input width 9: only b.o
    assert other._probed == [i for i, mod in enumerate(SPEC.modules) if mod.m == 9]
    (tmp_path / "bad.safetensors").write_bytes(b"not a probe file")
    with pytest.raises(LolctlError) as err:
        read_probes(tmp_path / "bad.safetensors")
    assert err.value.code == "L176" and "lolctl zoo probes" in err.value.remedy

def test_frobenius_norms_small_and_large_batch_paths_agree(monkeypatch):
    """frobenius_norms takes one product per shape group for small batches and one per module otherwise: both
    equal the dense ‖U Vᵀ‖_F."""
    from lolctl.nn import base

    f = factors(3, batch=5)
    batch = LoraBatch.from_factors(SPEC, f)
    dense = torch.stack([torch.linalg.matrix_norm(U @ V.mT) for U, V in f], dim=1)
    monkeypatch.setattr(base, "SMALL_BATCH", 16)
    assert torch.allclose(base.frobenius_norms(batch), dense, atol=1e-12)
    monkeypatch.setattr(base, "SMALL_BATCH", 0)
    assert torch.allclose(base.frobenius_norms(batch), dense, atol=1e-12)


def test_composite_rank_fallback_routes_by_rank_and_stays_invariant():
    """A composite with a rank fallback: adapters of the training ranks go to the primary member (mlp_svd, which
    reads σ_1..σ_k), others to the rank-free fallback (GL-net), row by row in a mixed batch; both routes are
    GL-invariant and sensitive; forcing a route sends every adapter one way; a fallback needs seen_ranks."""
    names = [t.name for t in TASKS]
    members = [{"architecture": "mlp_svd", "model_config": {"max_rank": 8}, "tasks": names, "fallback": False},
               {"architecture": "glnet", "model_config": {"hidden": 6}, "tasks": names, "fallback": True}]
    torch.manual_seed(0)
    model = build_model("composite", {"members": members, "seen_ranks": [4]}, SPEC, TASKS).double().eval()
    model.prepare(LoraBatch.from_factors(SPEC, factors(4, batch=8, seed=1)))
    primary, fallback = model.members
    assert model.rank_free and not primary.rank_free and fallback.rank_free
    seen, unseen = factors(4), factors(2, seed=7)
    mixed = model(LoraBatch.cat([LoraBatch.from_factors(SPEC, seen), LoraBatch.from_factors(SPEC, unseen)]))
    for rows, member, f in ((slice(0, 3), primary, seen), (slice(3, 6), fallback, unseen)):
        alone = as_fn(member)(f)
        for name in names:
            torch.testing.assert_close(mixed[name][rows], alone[name], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(as_fn(primary)(unseen)["quality"], as_fn(model)(unseen)["quality"])
    for f, seed in ((seen, 3), (unseen, 4)):
        assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(seed))
        assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(seed + 10))
    model.force_route = "fallback"
    torch.testing.assert_close(as_fn(model)(seen)["quality"], as_fn(fallback)(seen)["quality"])
    model.force_route = None
    with pytest.raises(LolctlError) as err:
        build_model("composite", {"members": members}, SPEC, TASKS)
    assert "seen_ranks" in err.value.reason


def test_composite_blend_is_the_weighted_mean_and_stays_invariant():
    """A blended composite (``--blend``): the task's output is the members' outputs averaged with their weights,
    in float64 it is GL-invariant and sensitive like its members, and other weights give another output."""
    names = [t.name for t in TASKS]
    members = [{"architecture": "mlp_svd", "model_config": {"max_rank": 8}, "tasks": names, "weight": 0.75},
               {"architecture": "glnet", "model_config": {"hidden": 6}, "tasks": names, "weight": 0.25}]
    torch.manual_seed(0)
    model = build_model("composite", {"members": members, "seen_ranks": [4]}, SPEC, TASKS).double().eval()
    model.prepare(LoraBatch.from_factors(SPEC, factors(4, batch=8, seed=1)))
    f = factors(4, seed=3)
    got, (a, b) = as_fn(model)(f), (as_fn(m)(f) for m in model.members)
    for name in names:
        torch.testing.assert_close(got[name], 0.75 * a[name] + 0.25 * b[name], rtol=1e-12, atol=1e-12)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(5))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(6))
    model.config.members[1]["weight"] = 0.75
    torch.testing.assert_close(as_fn(model)(f)["quality"], (a["quality"] + b["quality"]) / 2, rtol=1e-12,
                               atol=1e-12)


def _dense_units(model, f) -> torch.Tensor:
    """The first hidden layer's pre-activation read from dense ΔW with the (unfactored) head weights."""
    batch = LoraBatch.from_factors(SPEC, f)
    scaled, lognorm = model.normalise(batch)
    x = model.features(scaled)
    if lognorm is not None:
        x = torch.cat([x, lognorm], dim=1)
    return model.head[0](x)


@pytest.mark.parametrize("unit_norm", [False, True])
def test_dense_store_rank_truncates_each_unit_and_module_by_svd(unit_norm):
    """``finalize`` with store_rank=q keeps, for every hidden unit and module, the best rank-q part of W_hi: the
    factored first layer equals the dense one with each W_hi replaced by its SVD truncation (computed here
    independently), equals the dense model exactly at full rank, and round-trips through its config."""
    f = factors(3)
    for q, exact in ((2, False), (7, True)):  # min(n, m) = 7
        model = make("mlp_dense", head_hidden=5, store_rank=q, unit_norm=unit_norm)
        before = as_fn(model)(f)
        W = model.head[0].weight.detach().clone()
        truncated, offset = W.clone(), 0
        for g in SPEC.groups:
            for _ in g.indices:
                block = W[:, offset : offset + g.n * g.m].reshape(5, g.n, g.m)
                P, S, Qh = torch.linalg.svd(block)
                truncated[:, offset : offset + g.n * g.m] = ((P[..., :q] * S[:, None, :q]) @ Qh[:, :q]).reshape(5, -1)
                offset += g.n * g.m
        with torch.no_grad():
            model.head[0].weight.copy_(truncated)
        want = _dense_units(model, f)
        assert model.finalize() and model.config.factored and not model.finalize()  # once only
        got = model.head[0](model.normalise(LoraBatch.from_factors(SPEC, f))[1]) if unit_norm else model.head[0].bias
        got = got + model.factored_units(model.normalise(LoraBatch.from_factors(SPEC, f))[0])
        assert torch.allclose(got, want, atol=1e-10)
        after = as_fn(model)(f)
        same = all(torch.allclose(before[k], after[k], atol=1e-10) for k in before)
        assert same == exact
        stored = sum(p.numel() for p in (*model.first_A, *model.first_B))
        assert stored == 5 * q * sum(m.n + m.m for m in SPEC.modules)  # H x (n + m) x q per module, not H x n x m
        again = build_model("mlp_dense", model.config.to_dict(), SPEC, TASKS).double().eval()
        again.load_state_dict(model.state_dict())
        assert all(torch.equal(v, as_fn(again)(f)[k]) for k, v in after.items())


def test_dense_factored_is_gl_invariant_and_sensitive():
    model = make("mlp_dense", head_hidden=5, store_rank=3, unit_norm=True)
    model.finalize()
    f = factors(4)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(60))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(61))
    assert_invariant(as_fn(model), factors(1, seed=5), generator=torch.Generator().manual_seed(62))  # any rank


def test_dense_store_rank_needs_a_hidden_layer():
    with pytest.raises(LolctlError) as err:
        build_model("mlp_dense", {"store_rank": 2, "head_layers": 0}, SPEC, TASKS)
    assert err.value.code == "L180" and "store_rank" in err.value.where


def test_dense_low_rank_trains_factors_from_a_scaled_dense_init():
    """``low_rank=q``: the first layer is rank-q factors from the start, W_hi = A_hi B_hiᵀ with LOW_RANK_INIT_GAIN
    times the entry std of nn.Linear's default init on the dense inputs; invariant and sensitive like the finalized
    form, the factors get gradients, nothing left for ``finalize``, and a saved config rebuilds the same model."""
    from lolctl.nn.baselines import LOW_RANK_INIT_GAIN

    model = make("mlp_dense", head_hidden=5, low_rank=3, unit_norm=True)
    assert model.config.factored and model.config.store_rank == 3 and not model.finalize()
    d_in = sum(mod.n * mod.m for mod in SPEC.modules)
    W = torch.cat([torch.einsum("lnk,lmk->lnm", a.view(a.shape[0], a.shape[1], 5, 3)[:, :, h],
                                b.view(b.shape[0], b.shape[1], 5, 3)[:, :, h]).flatten()
                   for a, b in zip(model.first_A, model.first_B) for h in range(5)]).detach()
    assert 0.7 < float(W.var()) * 3 * d_in / LOW_RANK_INIT_GAIN**2 < 1.3
    f = factors(4)
    assert_invariant(as_fn(model), f, generator=torch.Generator().manual_seed(63))
    assert_sensitive(as_fn(model), f, generator=torch.Generator().manual_seed(64))
    assert_invariant(as_fn(model), factors(1, seed=5), generator=torch.Generator().manual_seed(65))
    model.train()
    loss = sum(o.square().sum() for o in model(LoraBatch.from_factors(SPEC, f)).values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (*model.first_A, *model.first_B))
    model.eval()
    again = build_model("mlp_dense", model.config.to_dict(), SPEC, TASKS).double().eval()
    again.load_state_dict(model.state_dict())
    batch = LoraBatch.from_factors(SPEC, f)
    for task, out in model(batch).items():
        torch.testing.assert_close(again(batch)[task], out, rtol=0, atol=0)
    with pytest.raises(LolctlError) as err:
        build_model("mlp_dense", {"low_rank": 2, "store_rank": 4}, SPEC, TASKS)
    assert err.value.code == "L180" and "low_rank" in err.value.where


@pytest.mark.parametrize("name", ["mlp_svd", "mlp", "mlp_oalign"])
def test_fit_with_fixed_features_computed_once_trains_the_same_model(name, monkeypatch):
    """``fit`` runs only the head of a model with ``fixed_features`` on features computed once per adapter: the same
    losses, epochs and weights as computing them on every step (float64), with the features computed once."""
    from lolctl.nn.registry import model_class
    from lolctl.nn.train import TrainConfig, fit

    gen = torch.Generator().manual_seed(7)
    batch = LoraBatch.from_factors(SPEC, random_factors(SHAPES, 4, 40, generator=gen)).to(dtype=torch.float64)
    y = {"quality": torch.randn(40, 1, generator=gen).numpy(), "membership": (torch.rand(40, 2, generator=gen) > 0.5)
         .double().numpy(), "topic": torch.randint(0, 3, (40,), generator=gen).numpy()}
    split = torch.tensor([0] * 30 + [1] * 10).numpy().astype(object)
    split[split == 0], split[split == 1] = "train", "val"
    norm = {"quality": {"mean": [0.0], "std": [1.0]}}
    config = TrainConfig(epochs=6, patience=3, batch_size=8, seed=3)
    results, weights, calls = [], [], []
    for fixed in (True, False):
        monkeypatch.setattr(model_class(name), "fixed_features", fixed)
        model = make(name, unit_norm=True).train()
        real = model.head_input
        calls.append(0)

        def counted(b, real=real):
            calls[-1] += b.size
            return real(b)

        monkeypatch.setattr(model, "head_input", counted)
        results.append(fit(model, batch, y, split, norm, config))
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    fixed, full = results
    assert fixed.best_epoch == full.best_epoch and fixed.epochs_run == full.epochs_run
    for a, b in zip(fixed.history, full.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-9)
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-9, atol=1e-12)
    assert calls == [40 + 1, 40 * full.epochs_run]  # once per adapter (+1 sizes the cache) vs. every row, every epoch


def test_runner_caches_fixed_features_only_within_its_budget(monkeypatch):
    from lolctl.nn import train

    batch = LoraBatch.from_factors(SPEC, random_factors(SHAPES, 4, 5, generator=torch.Generator().manual_seed(2)))
    svd, glnet = make("mlp_svd"), make("glnet")
    assert train.runner(svd, batch).__name__ == "head_only" and train.runner(glnet, batch).__name__ == "full"
    torch.testing.assert_close(train.runner(svd, batch)(torch.tensor([3, 1]))["quality"],
                               svd(batch.select([3, 1]))["quality"])
    assert svd.head_input(batch).shape == (5, len(SPEC) * 32)
    monkeypatch.setattr(train, "FEATURE_CACHE_BYTES", 5 * len(SPEC) * 32 * 8 - 1)  # one byte short of 5 adapters'
    assert train.runner(svd, batch.select([0, 1, 2, 3])).__name__ == "head_only"
    assert train.runner(svd, batch).__name__ == "full"


def test_composite_runs_an_identical_member_once():
    """``share_identical``: a fallback member equal to a primary one (architecture, config, tasks, weights) reuses
    its outputs — each distinct member runs once per batch, the outputs are unchanged —; a member that differs in one
    weight is not aliased."""
    names = [t.name for t in TASKS]
    members = [{"architecture": "glnet", "model_config": {"hidden": 6}, "tasks": names, "weight": 0.5},
               {"architecture": "mlp_svd", "model_config": {"max_rank": 8}, "tasks": names, "weight": 0.5},
               {"architecture": "glnet", "model_config": {"hidden": 6}, "tasks": names, "fallback": True},
               {"architecture": "mlp_svd", "model_config": {"max_rank": 8}, "tasks": names, "fallback": True}]
    torch.manual_seed(0)
    model = build_model("composite", {"members": members, "seen_ranks": [4]}, SPEC, TASKS).double().eval()
    model.prepare(LoraBatch.from_factors(SPEC, factors(4, batch=8, seed=1)))
    model.members[2].load_state_dict(model.members[0].state_dict())
    model.members[3].load_state_dict(model.members[1].state_dict())
    with torch.no_grad():
        next(model.members[3].parameters()).view(-1)[0] += 1e-3
    f = factors(2, seed=3)  # an unseen rank: the fallback route
    before = as_fn(model)(f)
    assert model.share_identical() == 1 and model.alias == [0, 1, 0, 3]
    calls = []
    for i, member in enumerate(model.models):
        member.register_forward_hook(lambda *_, i=i: calls.append(i))
    after = as_fn(model)(f)
    assert sorted(calls) == [0, 3]
    for name in names:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
