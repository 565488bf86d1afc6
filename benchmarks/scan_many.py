"""Benchmark 3: many adapters — `lolctl scan` of a folder of MiniLM-shaped adapters (adapters per second after
start-up, peak RSS), and the cold start of `lolctl --help` and of `lolctl score` on one adapter.

The adapters are PEFT folders shaped like the flagship zoo's: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers,
hidden 384), LoRA r = 4 on query and value of every layer (12 modules), float32 on disk. Every command runs as a new
process, the way users run it (file cache warm; one untimed warm-up run first so bytecode is compiled). Throughput
after start-up is (N − 1) / (t(N adapters) − t(1 adapter)): the difference removes interpreter, import and
checkpoint start-up. Peak RSS is the child's ru_maxrss (os.wait4). The bare read is the same files loaded with
safetensors (``safetensors.torch.load_file``) in a Python loop, in a child process, best of ``--repeat`` passes; the
scan's marginal cost per adapter over it is the ratio issue 14 targets (≤ 4x with predictions).

Full run (≈ 1 min):   python -m benchmarks.scan_many
Reduced (tests):      python -m benchmarks.scan_many --adapters 4 --repeat 1 --help-repeat 1 --no-warmup
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, header, log, machine_info, markdown_table, seconds

COMMAND = "python -m benchmarks.scan_many"
LAYERS, HIDDEN, RANK = 6, 384, 4
TARGETS = ("query", "value")


def write_adapters(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` MiniLM-shaped PEFT LoRA folders (adapter_0000, ...) with distinct random trained-looking factors."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    config = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "r": RANK,
        "lora_alpha": 2 * RANK,
        "lora_dropout": 0.0,
        "target_modules": list(TARGETS),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    paths = []
    for k in range(count):
        tensors = {}
        for i in range(LAYERS):
            for t in TARGETS:
                key = f"base_model.model.encoder.layer.{i}.attention.self.{t}"
                A = (torch.rand(RANK, HIDDEN, generator=gen) * 2 - 1) / math.sqrt(HIDDEN)
                tensors[f"{key}.lora_A.weight"] = A
                tensors[f"{key}.lora_B.weight"] = torch.randn(HIDDEN, RANK, generator=gen) * 1e-3
        path = folder / f"adapter_{k:04d}"
        path.mkdir(parents=True)
        save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        (path / "adapter_config.json").write_text(json.dumps(config))
        paths.append(path)
    return paths


def lolctl_command() -> list[str]:
    """The installed console script (what users run), else ``python -m lolctl``."""
    script = Path(sys.executable).parent / "lolctl"
    if script.exists():
        return [str(script)]
    found = shutil.which("lolctl")
    return [found] if found else [sys.executable, "-m", "lolctl"]


def run_timed(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` as a new process; wall time, exit code, peak RSS (MB) and stderr tail."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # drain while waiting (progress goes to stderr)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "code": proc.returncode, "rss_mb": usage.ru_maxrss / 1024, "stderr": err.decode()[-2000:]}


def repeat(cmd: list[str], times: int, ok: tuple[int, ...] = (0, 1), setup: Any = None) -> dict[str, Any]:
    runs = []
    for _ in range(times):
        if setup:
            setup()
        r = run_timed(cmd)
        if r["code"] not in ok:
            raise RuntimeError(f"{' '.join(cmd)} exited {r['code']}:\n{r['stderr']}")
        runs.append(r)
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "rss_mb": max(r["rss_mb"] for r in runs),
        "code": runs[-1]["code"],
    }


def check_records(path: Path, expected: int) -> dict[str, Any]:
    """Every adapter has exactly one record and none is an error; what kind of scoring happened."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(records) != expected:
        raise AssertionError(f"{path}: {len(records)} records for {expected} adapters")
    errors = [r for r in records if r.get("error") or r.get("status") == "error"]
    if errors:
        raise AssertionError(f"{len(errors)} error records, first: {json.dumps(errors[0])[:500]}")
    predicted = sum(1 for r in records if r.get("prediction") or r.get("predictions"))
    return {"records": len(records), "with_predictions": predicted}


