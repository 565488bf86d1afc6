"""Batched scoring (Scorer.score_items): adapters of one checkpoint predicted in one model call give the records of the
one-at-a-time path, predictions to 1e-5 (mixed ranks, an inert adapter and an unreadable one in the same chunk)."""

from __future__ import annotations

import json

from hubserver import peft_files, write_files

from lolctl.score import Scorer
from lolctl.sources import resolve

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _close(a, b, where=""):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-5 * (1 + abs(b)), (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_batched_predictions_equal_one_at_a_time(tmp_path, one_thread):
    for k, r in enumerate((4, 8, 2, 4, 6)):
        write_files(tmp_path / f"a{k}", peft_files(k, r=r, n=384, m=384, layers=6, base=MINILM))
    write_files(tmp_path / "inert", peft_files(9, r=4, n=384, m=384, layers=6, base=MINILM, zero_b=True))
    broken = peft_files(7, r=4, n=384, m=384, layers=6, base=MINILM)
    broken["adapter_model.safetensors"] = broken["adapter_model.safetensors"][:60]
    write_files(tmp_path / "broken", broken)
    items = resolve([str(tmp_path)])
    scorer = Scorer(modules=False, sketch=True)
    batched = [[r.to_dict() for r in recs] for recs in scorer.score_items(items)]
    single = [[r.to_dict() for r in scorer.score_item(item)] for item in items]
    assert len(batched) == len(items) == 7
    assert sum(bool(r[0].get("prediction")) for r in batched) == 6
    assert [r[0]["status"] for r in batched].count("error") == 1
    for b, s in zip(batched, single):
        _close(b, s, b[0]["source"])
    shown = [json.dumps(r[0]["prediction"]["tasks"], sort_keys=True) for r in batched if r[0].get("prediction")]
    assert len(set(shown)) > 2  # each adapter got its own prediction, not a neighbour's


def test_scan_threads_share_the_cores_with_torch(tmp_path, monkeypatch):
    """jobs threads each running torch: torch's intra-op pool is cut to cores // jobs while the scan runs, then
    restored (4 threads x a pool of every core oversubscribed the machine)."""
    import torch

    from lolctl.scan import LocalEngine

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    before = torch.get_num_threads()
    torch.set_num_threads(8)
    seen = []
    try:
        engine = LocalEngine(lambda chunk: [seen.append(torch.get_num_threads()) or [] for _ in chunk], jobs=4)
        assert list(engine.run(resolve_items(tmp_path, 3))) == [[], [], []]
        assert seen == [2, 2, 2]
        assert torch.get_num_threads() == 8
        list(LocalEngine(lambda chunk: [seen.append(torch.get_num_threads()) or [] for _ in chunk], jobs=1)
             .run(resolve_items(tmp_path, 1)))
        assert seen[-1] == 8  # one thread keeps torch's pool
    finally:
        torch.set_num_threads(before)


def resolve_items(folder, count):
    for k in range(count):
        write_files(folder / f"t{k}", peft_files(k, r=2, n=8, m=8, layers=1))
    return resolve([str(folder)])[:count]
