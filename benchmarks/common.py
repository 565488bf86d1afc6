"""Shared helpers of the benchmark scripts: timing, peak memory in a fresh process, machine facts, Markdown tables.

Benchmarks are scripts that print tables (stdout: the tables; stderr: progress). They are not timed tests: the test
suite runs each script in a reduced size only to check that it still works and that its equality checks hold.

Peak memory of a phase is measured in a fresh child process (``python -m <module> --phase NAME ...``) that reports
its own ``ru_maxrss`` after its imports (the baseline) and after the work (the peak), as one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    runs: tuple[float, ...]  # seconds

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": list(self.runs), "best": self.best, "median": self.median}


def timed(fn: Callable[[], Any], repeat: int = 3, warmup: int = 0) -> tuple[Timing, Any]:
    """Run ``fn`` ``warmup + repeat`` times; return the timings of the last ``repeat`` runs and the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return Timing(tuple(runs)), result


# ---------------------------------------------------------------------------------------------------------- memory
def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_phase_child(
    phases: dict[str, Callable[[list[str]], dict[str, Any]]], name: str, argv: list[str], preload: Sequence[str] = ()
) -> None:
    """Child side: import ``preload`` (so the baseline includes the libraries), run one phase and print its result,
    with the memory baseline and peak, as one JSON line."""
    import importlib

    for module in preload:
        importlib.import_module(module)
    base = peak_rss_mb()
    result = phases[name](argv)
    result.update({"rss_base_mb": base, "rss_peak_mb": peak_rss_mb()})
    print(json.dumps(result), flush=True)


def run_phase(module: str, name: str, argv: Sequence[str], timeout: float = 3600) -> dict[str, Any]:
    """Parent side: run ``python -m module --phase name argv...`` in a fresh process; return its JSON result.

    Linux carries a parent's RSS high-water mark into a forked child's ru_maxrss, so the parent must stay small:
    benchmark parents do not import torch (heavy work, even writing test data, happens in phases)."""
    cmd = [sys.executable, "-m", module, "--phase", name, *argv]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, and how busy the machine was when the script started."""
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:  # without importing torch: a parent that imported it would lend its RSS to every child (see run_phase)
        from importlib.metadata import version

        info["torch"] = version("torch")
    except ImportError:  # PackageNotFoundError: torch not installed
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
        info["loadavg at start"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        pass
    return info


def mem_total_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def header(title: str, command: str, info: dict[str, Any] | None = None) -> str:
    """Title, rerun command and machine facts; pass ``info`` taken when the run started (its load average)."""
    info = info or machine_info()
    facts = ", ".join(f"{k} {v}" for k, v in info.items())
    return f"## {title}\n\nCommand: `{command}`\n\nMachine: {facts}\n"


# ---------------------------------------------------------------------------------------------------------- tables
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def fmt(x: Any) -> str:
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 1:
            return f"{x:.2f}"
        return f"{x:.3g}"
    return str(x)


def seconds(x: float) -> str:
    """A duration in a readable unit."""
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 60:
        return f"{x / 60:.1f} min"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1000:.1f} ms"


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"
