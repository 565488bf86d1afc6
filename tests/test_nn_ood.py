"""OOD score and known cases: invariance + sensitivity of the features (float64), and what the shipped checkpoint
says for an inert adapter, a never-trained random adapter and its own in-distribution test adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, ModuleFactors
from lolctl.nn import InputSpec, ModuleSpec
from lolctl.nn.batch import LoraBatch
from lolctl.nn.ood import InputContrast, OODReference, features, principal_bases
from lolctl.testing import assert_invariant, assert_sensitive, random_factors

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "models" / "minilm-wordnet-glnet"
DATA = ROOT / "tests" / "data" / "minilm-wordnet-test"
EXAMPLE = ROOT / "lolctl" / "data" / "examples" / "minilm-wordnet-00178"
SPEC = InputSpec((ModuleSpec("a", 9, 7), ModuleSpec("b", 9, 7), ModuleSpec("c", 6, 5)))
SHAPES = [(m.n, m.m) for m in SPEC.modules]


def _refs(gen: torch.Generator) -> LoraBatch:
    """Reference adapters sharing two directions per module (plus noise), so their principal bases mean something."""
    out = []
    for n, m in SHAPES:
        f64 = {"generator": gen, "dtype": torch.float64}
        P, Q = torch.randn(n, 2, **f64), torch.randn(m, 2, **f64)
        U = P @ torch.randn(40, 2, 3, **f64) + 0.1 * torch.randn(40, n, 3, **f64)
        V = Q @ torch.randn(40, 2, 3, **f64)
        out.append((U, V))
    return LoraBatch.from_factors(SPEC, out)


def test_features_are_gl_invariant_and_sensitive() -> None:
    gen = torch.Generator().manual_seed(0)
    bases = principal_bases(_refs(gen), k=3)

    def fn(factors):
        got = features(LoraBatch.from_factors(SPEC, factors), bases)
        return torch.as_tensor(np.stack([got[k] for k in ("energy_left", "energy_right", "concentration")]))

    factors = random_factors(SHAPES, 3, 5, generator=gen)
    assert_invariant(fn, factors, generator=gen)
    assert_sensitive(fn, factors, generator=gen)


def test_principal_bases_are_gl_invariant_and_sensitive() -> None:
    """The projectors P Pᵀ (eigenvector signs are arbitrary) do not depend on how the references were written."""
    gen = torch.Generator().manual_seed(1)

    def fn(factors):
        bases = principal_bases(LoraBatch.from_factors(SPEC, factors), k=2)
        return torch.cat([torch.cat([(P @ P.T).flatten(), (Q @ Q.T).flatten()]) for P, Q in bases])

    refs = _refs(gen).factors()
    assert_invariant(fn, refs, generator=gen)
    assert_sensitive(fn, refs, generator=gen)


def test_reference_score_separates_random_adapters() -> None:
    gen = torch.Generator().manual_seed(2)
    refs = _refs(gen)
    ref = OODReference.fit(refs.select(range(30)), k=3)
    held = ref.scores(refs.select(range(30, 40)))[0]
    noise = ref.scores(LoraBatch.from_factors(SPEC, random_factors(SHAPES, 3, 10, generator=gen)))[0]
    assert held.max() < noise.min()
    assert all(ref.reasons(LoraBatch.from_factors(SPEC, random_factors(SHAPES, 3, 3, generator=gen))))


def _contrast(gen: torch.Generator) -> tuple[InputContrast, torch.Tensor, torch.Tensor]:
    """Inputs of width 7 (modules a and b read them; c reads width 5): the training side in span(e0..e2), the other
    side in span(e3..e5) (plus a little of everything), as probe groups (G, d, k)."""
    f64 = {"generator": gen, "dtype": torch.float64}
    inside, outside = torch.zeros(2, 7, 3, dtype=torch.float64), torch.zeros(2, 7, 3, dtype=torch.float64)
    inside[:, :3] = torch.randn(2, 3, 3, **f64)
    outside[:, 3:6] = torch.randn(2, 3, 3, **f64)
    inside, outside = inside + 0.05 * torch.randn(2, 7, 3, **f64), outside + 0.05 * torch.randn(2, 7, 3, **f64)
    return InputContrast.from_probes(inside, outside, "the other side"), inside, outside


def _fitted_to(space: slice, count: int, gen: torch.Generator) -> LoraBatch:
    """Adapters whose input side V lies in ``space`` of the 7 input dims (modules a, b); module c random."""
    f64 = {"generator": gen, "dtype": torch.float64}
    out = []
    for n, m in SHAPES:
        U, V = torch.randn(count, n, 2, **f64), 0.05 * torch.randn(count, m, 2, **f64)
        if m == 7:
            V[:, space] += torch.randn(count, space.stop - space.start, 2, **f64)
        else:
            V += torch.randn(count, m, 2, **f64)
        out.append((U, V))
    return LoraBatch.from_factors(SPEC, out)


def test_input_contrast_is_exact_gl_invariant_scale_free_and_sensitive() -> None:
    """log ‖ΔW C‖² − log ‖ΔW I‖² averaged over the modules of the inputs' width: equal to the dense value, unchanged
    by a g per module and by scaling, changed by a wrong action."""
    gen = torch.Generator().manual_seed(5)
    contrast = _contrast(gen)[0]
    factors = random_factors(SHAPES, 3, 4, generator=gen)
    got = contrast.values(LoraBatch.from_factors(SPEC, factors))
    want = np.mean([[float(torch.linalg.matrix_norm(U[b] @ V[b].T @ contrast.contrast).log() * 2
                           - torch.linalg.matrix_norm(U[b] @ V[b].T @ contrast.inside).log() * 2)
                     for (U, V) in factors[:2]] for b in range(4)], axis=1)  # modules a, b: input width 7
    assert np.allclose(got, want, atol=1e-10)
    scaled = [(3.0 * U, 0.5 * V) for U, V in factors]
    assert np.allclose(contrast.values(LoraBatch.from_factors(SPEC, scaled)), got, atol=1e-10)

    def fn(fs):
        return torch.as_tensor(contrast.values(LoraBatch.from_factors(SPEC, fs)))

    assert_invariant(fn, factors, generator=gen)
    assert_sensitive(fn, factors, generator=gen)


def test_input_contrast_flags_adapters_fitted_to_the_other_inputs(tmp_path) -> None:
    """References fitted to the training inputs; adapters fitted to the other inputs are flagged with the reason, held
    references are not; the feature survives the file round trip and keys the cache."""
    gen = torch.Generator().manual_seed(6)
    contrast = _contrast(gen)[0]
    refs = _fitted_to(slice(0, 3), 40, gen)
    ref = OODReference.fit(refs.select(range(30)), k=3, inputs=contrast)
    assert ref.names[-1] == "input_contrast"
    held, other = ref.scores(refs.select(range(30, 40)))[0], ref.scores(_fitted_to(slice(3, 6), 10, gen))[0]
    assert held.max() < 4 < other.min()
    why = ref.reasons(_fitted_to(slice(3, 6), 2, gen))
    assert all(any("other inputs of the base model (the other side)" in r for r in w) for w in why)
    without = OODReference.fit(refs.select(range(30)), k=3)
    assert without.scores(_fitted_to(slice(3, 6), 10, gen))[0].max() < other.min()  # the new feature did it
    path = tmp_path / "inputs.safetensors"
    contrast.save(path)
    again = InputContrast.load(path)
    assert torch.equal(again.inside, contrast.inside) and again.describe == "the other side"
    tensors, meta = ref.to_tensors()
    assert OODReference.from_tensors(tensors, meta).names == ref.names
    cached = OODReference.cached_fit(refs.select(range(30)), tmp_path / "cache", k=3, inputs=contrast)
    plain = OODReference.cached_fit(refs.select(range(30)), tmp_path / "cache", k=3)
    assert cached.inputs is not None and plain.inputs is None and len(list((tmp_path / "cache").iterdir())) == 2
    path.write_bytes(b"not safetensors")
    with pytest.raises(LolctlError) as err:
        InputContrast.load(path)
    assert err.value.code == "L170" and str(path) in str(err.value)


# -- the shipped checkpoint -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    from lolctl.nn.checkpoint import load_checkpoint
    from lolctl.read import read_adapter

    torch.set_num_threads(1)
    return load_checkpoint(str(CHECKPOINT), "cpu"), read_adapter(EXAMPLE)


def _remake(adapter: Adapter, fn) -> Adapter:
    mods = [ModuleFactors(m.name, *fn(m), m.scale, m.scale_source) for m in adapter.modules]
    return Adapter(adapter.source, adapter.meta, mods)


def test_inert_adapter_is_the_base_model(shipped) -> None:
    """B = 0 → ΔW = 0: quality is the zoo manifest's base quality, no topic at p ≥ 0.5, flagged with the reason."""
    ckpt, example = shipped
    inert = _remake(example, lambda m: (m.U * 0, m.V))
    pred = ckpt.predict([inert])[0]
    base = ckpt.config.training_data["recipe"]["facts"]["base_quality"]
    assert pred["tasks"]["quality"]["value"] == pytest.approx(base, abs=1e-12)
    assert pred["tasks"]["quality"]["interval"] == [pytest.approx(base)] * 2
    assert max(pred["tasks"]["membership"]["probs"].values()) < 0.5
    assert pred["tasks"]["log_size"]["value"] is None and pred["tasks"]["log_size"]["note"]
    assert pred["ood"]["flag"] and pred["ood"]["kind"] == "inert" and "ΔW = 0" in pred["ood"]["reasons"][-1]


