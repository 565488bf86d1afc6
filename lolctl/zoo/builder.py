"""The generic zoo builder: plan → prepare (frozen work, once) → train each LoRA in worker processes → PEFT folders,
``labels.csv`` and ``manifest.json``.

Resumable: each LoRA is written to a temporary folder and renamed into place, so after a kill a LoRA is either
complete or absent; a rerun skips the complete ones and rebuilds ``labels.csv`` from the per-LoRA ``meta.json``
files. Deterministic: LoRA ``index`` depends only on the recipe settings and ``index`` (one torch thread per LoRA),
so a resumed build yields the same bytes as an uninterrupted one.

The layout on disk is :mod:`lolctl.zoo.format`'s; ``manifest.json`` and ``labels.csv`` are rewritten every 25 LoRAs
and at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.zoo import format as fmt
from lolctl.zoo.recipes.base import Job, grows


def versions() -> dict[str, str]:
    import peft
    import safetensors
    import torch
    import transformers

    from lolctl import __version__

    return {"lolctl": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "safetensors": safetensors.__version__}


def write_manifest(
    zoo: Path, recipe: Any, facts: dict[str, Any], status: str, base_hash: str, metas: list[dict[str, Any]]
) -> None:
    fmt.write_manifest(zoo, status=status, recipe=recipe.describe(), tasks=recipe.tasks(),
                       base_model={"id": recipe.settings.base_model, "hash": base_hash}, versions=versions(),
                       facts=facts, splits=fmt.split_counts(job.split for job in recipe.plan()), metas=metas)


def packed_ids(folder: Path, recipe: Any) -> set[str]:
    """The ids of the LoRAs packed in ``folder``, which must be a packed zoo of ``recipe`` (or of a smaller plan of
    it: a recipe grown since packs its first LoRAs identically)."""
    from lolctl.zoo.format import load_zoo

    packed = load_zoo(folder)
    differ = "it is not packed" if not packed.packed else _settings_differ(packed.manifest.get("recipe"), recipe,
                                                                           "the pack")
    if differ:
        raise LolctlError("L176", str(folder), f"not a packed zoo of this recipe and settings: {differ}",
                          "pass the folder `lolctl zoo pack` wrote from a build of the same recipe, seed and settings")
    return set(packed.ids)


def check_resume(zoo: Path, recipe: Any) -> None:
    path = zoo / fmt.MANIFEST
    if not path.exists():
        return
    differ = _settings_differ(fmt.read_manifest(path).get("recipe"), recipe, "the zoo")
    if differ:
        raise LolctlError("L176", str(path), f"this zoo was started with other recipe settings: {differ}",
                          "build into a new folder, or rerun with the same --recipe/--set/--seed")


def _settings_differ(old: Any, recipe: Any, where: str) -> str | None:
    """None when ``recipe`` is the recipe description ``old`` (a manifest's) or grows it, else what differs."""
    new = json.loads(json.dumps(recipe.describe()))  # as a manifest holds it (lists, not tuples)
    if grows(old, new):
        return None
    diffs = _differences(old, new)
    shown = "; ".join(f"{key} is {a} in {where}, {b} now" for key, a, b in diffs[:3])
    return shown + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "")


def _differences(old: Any, new: Any, key: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, old value, new value) of every leaf that differs between two JSON documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k, "missing"), new.get(k, "missing"), f"{key}.{k}" if key else k)]
    return [] if old == new else [(key or "recipe", json.dumps(old), json.dumps(new))]


def check_base(zoo: Path, base_hash: str) -> None:
    """Every LoRA of a zoo shares one base model: a resume on other base weights (same id) is refused."""
    path = zoo / fmt.MANIFEST
    old = fmt.read_manifest(path).get("base_model", {}).get("hash") if path.exists() else None
    if old and old != base_hash:
        raise LolctlError("L176", str(path), f"this zoo was built on base weights {old[:19]}…, these are "
                          f"{base_hash[:19]}…", "resume with the same base model files, or build into a new folder")


# -- workers ---------------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(recipe: Any, zoo: str) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["recipe"] = recipe
    _WORKER["zoo"] = Path(zoo)
    _WORKER["context"] = recipe.load(Path(zoo))


def _run_job(job: Job) -> tuple[str, float, float]:
    """Train and write one LoRA; returns (id, wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    recipe = _WORKER["recipe"]
    trained = recipe.train(_WORKER["context"], job)
    fmt.write_lora(_WORKER["zoo"], job, trained, recipe.settings.base_model)
    return job.id, time.perf_counter() - start, time.process_time() - cpu


def ray_job(recipe: Any, zoo: str, job: Job) -> tuple[str, float, float]:
    """One LoRA in a Ray worker: the recipe's frozen context is loaded once per worker process and zoo."""
    if _WORKER.get("key") != (zoo, recipe.name):
        _init_worker(recipe, zoo)
        _WORKER["key"] = (zoo, recipe.name)
    return _run_job(job)