def bare_read(folder: Path, passes: int) -> float:
    """Seconds per adapter to load every adapter_model.safetensors below ``folder`` (best of ``passes``)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*/adapter_model.safetensors"))
    best = math.inf
    for _ in range(max(1, passes)):
        t0 = time.perf_counter()
        for path in files:
            load_file(str(path))
        best = min(best, (time.perf_counter() - t0) / len(files))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adapters", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--help-repeat", type=int, default=7, help="runs of lolctl --help")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    p.add_argument("--read-slots", type=int, default=None, help="passed to lolctl scan --read-slots")
    p.add_argument("--checkpoint", help="passed to scan and score (default: lolctl's choice by base model)")
    p.add_argument("--write", nargs=2, metavar=("FOLDER", "COUNT"), help=argparse.SUPPRESS)
    p.add_argument("--bare-read", nargs=2, metavar=("FOLDER", "REPEAT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write:
        write_adapters(Path(args.write[0]), int(args.write[1]))
        return 0
    if args.bare_read:
        print(json.dumps({"seconds_per_adapter": bare_read(Path(args.bare_read[0]), int(args.bare_read[1]))}))
        return 0
    info = machine_info()
    lolctl = lolctl_command()
    extra = (["--checkpoint", args.checkpoint] if args.checkpoint else []) + (
        ["--read-slots", str(args.read_slots)] if args.read_slots else []
    )
    with tempfile.TemporaryDirectory(prefix="lolctl-scan-") as tmp:
        root = Path(tmp)
        log(f"writing {args.adapters} adapters ...")
        # written by a child: this process stays small (a parent's RSS would show in every child's ru_maxrss)
        subprocess.run([sys.executable, "-m", "benchmarks.scan_many", "--write", str(root / "many"),
                        str(args.adapters)], cwd=REPO, check=True)
        paths = sorted((root / "many").iterdir())
        one = root / "one"
        one.mkdir()
        shutil.copytree(paths[0], one / paths[0].name)
        out = root / "out.jsonl"

        def scan_cmd(folder: Path) -> list[str]:
            return [*lolctl, "scan", str(folder), "--output", str(out), "--format", "jsonl", "--fail-on", "never",
                    *extra]

        def fresh() -> None:
            out.unlink(missing_ok=True)

        if not args.no_warmup:
            log("warm-up ...")
            run_timed([*lolctl, "--help"])
            run_timed([*lolctl, "score", str(paths[0]), "--format", "json", *extra[:2]])
        log("lolctl --help ...")
        helps = repeat([*lolctl, "--help"], args.help_repeat, ok=(0,))
        log("lolctl score (one adapter) ...")
        score = repeat([*lolctl, "score", str(paths[0]), "--format", "json", *extra[:2]], args.repeat)
        log("lolctl scan (one adapter) ...")
        scan1 = repeat(scan_cmd(one), args.repeat, setup=fresh)
        check_records(out, 1)
        log(f"lolctl scan ({args.adapters} adapters) ...")
        scan_n = repeat(scan_cmd(root / "many"), args.repeat, setup=fresh)
        kinds = check_records(out, args.adapters)
        log("bare safetensors read of the same files ...")
        bare = json.loads(subprocess.run([sys.executable, "-m", "benchmarks.scan_many", "--bare-read",
                                          str(root / "many"), str(args.repeat)], cwd=REPO, check=True,
                                         capture_output=True, text=True).stdout)["seconds_per_adapter"]

    span = scan_n["wall"] - scan1["wall"]
    per_s = (args.adapters - 1) / span if span > 0 else float("nan")  # nan: too few adapters to see past start-up
    ratio = 1 / per_s / bare if per_s > 0 and bare > 0 else float("nan")
    scored = "health + predictions" if kinds["with_predictions"] else "health only (no checkpoint fits MiniLM here)"
    lines = [
        header("Many adapters: lolctl scan, cold starts", COMMAND, info),
        f"{args.adapters} MiniLM-shaped PEFT adapters ({LAYERS * len(TARGETS)} modules of {HIDDEN}x{HIDDEN}, "
        f"r = {RANK}, float32); records: {kinds['records']}, none an error; scored: {scored}. Command: "
        f"`lolctl scan FOLDER --output OUT.jsonl --format jsonl --fail-on never{' ' * bool(extra)}{' '.join(extra)}`. "
        f"Median of {args.repeat} runs (--help: {args.help_repeat}), each a new process.\n",
        markdown_table(
            ["what", "wall time", "peak RSS", "target", "met"],
            [
                ["lolctl --help (cold start)", seconds(helps["wall"]), f"{helps['rss_mb']:.0f} MB", "< 0.5 s",
                 "yes" if helps["wall"] < 0.5 else "MISSED"],
                ["lolctl score ADAPTER --format json (one adapter)", seconds(score["wall"]),
                 f"{score['rss_mb']:.0f} MB", "", ""],
                ["lolctl scan of 1 adapter (start-up)", seconds(scan1["wall"]), f"{scan1['rss_mb']:.0f} MB", "", ""],
                [f"lolctl scan of {args.adapters} adapters", seconds(scan_n["wall"]), f"{scan_n['rss_mb']:.0f} MB",
                 "", ""],
                ["adapters per second after start-up", f"{per_s:.0f}/s", "", "≥ 200/s",
                 "yes" if per_s >= 200 else "MISSED"],
                ["bare safetensors read, per adapter (same files)", f"{bare * 1e3:.2f} ms ({1 / bare:.0f}/s)", "",
                 "", ""],
                ["scan's marginal cost per adapter / bare read", f"{ratio:.1f}x", "",
                 "≤ 4x" if kinds["with_predictions"] else "", ("yes" if ratio <= 4 else "MISSED")
                 if kinds["with_predictions"] else ""],
            ],
        ),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
