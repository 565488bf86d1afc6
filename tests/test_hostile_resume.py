"""Nothing lost, nothing doubled: a `lolctl scan -o FILE` killed with SIGKILL at random points and resumed several
times ends with exactly one record per adapter (good and broken ones alike)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile import harness as h
from hostile.make_corpus import build_corpus

from lolctl.read import find_adapters

pytestmark = pytest.mark.slow  # kills and resumes scan subprocesses (quick set: pytest -m 'not slow')

BROKEN = ["st_two_bytes", "st_truncated_data", "cfg_not_json", "lora_only_A", "pkl_only", "lora_nan"]


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]


def test_scan_killed_and_resumed_keeps_one_record_per_adapter(tmp_path):
    root = tmp_path / "adapters"
    build_corpus(root, tmp_path / "outside", only=["ok_peft", *BROKEN])
    for i in range(30):  # more good adapters, so the scan takes long enough to be killed mid-way
        (root / f"good_{i:02d}").mkdir()
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            (root / f"good_{i:02d}" / f).write_bytes((root / "ok_peft" / f).read_bytes())
    (root / "expected.json").unlink()
    expected = {str(p) for p in find_adapters(root)}
    assert len(expected) == 31 + len(BROKEN)  # every folder is one adapter

    out = tmp_path / "scan.jsonl"
    argv = [sys.executable, "-m", "lolctl", "scan", str(root), "--health-only", "-f", "jsonl", "-j", "1",
            "-o", str(out)]
    env = h.sealed_env(root, tmp_path / "work")
    rng = random.Random(1234)
    kills = 0
    for _ in range(5):
        seen = len(_records(out))
        if seen >= len(expected) - 1 or kills >= 3:
            break
        proc = subprocess.Popen(argv + (["--resume"] if out.exists() else []), cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = rng.randint(seen + 1, min(seen + 8, len(expected) - 1))  # kill once this many records exist
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and len(_records(out)) < target:
            time.sleep(0.005)
        if proc.poll() is None:
            time.sleep(rng.choice([0, 0, rng.random() * 0.01]))  # land anywhere: mid-read, mid-write, between
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        assert b"Traceback" not in proc.stderr.read()
        recs = _records(out)
        assert len({r["item"] for r in recs}) == len(recs)  # never a duplicate, even mid-way
    assert kills >= 2
    final = subprocess.run(argv + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in final.stderr
    assert final.returncode == 2  # some adapters are broken: error records, exit 2
    recs = _records(out)
    items = [r["item"] for r in recs]
    assert len(items) == len(set(items))
    assert set(items) == expected
    errors = {Path(r["item"]).name: r["error"]["code"] for r in recs if r["status"] == "error"}
    assert errors["st_two_bytes"] == "L120" and errors["pkl_only"] == "L130" and errors["lora_only_A"] == "L141"
    assert out.read_bytes().endswith(b"\n")
