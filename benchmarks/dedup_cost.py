"""Benchmark: what duplicate detection adds to a scan, per adapter — the sketch (lolctl.dedup.sketch) against the
read + health report a `scan --health-only` does anyway, and the index look-up (DuplicateIndex.mark) against many
earlier adapters. In-process, one torch thread, the two timings interleaved adapter by adapter (so a busy machine
slows both alike; the ratio is the figure to read).

Full run:        python -m benchmarks.dedup_cost
Reduced (tests): python -m benchmarks.dedup_cost --adapters 3 --llama-layers 1 --index 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import header, log, machine_info, markdown_table

COMMAND = "python -m benchmarks.dedup_cost"


def _per_adapter(paths: list[Path]) -> dict[str, float]:
    from lolctl.dedup import sketch
    from lolctl.health import health
    from lolctl.read import read_adapter

    scan, sk = [], []
    for path in paths:
        t0 = time.perf_counter()
        adapter = read_adapter(path)
        health(adapter)
        t1 = time.perf_counter()
        sketch(adapter.modules)
        t2 = time.perf_counter()
        scan.append(t1 - t0)
        sk.append(t2 - t1)
    return {"scan": statistics.median(scan), "sketch": statistics.median(sk)}


def _scan_ab(folder: Path, rounds: int) -> dict[str, float]:
    """CPU seconds per adapter of the scan engine (lolctl.scan.run_scan with a health-only Scorer, 4 threads, as
    `lolctl scan --health-only` runs it) with and without duplicate detection, alternating; medians over rounds."""
    from lolctl.dedup import DuplicateIndex
    from lolctl.scan import run_scan
    from lolctl.score import Scorer
    from lolctl.sources import resolve

    items = resolve([str(folder)])
    runs: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds + 1):
        for mode in ("with", "without"):
            scorer = Scorer(predict=False, modules=False, sketch=mode == "with")
            t0 = time.process_time()
            _, records = run_scan(items, scorer.score_item, jobs=4,
                                  duplicates=DuplicateIndex() if mode == "with" else None)
            runs[mode].append((time.process_time() - t0) / len(items))
            assert not any(getattr(r, "duplicate_of", None) for r in records)  # distinct adapters: none is marked
    return {mode: statistics.median(t[1:]) for mode, t in runs.items()}  # the first round warms up


def _index_cost(count: int) -> float:
    """Median seconds of DuplicateIndex.mark for a new, distinct adapter after ``count`` originals (MiniLM shapes)."""
    import numpy as np

    from lolctl.dedup import DIM, DuplicateIndex, Sketch
    from lolctl.report.records import ScoreRecord

    index = DuplicateIndex(confirm=lambda a, b: (None, None))
    rng = np.random.default_rng(0)

    def unit() -> np.ndarray:
        v = rng.standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    for i in range(count):
        index.add(ScoreRecord(f"s{i}", f"s{i}", f"p{i}", {}, [], None, None,
                              sketch=Sketch("sig", 1.0, unit()).to_dict()))
    times = []
    for _ in range(50):
        rec = ScoreRecord("new", "new", "new", {}, [], None, None, sketch=Sketch("sig", 1.0, unit()).to_dict())
        t0 = time.perf_counter()
        index.mark(rec)
        times.append(time.perf_counter() - t0)
        assert rec.duplicate_of is None
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adapters", type=int, default=200, help="MiniLM-shaped adapters")
    p.add_argument("--llama-layers", type=int, default=4, help="layers of the Llama-2-7B-shaped r=16 adapters")
    p.add_argument("--llama-adapters", type=int, default=5)
    p.add_argument("--index", type=int, default=10_000, help="earlier adapters in the index")
    p.add_argument("--rounds", type=int, default=5, help="alternating scan rounds with and without detection")
    args = p.parse_args(argv)
    import torch

    from benchmarks.large_adapter import write_adapter
    from benchmarks.scan_many import HIDDEN, LAYERS, RANK, TARGETS, write_adapters

    torch.set_num_threads(1)
    info = machine_info()
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="lolctl-dedup-") as tmp:
        root = Path(tmp)
        log(f"writing {args.adapters} MiniLM-shaped adapters ...")
        minilm = write_adapters(root / "minilm", args.adapters)
        log(f"writing {args.llama_adapters} Llama-shaped adapters ({args.llama_layers} layers) ...")
        llama = [write_adapter(root / f"llama{i}", args.llama_layers, 4096, 11008, 16, seed=i)
                 for i in range(args.llama_adapters)]
        _per_adapter(minilm[:3])  # warm-up
        for label, paths in ((f"MiniLM ({LAYERS * len(TARGETS)} modules {HIDDEN}x{HIDDEN}, r={RANK})", minilm),
                             (f"Llama-2-7B shapes, {args.llama_layers} layers ({7 * args.llama_layers} modules, "
                              "r=16, bf16)", llama)):
            log(f"timing {label} ...")
            t = _per_adapter(paths)
            rows.append([label, len(paths), f"{t['scan'] * 1e3:.2f} ms", f"{t['sketch'] * 1e3:.3f} ms",
                         f"{100 * t['sketch'] / t['scan']:.1f} %"])
        log(f"scan engine with / without duplicate detection, {args.rounds} rounds ...")
        ab = _scan_ab(root / "minilm", args.rounds)
    log(f"index look-up against {args.index} earlier adapters ...")
    look = _index_cost(args.index)
    lines = [
        header("Duplicate detection: cost per adapter", COMMAND, info),
        "Median per adapter, one torch thread, in-process. 'read + health' is what `scan --health-only` does for an "
        "adapter anyway; 'sketch' is what duplicate detection adds in the worker.\n",
        markdown_table(["adapters", "count", "read + health", "sketch", "sketch / (read + health)"], rows),
        f"\nIndex look-up (`DuplicateIndex.mark`, a distinct adapter) against {args.index:,} earlier adapters of one "
        f"signature: {look * 1e3:.3f} ms median (the exact diff runs only for sketch candidates).",
        f"\nScan engine (`run_scan`, health only, 4 threads, the {args.adapters} MiniLM-shaped adapters), CPU time "
        f"per adapter, median of {args.rounds} alternating rounds: with detection {ab['with'] * 1e3:.2f} ms, "
        f"without {ab['without'] * 1e3:.2f} ms ({100 * (ab['with'] / ab['without'] - 1):+.1f} %).",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
