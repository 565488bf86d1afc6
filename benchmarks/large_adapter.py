"""Benchmark 1: one large adapter (Llama-2-7B shapes) — lolctl's read + health + canonical features against merely
reading the tensors and against the dense approach of describer tools (form ΔW, full SVD).

The adapter is a real PEFT folder (adapter_config.json + adapter_model.safetensors, bf16) with Llama-2-7B shapes:
hidden 4096, intermediate 11008, 32 layers, r = 16 on q, k, v, o, gate, up, down (224 modules). Values are
realistic: A like PEFT's Kaiming-uniform init plus training drift, B small with decaying column scales (so the
singular values of ΔW decay the way trained adapters' do).

Every phase runs in a fresh process (peak RSS measured there); times are the median of ``--repeat`` runs with the
file in the page cache. The dense side runs on a subsample of modules (``--dense-per-shape`` of each distinct
shape) and is extrapolated to all modules by shape — the table says so.

Full run (≈ 3 min):   python -m benchmarks.large_adapter
Reduced (tests):      python -m benchmarks.large_adapter --layers 2 --hidden 64 --intermediate 96 --rank 4 --inline
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import (
    header,
    log,
    machine_info,
    markdown_table,
    run_phase,
    run_phase_child,
    seconds,
    timed,
)

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
COMMAND = "python -m benchmarks.large_adapter"


def module_shapes(hidden: int, intermediate: int) -> dict[str, tuple[int, int]]:
    """(out, in) of each target module of a Llama block."""
    shapes = {name: (hidden, hidden) for name in ATTN}
    shapes.update({"gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden)})
    shapes["down_proj"] = (hidden, intermediate)
    return shapes


def write_adapter(folder: Path, layers: int, hidden: int, intermediate: int, rank: int, seed: int = 0) -> Path:
    """Write a PEFT LoRA folder with Llama shapes in bf16; return the folder."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    decay = 0.8 ** torch.arange(rank, dtype=torch.float32)  # column scales of B: decaying singular values
    tensors: dict[str, torch.Tensor] = {}
    for i in range(layers):
        for name, (n, m) in module_shapes(hidden, intermediate).items():
            block = "self_attn" if name in ATTN else "mlp"
            key = f"base_model.model.model.layers.{i}.{block}.{name}"
            A = (torch.rand(rank, m, generator=gen) * 2 - 1) / math.sqrt(m)  # PEFT's kaiming_uniform(a=√5) init
            A += 0.1 * torch.randn(rank, m, generator=gen) / math.sqrt(m)  # training drift
            B = torch.randn(n, rank, generator=gen) * 2e-3 * decay
            tensors[f"{key}.lora_A.weight"] = A.to(torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = B.to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.05,
        "target_modules": list(ATTN + MLP),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


# ------------------------------------------------------------------------------------------------------- phases
def canonical_features(adapter: Any) -> dict[tuple[int, int, int], tuple[Any, Any]]:
    """Balanced canonical factors (left·√S, right·√S) of every module, one batched call per shape group."""
    from lolctl.canonical import canonicalize

    groups: dict[tuple[int, int, int], list[Any]] = defaultdict(list)
    for mod in adapter.modules:
        groups[(*mod.shape, mod.rank)].append(mod)
    out = {}
    for key, mods in groups.items():
        out[key] = canonicalize([mod.U for mod in mods], [mod.V for mod in mods])  # lists: no stacking needed
    return out


def phase_load_file(argv: list[str]) -> dict[str, Any]:
    from safetensors.torch import load_file

    folder, repeat = Path(argv[0]), int(argv[1])
    timing, tensors = timed(lambda: load_file(str(folder / "adapter_model.safetensors")), repeat, warmup=1)
    return {"timing": timing.to_dict(), "tensors": len(tensors)}


def phase_load_bytes(argv: list[str]) -> dict[str, Any]:
    """Read the file's bytes and deserialize them (every byte of tensor data is read and copied)."""
    from safetensors.torch import load

    folder, repeat = Path(argv[0]), int(argv[1])
    path = folder / "adapter_model.safetensors"
    timing, tensors = timed(lambda: load(path.read_bytes()), repeat, warmup=1)
    return {"timing": timing.to_dict(), "tensors": len(tensors)}


def phase_read(argv: list[str]) -> dict[str, Any]:
    from lolctl.read import read_adapter

    folder, repeat = Path(argv[0]), int(argv[1])
    timing, adapter = timed(lambda: read_adapter(folder), repeat, warmup=1)
    return {"timing": timing.to_dict(), "modules": len(adapter.modules), "dtype": str(adapter.modules[0].U.dtype)}


def phase_score(argv: list[str]) -> dict[str, Any]:
    """read + health + canonical features, timed end to end and step by step."""
    import time

    from lolctl.health import health
    from lolctl.read import read_adapter

    folder, repeat = Path(argv[0]), int(argv[1])
    steps: dict[str, list[float]] = defaultdict(list)

    def run() -> Any:
        t0 = time.perf_counter()
        adapter = read_adapter(folder)
        t1 = time.perf_counter()
        report = health(adapter)
        t2 = time.perf_counter()
        feats = canonical_features(adapter)
        t3 = time.perf_counter()
        steps["read"].append(t1 - t0)
        steps["health"].append(t2 - t1)
        steps["canonical"].append(t3 - t2)
        return report, feats

    timing, (report, feats) = timed(run, repeat, warmup=1)
    return {
        "timing": timing.to_dict(),
        "steps": {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in steps.items()},  # median, warm-up dropped
        "modules": report.summary["modules"],
        "groups": len(feats),
        "findings": [f.code for f in report.findings],
    }


def phase_floor(argv: list[str]) -> dict[str, Any]:
    """NOT lolctl: a sketch of what single-pass scoring could cost — memory-mapped tensors, one bf16 → float32
    conversion per shape group, singular values through r × r Gram matrices (Cholesky in float64) instead of QR.
    A product version needs a fallback where Cholesky fails (rank-deficient factors), e.g. QR for those modules."""
    import torch
    from safetensors.torch import load_file

    folder, repeat = Path(argv[0]), int(argv[1])
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]

    def run() -> dict[str, torch.Tensor]:
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        groups: dict[tuple[int, int], list[str]] = defaultdict(list)
        for key in tensors:
            if key.endswith(".lora_A.weight"):
                p = key[: -len(".lora_A.weight")]
                groups[(tensors[f"{p}.lora_B.weight"].shape[0], tensors[key].shape[1])].append(p)
        out = {}
        for names in groups.values():
            U = torch.stack([tensors[f"{p}.lora_B.weight"] for p in names]).float()  # (G, n, r), scale applied later
            Vt = torch.stack([tensors[f"{p}.lora_A.weight"] for p in names]).float()  # (G, r, m) = Vᵀ, no transpose
            Ru = torch.linalg.cholesky((U.transpose(-1, -2) @ U).double()).transpose(-1, -2)  # UᵀU = RᵤᵀRᵤ
            Rv = torch.linalg.cholesky((Vt @ Vt.transpose(-1, -2)).double()).transpose(-1, -2)
            S = scale * torch.linalg.svdvals(Ru @ Rv.transpose(-1, -2))
            out.update(zip(names, S))
        return out

    timing, svs = timed(run, repeat, warmup=1)
    return {"timing": timing.to_dict(), "top_s": {k: float(v[0]) for k, v in svs.items()}}


