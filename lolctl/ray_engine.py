"""The Ray engine of `lolctl scan` and `lolctl zoo build` (optional extra ``lolctl[ray]``; Ray is imported lazily).

Scan: the items are cut into chunks; each chunk is one Ray task (1 CPU) that resolves, reads, checks and scores its
items in a worker process (:class:`ScorerWorker`: one :class:`lolctl.score.Scorer` per worker process, checkpoints
loaded once, predictions batched) and returns their records. Only the driver writes the JSONL, as with the local
engine, so the durability and ``--resume`` contract of :mod:`lolctl.scan` is unchanged. A worker process that dies
is retried by Ray (``max_retries``); a chunk that still fails is split into one task per item, and an item that
fails alone becomes an error record (L183), never a lost one.

Zoo: one task per LoRA (:func:`zoo_tasks`), with the resources the recipe declares; every worker writes its LoRA
folder atomically into the zoo folder (storage every node sees), the driver rewrites labels and manifest.

Cluster: ``address`` (``--ray-address``) or ``RAY_ADDRESS`` joins an existing cluster; with neither, Ray starts a
local one for the run (and stops it at the end). A Ray that is already initialised in this process is used as is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from lolctl.errors import LolctlError
from lolctl.report.records import ErrorRecord
from lolctl.scan import Record, chunk_size, chunked
from lolctl.sources import Item

MAX_RETRIES = 3  # Ray reruns a task whose worker process died this many times


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LolctlError("L180", "--engine ray", "Ray is not installed",
                          "pip install 'lolctl[ray]' (or use --engine local)") from None
    return ray


def connect(address: str | None = None) -> bool:
    """Join the cluster at ``address`` (else RAY_ADDRESS), else start a local one. True when this call started Ray
    in this process (the caller shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as err:
        raise LolctlError("L180", f"--ray-address {address}", f"no Ray cluster answers there ({err})",
                          "start one with `ray start --head` or omit --ray-address for a local one") from None
    return True


def cluster_cpus() -> int:
    return max(1, int(import_ray().cluster_resources().get("CPU", 1)))


class ScorerWorker:
    """The work of one scan chunk in a Ray worker: a :class:`lolctl.score.Scorer` built from ``settings`` (once per
    worker process and settings) scores the chunk's items."""

    _scorers: dict[str, Any] = {}  # per worker process

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def __call__(self, items: list[Item]) -> list[list[Record]]:
        key = json.dumps(self.settings, sort_keys=True)
        scorer = self._scorers.get(key)
        if scorer is None:
            from lolctl.score import Scorer

            scorer = self._scorers[key] = Scorer(**self.settings)
        return scorer.score_items(items)


def _call(work: Callable[[Any], Any], arg: Any) -> Any:
    return work(arg)


class RayEngine:
    """A :class:`lolctl.scan.Engine`: chunks of items as Ray tasks running ``worker`` (a picklable callable, e.g.
    :class:`ScorerWorker`); at most two chunks per cluster CPU in flight."""

    name = "ray"

    def __init__(self, worker: Callable[[list[Item]], list[list[Record]]], *, address: str | None = None,
                 chunk: int | None = None, max_retries: int = MAX_RETRIES) -> None:
        self.worker = worker
        self.address = address
        self.chunk = chunk
        self.max_retries = max_retries

    def run(self, items: list[Item]) -> Iterator[list[Record]]:
        ray = import_ray()
        started = connect(self.address)
        try:
            cpus = cluster_cpus()
            task = ray.remote(_call).options(num_cpus=1, max_retries=self.max_retries)
            worker = ray.put(self.worker)
            todo = chunked(items, self.chunk or chunk_size(len(items), cpus))
            for chunk, result in _as_completed(ray, lambda c: task.remote(worker, c), todo, 2 * cpus):
                if not isinstance(result, Exception):
                    yield from result
                elif len(chunk) > 1:  # find the item that fails: one task each
                    todo.extend([item] for item in chunk)
                else:
                    yield [ErrorRecord.of(chunk[0].display, chunk[0].id, _lost(chunk[0], result))]
        finally:
            if started:
                ray.shutdown()


def _as_completed(ray: Any, submit: Callable[[Any], Any], todo: list[Any], in_flight: int) -> Iterator[Any]:
    """(work, result or the exception it raised) for each element of ``todo`` as its task finishes; ``todo`` may
    grow while this runs. Tasks not finished when the caller stops are cancelled."""
    pending: dict[Any, Any] = {}
    try:
        while todo or pending:
            while todo and len(pending) < in_flight:
                work = todo.pop(0)
                pending[submit(work)] = work
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                work = pending.pop(ref)
                try:
                    yield work, ray.get(ref)
                except ray.exceptions.RayError as err:
                    yield work, err
    finally:
        for ref in pending:
            ray.cancel(ref)


def _lost(item: Item, err: Exception) -> LolctlError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return LolctlError("L183", item.display, f"the worker scoring it failed on every try ({type(err).__name__}: "
                       f"{reason})", "rerun with --resume to try it again; the Ray logs of the cluster (`ray logs`) "
                       "say why the worker died")


# -- zoo -------------------------------------------------------------------------------------------------------
def zoo_tasks(recipe: Any, zoo: str, jobs: list[Any], run: Callable[[Any, str, Any], tuple[str, float, float]],
              address: str | None = None, max_retries: int = MAX_RETRIES) -> Iterator[tuple[str, float, float]]:
    """Train ``jobs`` as one Ray task each, ``run(recipe, zoo, job)`` in a worker (the builder's
    :func:`~lolctl.zoo.builder.ray_job`), with the recipe's declared resources (1 CPU by default); yields (LoRA id,
    wall seconds, CPU seconds) as each finishes. A task that fails on every try ends the build (rerun to resume)."""
    ray = import_ray()
    started = connect(address)
    try:
        resources = {"num_cpus": 1, **(getattr(recipe, "resources", None) or {})}
        task = ray.remote(run).options(max_retries=max_retries, **resources)
        shared = ray.put(recipe)
        in_flight = 2 * cluster_cpus()
        for job, result in _as_completed(ray, lambda j: task.remote(shared, zoo, j), list(jobs), in_flight):
            if isinstance(result, Exception):
                raise LolctlError("L176", f"{zoo}: {job.id}", f"training failed on every try ({type(result).__name__}"
                                  f": {str(result).strip().splitlines()[0] if str(result).strip() else ''})",
                                  "rerun the build to resume (finished LoRAs are kept)") from result
            yield result
    finally:
        if started:
            ray.shutdown()
