"""Bounded memory (reduced version of benchmarks/read_memory.py): reading costs about the tensor bytes, and headers
that declare more than the file holds — or more than the budget — are refused before any allocation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import read_memory as rm  # noqa: E402

MiB = 2**20


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    d = tmp_path_factory.mktemp("mem")
    sizes = {"adapter": rm.write_adapter(d / "a", 32 * MiB), "lie": rm.write_lying_header(d / "lie")}
    try:
        sizes["sparse"] = rm.write_sparse(d / "sparse")
    except OSError:  # no sparse files on this filesystem
        pass
    names = [k for k in ("lie", "sparse", "adapter") if k in sizes]
    results = rm.measure(*(d / ("a" if k == "adapter" else k) for k in names))
    return {k: (sizes[k], m) for k, m in zip(names, results)}


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_reading_costs_about_the_tensor_bytes(measured):
    nbytes, m = measured["adapter"]
    assert m["outcome"] == "ok"
    assert m["extra"] < 3 * nbytes + 16 * MiB, (m["extra"] / MiB, nbytes / MiB)


def test_a_header_declaring_more_than_the_file_is_refused_before_allocation(measured):
    nbytes, m = measured["lie"]
    assert m["outcome"] in ("L120", "L123")
    assert m["extra"] < 16 * MiB


def test_a_file_above_the_budget_is_refused_before_allocation(measured):
    if "sparse" not in measured:
        pytest.skip("sparse files unsupported here")
    nbytes, m = measured["sparse"]
    assert m["outcome"] == "L125"
    assert m["extra"] < 16 * MiB
