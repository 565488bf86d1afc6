"""Duplicate updates in scans: the GL-invariant sketch, the index that marks copies, and `lolctl scan` with them."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import invoke
from hubserver import peft_files, write_files
from lora_copies import cast, refactored

from lolctl.dedup import CANDIDATE_COSINE, DIM, DuplicateIndex, Sketch, sketch, sketch_vector
from lolctl.factors import ModuleFactors
from lolctl.report.records import ScoreRecord
from lolctl.testing import assert_invariant, assert_sensitive, random_factors

SHAPES = [(12, 9), (12, 9), (7, 15), (10, 10)]


def _modules(factors) -> list[ModuleFactors]:
    return [ModuleFactors(f"layer.{i}", U, V, 1.0, "test") for i, (U, V) in enumerate(factors)]


def test_sketch_is_gl_invariant_and_sensitive():
    gen = torch.Generator().manual_seed(0)
    factors = random_factors(SHAPES, [4, 2, 6, 3], generator=gen)
    fn = lambda f: torch.from_numpy(sketch_vector(_modules(f)))  # noqa: E731
    assert_invariant(fn, factors, trials=4, generator=gen)
    assert_sensitive(fn, factors, generator=gen)


def test_sketch_is_linear_in_delta_w_and_estimates_the_cosine():
    """The folded sketch is a linear map of the ΔW's: sketch(a + b) = sketch(a) + sketch(b); its cosine of two
    unrelated updates is far from the candidate threshold, of related ones close to the true cosine."""
    gen = torch.Generator().manual_seed(1)
    a = random_factors(SHAPES, 3, generator=gen)
    b = random_factors(SHAPES, 3, generator=gen)
    both = [(torch.cat([Ua, Ub], 1), torch.cat([Va, Vb], 1)) for (Ua, Va), (Ub, Vb) in zip(a, b)]
    sa, sb, sab = (torch.from_numpy(sketch_vector(_modules(f))) for f in (a, b, both))
    torch.testing.assert_close(sab, sa + sb, rtol=1e-12, atol=1e-12)
    cos = float(sa @ sb / (sa.norm() * sb.norm()))
    assert abs(cos) < 0.6 < CANDIDATE_COSINE
    assert sa.shape == (DIM,)


def test_sketch_round_trips_through_json_and_ignores_module_order():
    gen = torch.Generator().manual_seed(2)
    mods = _modules(random_factors(SHAPES, 2, generator=gen))
    s = sketch(mods)
    back = Sketch.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.signature == s.signature and back.norm == s.norm
    assert float(back.values @ s.values) > 1 - 1e-6
    assert sketch(list(reversed(mods))).signature == s.signature
    renamed = [ModuleFactors("other." + m.name, m.U, m.V, 1.0, "test") for m in mods]
    assert sketch(renamed).signature != s.signature
    zero = sketch(_modules([(torch.zeros(12, 2), torch.zeros(9, 2))]))
    assert zero.norm == 0 and not zero.values.any()


def _record(source: str, factors, path: str | None = None) -> ScoreRecord:
    return ScoreRecord(source, source, path or source, {}, [], None, None, sketch=sketch(_modules(factors)).to_dict())


def test_index_marks_copies_and_only_confirmed_ones():
    gen = torch.Generator().manual_seed(3)
    a = random_factors(SHAPES, 3, generator=gen)
    b = random_factors(SHAPES, 3, generator=gen)
    copy = [(U @ g, V @ torch.linalg.inv(g).T) for (U, V), g in
            zip(a, [torch.randn(3, 3, generator=gen, dtype=torch.float64) for _ in a])]
    scaled = [(1.03 * U, V) for U, V in a]  # within the sketch's 5 % norm pre-filter, outside the exact 1 %
    calls = []

    def confirm(path_a, path_b):
        calls.append((path_a, path_b))
        return {"C": (1.0, 1.0), "S": (1.0, 1.03), "D": (0.99, 1.0)}[path_b]  # what the exact diff would say

    index = DuplicateIndex(confirm=confirm)
    records = [_record("A", a), _record("B", b), _record("C", copy), _record("S", scaled), _record("D", copy)]
    for rec in records:
        index.mark(rec)
    marked = {r.source: r.duplicate_of for r in records}
    assert marked == {"A": None, "B": None, "C": "A", "S": None, "D": None}  # S: norm differs; D: not confirmed
    assert records[2].similarity == 1.0
    # only sketch candidates go to the exact check (never B); S and D stay originals, so D is checked against both
    assert calls == [("A", "C"), ("A", "S"), ("A", "D"), ("S", "D")]


def _scan(*args) -> dict:
    code, res = invoke(["scan", *map(str, args), "--health-only", "-f", "json", "--fail-on", "never"])
    assert code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture
def copies(tmp_path):
    base = peft_files(11, r=3, n=16, m=12)
    root = tmp_path / "adapters"
    write_files(root / "a_original", base)
    write_files(root / "b_bytes_copy", base)
    write_files(root / "c_refactored", refactored(base, seed=5, cond=20.0))
    write_files(root / "d_float16", cast(base, torch.float16))
    write_files(root / "e_other", peft_files(12, r=3, n=16, m=12))
    write_files(root / "f_other_rank", peft_files(13, r=5, n=16, m=12))
    return root


@pytest.mark.slow
def test_scan_marks_copies_and_counts_them(copies):
    doc = _scan(copies, "-j", "1")
    by = {r["source"].rsplit("/", 1)[-1]: r for r in doc["records"]}
    original = by["a_original"]["source"]
    for name in ("b_bytes_copy", "c_refactored", "d_float16"):
        assert by[name]["duplicate_of"] == original, name
        assert by[name]["similarity"] > 0.9999
    for name in ("a_original", "e_other", "f_other_rank"):
        assert "duplicate_of" not in by[name], name
    assert doc["summary"]["duplicates"] == 3


@pytest.mark.slow
def test_scan_finds_duplicates_across_a_resume(copies, tmp_path):
    out = tmp_path / "scan.jsonl"
    _scan(copies / "a_original", copies / "e_other", "-o", out)
    doc = _scan(copies, "-o", out, "--resume", "-j", "1")
    assert doc["summary"]["duplicates"] == 3 and doc["summary"]["records"] == 6
    fresh = {r["source"].rsplit("/", 1)[-1]: r.get("duplicate_of") for r in doc["records"]}
    assert fresh["c_refactored"].endswith("a_original") and fresh["f_other_rank"] is None


@pytest.mark.slow
def test_scan_table_lists_duplicates(copies):
    code, res = invoke(["scan", str(copies), "--health-only", "--fail-on", "never", "-j", "1"])
    assert code == 0
    assert res.stdout.count("dup: ") == 3 and "duplicates" in res.stdout