def test_random_init_adapter_is_flagged_with_a_reason(shipped) -> None:
    """A never-trained LoRA (PEFT-style init with B random too, init_lora_weights=False)."""
    ckpt, example = shipped
    gen = torch.Generator().manual_seed(0)

    def random_init(m):
        r = m.rank
        return (m.scale * (torch.rand(m.U.shape[0], r, generator=gen) * 2 - 1) / r**0.5,
                (torch.rand(m.V.shape[0], r, generator=gen) * 2 - 1) / m.V.shape[0] ** 0.5)

    pred = ckpt.predict([_remake(example, random_init)])[0]
    assert pred["ood"]["flag"]
    assert any("top singular direction" in r or "principal" in r for r in pred["ood"]["reasons"])
    assert pred["ood"]["score"] > 4


def test_trained_adapters_are_in_distribution(shipped) -> None:
    """The example adapter and the committed test split (first 64): not flagged; probabilities shown ≤ 2 decimals,
    never closer to 0 or 1 than 0.01."""
    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo

    ckpt, example = shipped
    pred = ckpt.predict([example])[0]
    assert not pred["ood"]["flag"], pred["ood"]
    zoo = load_zoo(DATA)
    batch, _ = load_factors(zoo)
    rows = [i for i, s in enumerate(zoo.splits) if s == "test"][:64]
    scores = ckpt.ood_scores(batch.respec(ckpt.spec).select(rows))
    assert float(np.mean(scores > 4)) <= 0.05
    for task in pred["tasks"].values():
        for p in (task.get("probs") or {}).values():
            assert 0.01 <= p <= 0.99 and round(p, 2) == p