def phase_dense(argv: list[str]) -> dict[str, Any]:
    """The dense approach on a subsample: ΔW = s·B A in float32, then a full SVD (torch.linalg.svd)."""
    import time

    import torch
    from safetensors.torch import load_file

    folder, per_shape = Path(argv[0]), int(argv[1])
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    prefixes = sorted({k.rsplit(".lora_", 1)[0] for k in tensors})
    by_shape: dict[tuple[int, int], list[str]] = defaultdict(list)
    for p in prefixes:
        n, m = tensors[f"{p}.lora_B.weight"].shape[0], tensors[f"{p}.lora_A.weight"].shape[1]
        by_shape[(n, m)].append(p)
    rows = []
    for (n, m), names in by_shape.items():
        for p in names[:per_shape]:
            t0 = time.perf_counter()
            dW = scale * tensors[f"{p}.lora_B.weight"].float() @ tensors[f"{p}.lora_A.weight"].float()
            t1 = time.perf_counter()
            _, S, _ = torch.linalg.svd(dW, full_matrices=False)
            t2 = time.perf_counter()
            rows.append({"shape": [n, m], "module": p, "form": t1 - t0, "svd": t2 - t1, "top_s": float(S[0])})
            del dW
    counts = {f"{n}x{m}": len(v) for (n, m), v in by_shape.items()}
    return {"samples": rows, "counts": counts}


