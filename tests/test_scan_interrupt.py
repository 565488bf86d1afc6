"""Ctrl-C during `lolctl scan`: one line "interrupted: N of M recorded, rerun with --resume" on stderr, exit 130,
never an abort (exit 134, "terminate called without an active exception"), and the output resumes cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

pytestmark = pytest.mark.slow  # interrupts scan subprocesses (quick set: pytest -m 'not slow')


def _zoo(folder, count: int, distinct: int = 24) -> None:
    """``count`` adapters; past the first ``distinct`` each folder hard-links an earlier one's files (cheap to make,
    as slow to scan)."""
    gen = torch.Generator().manual_seed(0)
    for i in range(count):
        d = folder / f"a{i:03d}"
        d.mkdir(parents=True)
        if i >= distinct:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                os.link(folder / f"a{i % distinct:03d}" / name, d / name)
            continue
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 8,
                                                           "target_modules": ["q", "v"]}))
        tensors = {}
        for layer in range(8):
            for m in ("q", "v"):
                key = f"base_model.model.layer.{layer}.{m}"
                tensors[f"{key}.lora_A.weight"] = torch.randn(8, 256, generator=gen)
                tensors[f"{key}.lora_B.weight"] = torch.randn(256, 8, generator=gen)
        save_file(tensors, str(d / "adapter_model.safetensors"))


def _lines(path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_ctrl_c_during_scan_reports_and_exits_130_and_resumes(tmp_path):
    total = 1000  # hard links: cheap to make; a scan of them outlasts the wait for its first records
    _zoo(tmp_path / "zoo", total)
    out = tmp_path / "scan.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    interrupted = 0
    for _attempt in range(8):  # a scan that finishes before the signal lands proves nothing: start that one again
        if interrupted == 3:
            break
        args = [sys.executable, "-m", "lolctl", "scan", str(tmp_path / "zoo"), "-o", str(out), "-j", "4",
                "--read-slots", "2", "-f", "jsonl"] + (["--resume"] if out.exists() else [])
        before = _lines(out)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while _lines(out) < before + 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "terminate called" not in err and "Traceback" not in err, err
        if proc.returncode == 0 and _lines(out) == total:
            out.unlink()
            continue
        assert proc.returncode == 130, (proc.returncode, err)
        interrupted += 1
        last = [line for line in err.splitlines() if line.strip()][-1]
        recorded = _lines(out)
        assert last == f"interrupted: {recorded} of {total} recorded in {out}, rerun with --resume to continue", err
    assert interrupted >= 2, "the scan always finished before Ctrl-C reached it"
    args = [sys.executable, "-m", "lolctl", "scan", str(tmp_path / "zoo"), "-o", str(out), "-j", "4", "-f", "jsonl"]
    proc = subprocess.run(args + (["--resume"] if out.exists() else []), capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    items = [json.loads(line)["item"] for line in out.read_text().splitlines()]
    assert len(items) == len(set(items)) == total