def test_other_side_loras_are_flagged_by_the_input_contrast(shipped) -> None:
    """LoRAs of the same modules trained while the base model encodes lemmas instead of definitions (the other side
    of the dual encoder; tests/data/minilm-wordnet-lemma, packed from `lolctl zoo build ... --set adapted=lemma`)
    look like the zoo to every other feature. The shipped checkpoint's input contrast (lolctl calibrate
    --ood-contrast data/minilm-wordnet-lemma-probes.safetensors) ranks them above the test split and flags most."""
    from lolctl.nn.data import load_factors
    from lolctl.nn.metrics import auroc
    from lolctl.zoo.format import load_zoo

    ckpt, _ = shipped
    assert ckpt.input_contrast is not None and "adapted=lemma" in ckpt.input_contrast.describe
    test = load_zoo(DATA)
    rows = [i for i, s in enumerate(test.splits) if s == "test"][:64]
    inside = ckpt.ood_scores(load_factors(test)[0].respec(ckpt.spec).select(rows))
    other = ckpt.ood_scores(load_factors(load_zoo(ROOT / "tests" / "data" / "minilm-wordnet-lemma"))[0]
                            .respec(ckpt.spec))
    assert auroc(np.r_[np.zeros(inside.size), np.ones(other.size)], np.r_[inside, other]) >= 0.95
    assert float(np.mean(other > 4)) >= 0.5 and float(np.mean(inside > 4)) <= 0.05