def phase_write(argv: list[str]) -> dict[str, Any]:
    folder, layers, hidden, intermediate, rank = Path(argv[0]), *map(int, argv[1:5])
    write_adapter(folder, layers, hidden, intermediate, rank)
    return {}


PRELOAD = ("torch", "safetensors.torch", "lolctl.read", "lolctl.health", "lolctl.canonical")
PHASES = {
    "write": phase_write,
    "load_file": phase_load_file,
    "load_bytes": phase_load_bytes,
    "read": phase_read,
    "score": phase_score,
    "dense": phase_dense,
    "floor": phase_floor,
}


def run(name: str, folder: Path, extra: str, inline: bool) -> dict[str, Any]:
    argv = [str(folder), extra]
    log(f"phase {name} ...")
    if inline:
        return PHASES[name](argv)
    return run_phase("benchmarks.large_adapter", name, argv)


# ------------------------------------------------------------------------------------------------------- report
def check_matches(folder: Path, dense: dict[str, Any], floor: dict[str, Any]) -> None:
    """The top singular value from the dense SVD (sampled modules) and from the Gram-route sketch (all modules)
    equals lolctl's (Gram route, float64 Gram, QR fallback) — same maths, three routes."""
    from lolctl.health import health
    from lolctl.read import read_adapter

    report = health(read_adapter(folder))
    ours = {m["name"]: m["spectral_norm"] for m in report.modules}
    for key, top in floor["top_s"].items():
        name = key.removeprefix("base_model.model.")
        if not math.isclose(ours[name], top, rel_tol=2e-3):
            raise AssertionError(f"{name}: lolctl spectral norm {ours[name]} != Gram-route sketch {top}")
    for row in dense["samples"]:
        name = next(k for k in ours if row["module"].endswith(k))
        if not math.isclose(ours[name], row["top_s"], rel_tol=2e-3):
            raise AssertionError(f"{name}: lolctl spectral norm {ours[name]} != dense {row['top_s']}")


def mem(result: dict[str, Any]) -> str:
    if "rss_peak_mb" not in result:
        return "— (inline)"
    return f"{result['rss_peak_mb']:.0f} MB (+{result['rss_peak_mb'] - result['rss_base_mb']:.0f})"


