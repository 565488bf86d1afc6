"""--engine ray on a real local Ray cluster (2 CPUs): same records as the local engine, a worker killed mid-scan loses
and duplicates nothing, an item whose worker always dies is an error record, a tiny zoo built on Ray is byte-identical
to a local build. Skipped when Ray is not installed (pip install 'lolctl[ray]')."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hubserver import peft_files, write_files

from lolctl.scan import LocalEngine, load_records, run_scan
from lolctl.score import Scorer
from lolctl.sources import resolve

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster and worker processes (each imports torch): 10-20 s a test here

from lolctl.ray_engine import RayEngine, ScorerWorker  # noqa: E402
from lolctl.testing import KillOnce  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SETTINGS = {"predict": True, "modules": False, "sketch": True}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # another module's cluster: use it
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 adapters: 44 MiniLM r4 and 3 MiniLM r8 (predicted; mixed ranks in one batch), an inert one, a truncated
    one (an error record) and a small one no checkpoint fits (health only)."""
    from benchmarks.scan_many import write_adapters

    root = tmp_path_factory.mktemp("adapters")
    write_adapters(root / "minilm", 44)
    for k in range(3):
        write_files(root / f"r8-{k}", peft_files(k, r=8, n=384, m=384, layers=6, base=MINILM))
    write_files(root / "inert", peft_files(9, r=4, n=384, m=384, layers=6, base=MINILM, zero_b=True))
    broken = peft_files(4)
    broken["adapter_model.safetensors"] = broken["adapter_model.safetensors"][:50]
    write_files(root / "broken", broken)
    write_files(root / "small", peft_files(5))
    return root


@pytest.fixture(scope="module")
def local_records(adapters: Path) -> dict[str, dict]:
    items = resolve([str(adapters)])
    assert len(items) == 50
    scorer = Scorer(**SETTINGS)
    _, records = run_scan(items, engine=LocalEngine(scorer.score_items, jobs=2))
    return _by_item([r.to_dict() for r in records])  # as written to a scan file


def _by_item(records: list[dict]) -> dict[str, dict]:
    out = {rec["item"]: rec for rec in records}
    assert len(out) == len(records), "an item has more than one record"
    return out


def assert_same(a, b, where: str = "", tol: float = 1e-5) -> None:
    """Equal records, floats to ``tol`` (relative to 1 + |b|): float32 batches of other sizes round differently."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}", tol)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]", tol)
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= tol * (1 + abs(b)), (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_ray_scan_gives_the_local_engines_records(cluster, adapters, local_records, tmp_path):
    out = tmp_path / "ray.jsonl"
    summary, fresh = run_scan(resolve([str(adapters)]), engine=RayEngine(ScorerWorker(Scorer(**SETTINGS).settings),
                                                                          chunk=8), output=out)
    written = _by_item(load_records(out, repair=False))
    assert written.keys() == local_records.keys() and len(fresh) == 50
    for item, rec in local_records.items():
        assert_same(written[item], rec, item)
    assert summary.predicted == 48 and summary.errors == 1  # 47 scored + the inert one; the truncated one
    assert sum(bool(r.get("prediction")) for r in written.values()) == 48
    small = next(r for r in written.values() if r["source"].endswith("small"))
    assert small["prediction"] is None and "no checkpoint" in small["notes"][0]


def test_a_worker_killed_mid_scan_loses_and_duplicates_nothing(cluster, adapters, local_records, tmp_path):
    items = resolve([str(adapters)])
    marks = tmp_path / "marks"
    marks.mkdir()
    worker = KillOnce(ScorerWorker(Scorer(**SETTINGS).settings), items[23].id, str(marks))
    out = tmp_path / "killed.jsonl"
    summary, _ = run_scan(items, engine=RayEngine(worker, chunk=5, max_retries=2), output=out)
    assert len(list(marks.iterdir())) == 1  # the worker did die once
    lines = load_records(out, repair=False)
    assert sorted(r["item"] for r in lines) == sorted(local_records)  # each item exactly once
    for rec in lines:
        assert_same(rec, local_records[rec["item"]], rec["item"])
    assert summary.records == 50


def test_an_item_whose_worker_always_dies_is_an_error_record(cluster, adapters, local_records, tmp_path):
    items = resolve([str(adapters)])[:10]
    marks = tmp_path / "marks"
    marks.mkdir()
    victim = items[3].id
    worker = KillOnce(ScorerWorker(Scorer(**SETTINGS).settings), victim, str(marks), times=99)
    summary, fresh = run_scan(items, engine=RayEngine(worker, chunk=5, max_retries=0))
    records = _by_item([r.to_dict() for r in fresh])
    assert records.keys() == {item.id for item in items}
    assert records[victim]["status"] == "error" and records[victim]["error"]["code"] == "L183"
    assert "failed on every try" in records[victim]["error"]["reason"]
    for item, rec in records.items():
        if item != victim:  # its chunk-mates were redone one by one
            assert_same(rec, local_records[item], item)
    assert len(list(marks.iterdir())) == 2  # the chunk once, then the item alone once


def test_tiny_zoo_built_on_ray_is_byte_identical(cluster, tmp_path):
    from test_zoo import _small_subset

    from lolctl.zoo.builder import build
    from lolctl.zoo.recipes import get_recipe
    from lolctl.zoo.recipes.tiny import make_tiny_bert

    base = make_tiny_bert(tmp_path / "tiny-bert")
    settings = {"n_train": "2", "other_ranks": "2", "base_model": str(base),
                "subset": str(_small_subset(base / "synsets.tsv.gz"))}
    local = build(get_recipe("tiny", settings), tmp_path / "local")
    on_ray = build(get_recipe("tiny", settings), tmp_path / "ray", engine="ray")
    assert local["status"] == on_ray["status"] == "complete" and on_ray["built"] == 7
    files = {p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file()}
    assert files == {p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file()}
    assert sum(p.parts[0] == "adapters" for p in files) == 3 * 7
    for rel in sorted(files):
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["status"] == "complete"
