"""Peak memory of reading an adapter vs its tensor bytes, and of refusing headers that lie about their size.

    python benchmarks/read_memory.py                    # sizes 4, 16, 64, 256 MiB + the refusal cases
    python benchmarks/read_memory.py --sizes 8 32 --dtype F16

Each measurement runs in a fresh process: import torch and lolctl, reset the peak-RSS counter, note the resident set
(baseline), read the adapter (``read_adapter``), note the peak resident set (VmHWM). "extra" = peak - baseline;
"ratio" = extra / tensor bytes. Refusals: a header declaring a 16 GiB tensor in a small file (L120) and a sparse
file really holding 9 GiB (above the 8 GiB default budget, L125) must be refused with ~0 extra memory, before any
allocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile import writers as w  # noqa: E402

MiB = 2**20


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (VmRSS: now, VmHWM: peak since start or the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0). ru_maxrss cannot be used: it survives fork+exec."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_here(source: str, trust_pickle: bool = False) -> dict:
    """In this process: RSS before, read, peak RSS during the read."""
    import torch  # noqa: F401

    from lolctl.errors import LolctlError
    from lolctl.read import read_adapter

    _reset_peak()
    base = _status("VmRSS")
    outcome = "ok"
    try:
        adapter = read_adapter(source, trust_pickle=trust_pickle)
        factor_bytes = sum(t.numel() * t.element_size() for m in adapter.modules for t in (m.U, m.V))
        del adapter
    except LolctlError as err:
        outcome, factor_bytes = err.code, 0
    peak = _status("VmHWM")
    return {"baseline": base, "peak": peak, "extra": max(peak - base, 0), "outcome": outcome,
            "factor_bytes": factor_bytes}


def measure(*sources: Path) -> list[dict]:
    """Measure in one fresh interpreter, in order (the peak is reset before each read)."""
    proc = subprocess.run([sys.executable, __file__, "--one", *map(str, sources)], capture_output=True, text=True,
                          check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def write_adapter(folder: Path, tensor_bytes: int, dtype: str = "F32") -> int:
    """A PEFT adapter of square 1024-wide layers, rank 16, holding about ``tensor_bytes`` of factors."""
    size = w.ITEMSIZE[dtype]
    n = m = 1024
    r = 16
    per_module = (r * m + n * r) * size
    count = max(1, tensor_bytes // per_module)
    tensors = {}
    for i in range(count):
        key = f"{w.PEFT_PREFIX}model.layers.{i}.self_attn.q_proj"
        tensors[f"{key}.lora_A.weight"] = (dtype, [r, m], os.urandom(r * m * size) if dtype != "F32" else _f32(r * m))
        tensors[f"{key}.lora_B.weight"] = (dtype, [n, r], os.urandom(n * r * size) if dtype != "F32" else _f32(n * r))
    if dtype != "F32":  # random bits can be NaN; use small finite halves instead
        tensors = {k: (dt, s, b"\x00\x3c" * (len(raw) // 2)) for k, (dt, s, raw) in tensors.items()}
    w.write_peft(folder, w.st_file(tensors), w.peft_config(rank=r, target_modules=["q_proj"]))
    return count * per_module


def _f32(count: int) -> bytes:
    """``count`` float32 values: a random block of 4096 repeated (fast to write, finite, full rank per module)."""
    import array
    import random

    rng = random.Random(count)
    block = array.array("f", (rng.uniform(-1, 1) for _ in range(4096))).tobytes()
    return (block * (count // 4096 + 1))[: 4 * count]


def write_lying_header(folder: Path) -> int:
    """A 16 GiB tensor declared in a ~2 KiB file (the other tensors shifted after it: a consistent, truncated file)."""
    header, data = w.st_header(w.lora_tensors())
    first = next(iter(header))
    shift = 65536 * 65536 * 4
    for key in header:
        begin, end = header[key]["data_offsets"]
        header[key]["data_offsets"] = [begin + (shift if key != first else 0), end + shift]
    header[first]["shape"] = [65536, 65536]
    w.write_peft(folder, w.st_pack(header, data), w.peft_config())
    return shift


def write_sparse(folder: Path, nbytes: int = 9 * 2**30) -> int:
    """A file that really is ``nbytes`` long (sparse: no disk used) with a header that describes it exactly."""
    return w.sparse_adapter(folder, nbytes)


def table(rows: list[tuple[str, int, dict]]) -> str:
    lines = ["| case | tensor bytes | outcome | factors returned | baseline RSS | peak RSS | extra | extra / bytes |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, nbytes, m in rows:
        ratio = f"{m['extra'] / nbytes:.2f}" if nbytes else "-"
        cells = [name, f"{nbytes / MiB:,.1f} MiB", m["outcome"], f"{m['factor_bytes'] / MiB:.1f} MiB",
                 f"{m['baseline'] / MiB:.0f} MiB", f"{m['peak'] / MiB:.0f} MiB", f"{m['extra'] / MiB:.1f} MiB", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[4, 16, 64, 256], help="adapter sizes in MiB")
    p.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    p.add_argument("--one", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        for source in args.one:
            print(json.dumps(measure_here(source)), flush=True)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="lolctl-mem-") as d:
        for size in args.sizes:
            folder = Path(d) / f"a{size}"
            nbytes = write_adapter(folder, size * MiB, args.dtype)
            rows.append((f"{args.dtype} adapter", nbytes, measure(folder)[0]))
        lie = Path(d) / "lie"
        rows.append(("header declares 16 GiB, file 2 KiB", write_lying_header(lie), measure(lie)[0]))
        rows.append(("sparse file holding 9 GiB", write_sparse(Path(d) / "sparse"), measure(Path(d) / "sparse")[0]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