def test_rank_out_of_distribution_follows_the_measured_rank_splits():
    from lolctl.nn.ood import rank_reasons

    def split(r2: float, auroc: float) -> dict:
        return {"quality": {"kind": "regression", "r2": r2, "n": 64},
                "membership": {"kind": "multilabel", "auroc": auroc, "accuracy": 0.9, "n": 64}}

    metrics = {"test": split(0.72, 0.92), "test_r2": split(0.80, 0.90), "test_r1": split(0.42, 0.93),
               "test_r8": split(0.70, 0.70)}
    assert rank_reasons([2], [4], metrics) == []  # measured and held up: in distribution
    (r1,) = rank_reasons([1], [4], metrics)
    assert "quality R² was 0.42" in r1 and "0.72" in r1
    (r8,) = rank_reasons([8], [4], metrics)
    assert "membership auroc was 0.70" in r8
    (r32,) = rank_reasons([32], [4], metrics)
    assert "never measured" in r32


def test_default_checkpoint_flags_ranks_by_its_card():
    import json
    from pathlib import Path

    from lolctl.nn.ood import RANK_TOLERANCE, rank_reasons

    config = Path(__file__).resolve().parents[1] / "models" / "minilm-wordnet-glnet" / "config.json"
    if not config.exists():
        pytest.skip("no built-in checkpoint")
    metrics = json.loads(config.read_text())["metrics"]
    for rank in (1, 2):  # measured: flagged exactly when some task fell more than the tolerance below test
        split = metrics[f"test_r{rank}"]
        drops = [metrics["test"][name][key] - task[key] for name, task in split.items()
                 for key in (("r2",) if task["kind"] == "regression" else ("auroc",) if task["kind"] == "multilabel"
                             else ("accuracy",))
                 if task.get(key) is not None and metrics["test"].get(name, {}).get(key) is not None]
        assert drops and bool(rank_reasons([rank], [4], metrics)) == (max(drops) > RANK_TOLERANCE), rank
    assert rank_reasons([32], [4], metrics)  # never measured


def test_numerical_rank_sees_through_zero_padding_and_is_gl_invariant():
    from types import SimpleNamespace

    from lolctl.factors import ModuleFactors
    from lolctl.nn.ood import numerical_rank

    gen = torch.Generator().manual_seed(0)
    U = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    V = torch.randn(24, 4, generator=gen, dtype=torch.float64)

    def adapter(u, v):
        return SimpleNamespace(modules=[ModuleFactors("m", u, v, 1.0, "test")])

    pad = torch.zeros(32, 4, dtype=torch.float64), torch.zeros(24, 4, dtype=torch.float64)
    padded = adapter(torch.cat([U, pad[0]], 1), torch.cat([V, pad[1]], 1))
    assert numerical_rank(adapter(U, V)) == numerical_rank(padded) == 4
    g = torch.randn(8, 8, generator=gen, dtype=torch.float64) + 4 * torch.eye(8, dtype=torch.float64)
    assert numerical_rank(adapter(padded.modules[0].U @ g, padded.modules[0].V @ torch.linalg.inv(g).T)) == 4
    noisy = adapter(torch.cat([U, 1e-2 * torch.randn(32, 4, generator=gen, dtype=torch.float64)], 1),
                    torch.cat([V, torch.randn(24, 4, generator=gen, dtype=torch.float64)], 1))
    assert numerical_rank(noisy) == 8  # real extra directions count


def test_fitted_reference_is_cached_and_a_bad_cache_is_refitted(tmp_path) -> None:
    """cached_fit: the first call fits and writes one file, the second reads it back (same bases and spread), a torn
    file is refitted and rewritten, other reference adapters get another file."""
    refs = _refs(torch.Generator().manual_seed(3))
    fresh = OODReference.fit(refs)
    first = OODReference.cached_fit(refs, tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    again = OODReference.cached_fit(refs, tmp_path)
    for ref in (first, again):
        assert ref.describe() == fresh.describe()
        for (P, Q), (P0, Q0) in zip(ref.bases, fresh.bases):
            assert torch.equal(P, P0) and torch.equal(Q, Q0)
    path.write_bytes(path.read_bytes()[:50])  # torn
    assert OODReference.cached_fit(refs, tmp_path).describe() == fresh.describe()
    assert OODReference.cached_fit(refs, tmp_path).n == fresh.n and path.stat().st_size > 50
    other = _refs(torch.Generator().manual_seed(4))
    OODReference.cached_fit(other, tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not list(tmp_path.glob("*.tmp"))