def report(args: argparse.Namespace, folder: Path, res: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    size = (folder / "adapter_model.safetensors").stat().st_size
    modules = res["score"]["modules"]
    t_load = res["load_file"]["timing"]["median"]
    t_bytes = res["load_bytes"]["timing"]["median"]
    t_read = res["read"]["timing"]["median"]
    t_score = res["score"]["timing"]["median"]
    steps = res["score"]["steps"]
    dense = res["dense"]
    # extrapolate the dense side by shape: mean time per sampled module of a shape × modules of that shape
    per_shape: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in dense["samples"]:
        per_shape["x".join(map(str, row["shape"]))].append(row)
    dense_rows, dense_total, form_total = [], 0.0, 0.0
    for shape, rows in per_shape.items():
        count = dense["counts"][shape]
        form = sum(r["form"] for r in rows) / len(rows)
        svd = sum(r["svd"] for r in rows) / len(rows)
        dense_total += count * (form + svd)
        form_total += count * form
        dense_rows.append([shape, len(rows), count, seconds(form), seconds(svd), seconds(count * (form + svd))])
    sampled = sum(len(r) for r in per_shape.values())
    analysis = steps["health"] + steps["canonical"]
    speedup_analysis = dense_total / analysis
    speedup_e2e = (t_load + dense_total) / t_score
    vs_read = t_score / t_load
    vs_bytes = t_score / t_bytes
    out = [
        header("Large adapter (Llama-2-7B shapes)", COMMAND, info),
        f"Adapter: {args.layers} layers, hidden {args.hidden}, intermediate {args.intermediate}, r = {args.rank}, "
        f"{modules} modules, bf16, {size / 2**20:.1f} MiB on disk (page cache warm). Median of {args.repeat} runs.\n",
        markdown_table(
            ["what", "time", "peak RSS (above baseline)"],
            [
                ["safetensors load_file (merely reading the tensors; memory-mapped)", seconds(t_load),
                 mem(res["load_file"])],
                ["safetensors load(path.read_bytes()) (every byte read and copied)", seconds(t_bytes),
                 mem(res["load_bytes"])],
                ["lolctl read_adapter", seconds(t_read), mem(res["read"])],
                ["lolctl read + health + canonical features", seconds(t_score), mem(res["score"])],
                ["  of which read", seconds(steps["read"]), ""],
                ["  of which health (Gram-route singular values, findings)", seconds(steps["health"]), ""],
                ["  of which canonical features (Gram route + r×r SVD, batched)", seconds(steps["canonical"]), ""],
                ["sketch, NOT lolctl: mmap + one conversion + Gram-route singular values (see docstring)",
                 seconds(res["floor"]["timing"]["median"]), mem(res["floor"])],
                [f"dense: form ΔW + full SVD, EXTRAPOLATED from {sampled} of {modules} modules",
                 seconds(dense_total), mem(dense)],
            ],
        ),
        "",
        f"Dense side per shape (sampled modules timed, then × modules of that shape; forming ΔW alone: "
        f"{seconds(form_total)}):\n",
        markdown_table(["ΔW shape", "sampled", "modules", "form ΔW", "full SVD", "extrapolated total"], dense_rows),
        "",
        markdown_table(
            ["target", "measured", "met"],
            [
                ["≥ 1000x faster than dense (analysis: health + canonical vs ΔW + SVD)",
                 f"{speedup_analysis:,.0f}x", "yes" if speedup_analysis >= 1000 else "MISSED"],
                ["≥ 1000x faster than dense (end to end, incl. reading)", f"{speedup_e2e:,.0f}x",
                 "yes" if speedup_e2e >= 1000 else "MISSED"],
                ["within 2x of merely reading the tensors (load_file)", f"{vs_read:.2f}x",
                 "yes" if vs_read <= 2 else "MISSED"],
                ["within 2x of reading every byte (load of the file's bytes)", f"{vs_bytes:.2f}x",
                 "yes" if vs_bytes <= 2 else "MISSED"],
            ],
        ),
        "",
        f"Check: the dense top singular value equals lolctl's spectral norm on all {sampled} sampled modules, and "
        f"the sketch's on all {modules} modules.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=11008)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per phase (after one warm-up)")
    p.add_argument("--dense-per-shape", type=int, default=1, help="modules of each shape run through the dense SVD")
    p.add_argument("--folder", type=Path, help="where to write the adapter (default: a temporary folder)")
    p.add_argument("--inline", action="store_true", help="run phases in this process (no peak-memory column)")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.phase:
        run_phase_child(PHASES, args.phase, rest, PRELOAD)
        return 0
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="lolctl-bench-") as tmp:
        folder = args.folder or Path(tmp) / "llama2-7b-lora"
        log(f"writing the adapter to {folder} ...")
        shape = [str(x) for x in (args.layers, args.hidden, args.intermediate, args.rank)]
        if args.inline:
            phase_write([str(folder), *shape])
        else:
            run_phase("benchmarks.large_adapter", "write", [str(folder), *shape])
        quick = ("load_file", "load_bytes", "read", "score", "floor")
        res = {name: run(name, folder, str(args.repeat), args.inline) for name in quick}
        res["dense"] = run("dense", folder, str(args.dense_per_shape), args.inline)
        check_matches(folder, res["dense"], res["floor"])
        print(report(args, folder, res, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