def _run_in_process(recipe: Any, zoo: Path, jobs: list[Job]) -> Iterator[tuple[str, float, float]]:
    import torch

    threads = torch.get_num_threads()
    try:
        _init_worker(recipe, str(zoo))
        for job in jobs:
            yield _run_job(job)
    finally:
        torch.set_num_threads(threads)
        _WORKER.clear()


def _run_pool(recipe: Any, zoo: Path, jobs: list[Job], workers: int) -> Iterator[tuple[str, float, float]]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(recipe, str(zoo))) as pool:
        yield from pool.map(_run_job, jobs, chunksize=1)


def build(
    recipe: Any, zoo: Path, workers: int = 1, limit: int | None = None, log: Callable[[str], None] = lambda _: None,
    labels_every: int = 25, splits: list[str] | None = None, engine: str = "local", ray_address: str | None = None,
    skip_packed: Path | None = None,
) -> dict[str, Any]:
    """Build (or resume) the zoo. ``limit`` builds only the first ``limit`` LoRAs of the plan (in build order);
    ``splits`` only the LoRAs of those splits (L176 for a split the recipe does not plan). ``engine="ray"`` trains
    one LoRA per Ray task (lolctl.ray_engine.zoo_tasks; the zoo folder must be on storage every node sees).
    ``skip_packed``: a packed zoo of this recipe (`lolctl zoo pack`) whose LoRAs are not built again — a build spread
    over machines that keep only the packed part goes on where it stopped, and `pack --append` adds the rest."""
    zoo = Path(zoo)
    zoo.mkdir(parents=True, exist_ok=True)
    check_resume(zoo, recipe)
    packed = packed_ids(skip_packed, recipe) if skip_packed is not None else set()  # before the slow frozen work
    fmt.remove_partial(zoo)
    plan = recipe.plan()
    if splits:
        unknown = sorted(set(splits) - {job.split for job in plan})
        if unknown:
            raise LolctlError("L176", f"--split {unknown[0]}", f"recipe {recipe.name} plans no such split",
                              f"choose from {', '.join(sorted({job.split for job in plan}))}")
        plan = [job for job in plan if job.split in splits]
    plan = plan[:limit] if limit is not None else plan
    log(f"zoo {zoo}: recipe {recipe.name}, {len(plan)} LoRAs planned")
    facts_path = zoo / "cache" / "facts.json"
    if facts_path.exists():
        facts = json.loads(facts_path.read_text())
    else:
        log("preparing frozen work (once per zoo)...")
        facts = recipe.prepare(zoo)
        facts_path.parent.mkdir(parents=True, exist_ok=True)
        fmt.write_atomic(facts_path, json.dumps(facts, indent=2) + "\n")
    from lolctl.zoo.basemodel import resolve_base, weights_hash

    base_hash = weights_hash(resolve_base(recipe.settings.base_model))
    check_base(zoo, base_hash)
    write_manifest(zoo, recipe, facts, "building", base_hash, fmt.read_metas(zoo))
    done = fmt.done_ids(zoo) | packed
    todo = [job for job in plan if job.id not in done]
    if engine == "ray":
        from lolctl.ray_engine import zoo_tasks

        runner = zoo_tasks(recipe, str(zoo.resolve()), todo, ray_job, address=ray_address)
        log(f"{len(plan) - len(todo)} already built, {len(todo)} to build on Ray")
    else:
        runner = _run_in_process(recipe, zoo, todo) if workers <= 1 else _run_pool(recipe, zoo, todo, workers)
        log(f"{len(plan) - len(todo)} already built, {len(todo)} to build with {workers} worker(s)")
    tasks = recipe.tasks()
    start = time.perf_counter()
    cpu = busy = 0.0
    for n, (lora_id, seconds, cpu_seconds) in enumerate(runner, 1):
        busy += seconds
        cpu += cpu_seconds
        if n % labels_every == 0 or n == len(todo):
            metas = fmt.read_metas(zoo)
            fmt.write_labels(zoo, metas, tasks)
            write_manifest(zoo, recipe, facts, "building", base_hash, metas)
        wall = time.perf_counter() - start
        eta = wall / n * (len(todo) - n)
        log(f"[{n}/{len(todo)}] {lora_id} {seconds:.1f}s (cpu {cpu_seconds:.1f}s; mean {busy / n:.2f}s, "
            f"cpu {cpu / n:.2f}s per LoRA; wall {wall:.0f}s, eta {eta:.0f}s)")
    metas = fmt.read_metas(zoo)
    fmt.write_labels(zoo, metas, tasks)
    complete = {m["id"] for m in metas} >= {job.id for job in recipe.plan()}
    write_manifest(zoo, recipe, facts, "complete" if complete else "partial", base_hash, metas)
    return {"built": len(todo), "total": len(metas), "status": "complete" if complete else "partial",
            "seconds_per_lora": busy / max(len(todo), 1), "cpu_seconds_per_lora": cpu / max(len(todo), 1)}
