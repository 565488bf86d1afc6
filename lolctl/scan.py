"""The scan engine: score many items in parallel, append one JSONL record per adapter as each item finishes.

Durability contract of the output file (``--output``):
- every record is one whole line; the lines of one item are written with a single ``write`` and then
  ``flush`` + ``fsync``, so a crash leaves at most one torn last line;
- ``--resume`` drops a torn last line (truncating the file to its last newline), reads the item ids already
  recorded and skips them, so a killed scan resumed to the end holds exactly one record per adapter.

Engines: an :class:`Engine` turns the items to do into their records, one list per item, in any order. The local
engine (the default) runs chunks of items on ``jobs`` threads of this process (Hub I/O overlaps; reading is bounded
separately by the Scorer's read slots); ``lolctl.ray_engine`` sends chunks to Ray workers. Whatever the engine, only
the calling thread writes the file and calls ``on_records``, so the contract above holds for every engine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lolctl.dedup import DuplicateIndex
from lolctl.errors import LolctlError
from lolctl.report.encode import dumps
from lolctl.report.records import ErrorRecord, Record, parse_record
from lolctl.sources import Item

ChunkProcess = Callable[[list[Item]], list[list[Record]]]  # items -> one list of records per item, same order


class Engine(Protocol):
    """How a scan's items are scored: :meth:`run` yields each item's records (a list) as the item finishes."""

    name: str

    def run(self, items: list[Item]) -> Iterable[list[Record]]: ...


def per_item(process: Callable[[Item], list[Record]]) -> ChunkProcess:
    """A chunk process from a one-item one."""
    return lambda items: [process(item) for item in items]


def chunk_size(count: int, workers: int, largest: int = 32) -> int:
    """Items per chunk: big enough to batch, small enough that every worker gets about two chunks."""
    return max(1, min(largest, -(-count // (2 * max(1, workers)))))


def chunked(items: list[Item], size: int) -> list[list[Item]]:
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


class LocalEngine:
    """Chunks of items on ``jobs`` threads of this process."""

    name = "local"

    def __init__(self, process: ChunkProcess, jobs: int = 4, chunk: int | None = None) -> None:
        self.process = process
        self.jobs = max(1, jobs)
        self.chunk = chunk

    def run(self, items: list[Item]) -> Iterable[list[Record]]:
        size = self.chunk or chunk_size(len(items), self.jobs)
        with _torch_threads(self.jobs):
            for records in _parallel(chunked(items, size), self.process, self.jobs):
                yield from records


@contextmanager
def _torch_threads(jobs: int):
    """While ``jobs`` threads each run torch: torch's intra-op threads cut to cores // jobs (at least 1), restored
    after. Without it, 4 scan threads × one torch pool of every core each ran a 200-adapter scan 1.6x slower than
    one thread (benchmarks/scan_many.py)."""
    torch = sys.modules.get("torch")
    if torch is None or jobs <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) // jobs)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ScanSummary:
    """Counts over every record of the scan (resumed ones included)."""

    items: int = 0  # items in this scan (after sharding)
    resumed: int = 0  # items skipped because the output already held them
    records: int = 0
    ok: int = 0
    errors: int = 0
    severities: Counter = field(default_factory=Counter)  # max severity per ok record ("none" when no findings)
    error_codes: Counter = field(default_factory=Counter)
    ood: int = 0
    predicted: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # weights files met but not adapters: path, reason
    duplicates: int = 0  # records marked duplicate_of an earlier one (lolctl.dedup)

    def add(self, record: Record) -> None:
        self.records += 1
        if isinstance(record, ErrorRecord):
            self.errors += 1
            self.error_codes[record.code] += 1
            return
        self.ok += 1
        self.severities[record.max_severity or "none"] += 1
        self.duplicates += bool(record.duplicate_of)
        if record.prediction:
            self.predicted += 1
            self.ood += record.ood

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "resumed": self.resumed,
            "records": self.records,
            "ok": self.ok,
            "errors": self.errors,
            "max_severity": dict(self.severities),
            "error_codes": dict(self.error_codes),
            "predicted": self.predicted,
            "ood": self.ood,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
        }


def load_records(path: Path, repair: bool = True) -> list[dict[str, Any]]:
    """Records of a JSONL scan file, as JSON objects (:func:`lolctl.report.records.parse_record` types them); a torn
    last line (killed writer) is dropped and, with ``repair``, cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # whole lines only
    if repair and end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    records = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise LolctlError("L180", f"{path}:{number}", f"not a JSON line ({err.msg})",
                              "pass a lolctl scan output file, or start a new one") from None
        if not isinstance(rec, dict) or "item" not in rec:
            raise LolctlError("L180", f"{path}:{number}", "not a lolctl scan record (no 'item' field)",
                              "pass a lolctl scan output file, or start a new one")
        records.append(rec)
    return records


class ScanInterrupted(Exception):
    """Ctrl-C during :func:`run_scan`: ``recorded`` of ``total`` items have their records (in the output file when
    there is one, which is closed and fsync'd); workers still running are abandoned, their items redone by
    ``--resume``."""

    def __init__(self, summary: ScanSummary, recorded: int, total: int) -> None:
        self.summary = summary
        self.recorded = recorded
        self.total = total
        super().__init__(f"interrupted: {recorded} of {total} recorded")


class JsonlAppender:
    """Append whole lines with one write(2) each; fsync at most every ``FSYNC_SECONDS`` and on close.

    A written line is in the kernel as soon as write returns, so a killed scan loses nothing (``--resume`` also
    repairs a torn last line); the periodic fsync bounds what a power cut can take to the last half second, without
    paying a ~2 ms fsync per adapter (docs/performance.md §3)."""

    FSYNC_SECONDS = 0.5

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._synced = time.monotonic()

    def write(self, records: list[Record]) -> None:
        data = "".join(dumps(r.to_dict()) + "\n" for r in records).encode()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        if time.monotonic() - self._synced >= self.FSYNC_SECONDS:
            os.fsync(self.fd)
            self._synced = time.monotonic()

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


def run_scan(
    items: list[Item],
    process: Callable[[Item], list[Record]] | None = None,
    *,
    engine: Engine | None = None,
    output: Path | None = None,
    resume: bool = False,
    jobs: int = 4,
    on_records: Callable[[list[Record]], None] | None = None,
    duplicates: DuplicateIndex | None = None,
) -> tuple[ScanSummary, list[Record]]:
    """Score ``items`` with ``engine`` (default: ``process`` item by item in ``jobs`` threads); returns the summary
    and this run's records.

    With ``duplicates``, each record is checked against the earlier ones (resumed included) before it is written."""
    summary = ScanSummary(items=len(items))
    done: set[str] = set()
    if output is not None and output.exists():
        if not resume:
            raise LolctlError("L180", str(output), "the output file already exists",
                              "pass --resume to continue that scan, or choose another --output")
        for rec in map(parse_record, load_records(output)):
            done.add(rec.item)
            summary.add(rec)
            if duplicates is not None:
                duplicates.add(rec)
    todo = [item for item in items if item.id not in done]
    summary.resumed = len(items) - len(todo)
    if engine is None:
        assert process is not None, "run_scan needs a process or an engine"
        engine = LocalEngine(per_item(process), jobs, chunk=1)
    sink = JsonlAppender(output) if output is not None else None
    fresh: list[Record] = []
    finished = 0  # items of this run whose records are written
    try:
        for records in engine.run(todo) if todo else ():
            if duplicates is not None:
                for rec in records:
                    duplicates.mark(rec)
            if sink is not None:
                sink.write(records)
            finished += 1
            for rec in records:
                summary.add(rec)
            fresh += records
            if on_records is not None:
                on_records(records)
    except KeyboardInterrupt:
        if sink is not None and output is not None:  # the signal can land between a write and its count: the file
            sink.close()                             # is the truth
            sink = None
            finished = len({rec.get("item") for rec in load_records(output)}) - summary.resumed
        raise ScanInterrupted(summary, summary.resumed + finished, len(items)) from None
    finally:
        if sink is not None:
            sink.close()
    return summary, fresh


def _parallel(chunks: Iterable[list[Item]], process: ChunkProcess, jobs: int):
    """Yield each chunk's records as it finishes; at most ``2 * jobs`` chunks are in flight."""
    pending: set[Future] = set()
    queue = iter(chunks)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="lolctl-scan")
    clean = False
    try:
        while True:
            while len(pending) < 2 * max(1, jobs):
                chunk = next(queue, None)
                if chunk is None:
                    break
                pending.add(pool.submit(process, chunk))
            if not pending:
                clean = True
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                yield fut.result()
    finally:
        # normal end: wait for the (idle) workers; Ctrl-C or an error: cancel what has not started and do not wait
        # for items in flight (a Hub download can take minutes) — --resume redoes them
        pool.shutdown(wait=clean, cancel_futures=not clean)
