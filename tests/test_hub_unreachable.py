"""Issue #13: an unreachable Hub fails fast and quietly (one line naming the pattern typed, a remedy the command
has), a populated HF cache answers instead (with a note on stderr), MLX adapters are downloaded, and
RepositoryNotFoundError is one code everywhere. Loopback fake Hub and local caches only — never the internet."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from hubserver import FakeHub, FakeRepo, peft_files
from safetensors.torch import save

from lolctl.errors import LolctlError
from lolctl.hub import Hub, HubRef, select_files

pytestmark = pytest.mark.slow  # a fake Hub and CLI subprocesses (quick set: pytest -m 'not slow')


def _dead_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _mlx_files() -> dict[str, bytes]:
    tensors = {f"model.layers.{i}.self_attn.q_proj.lora_{x}": torch.randn(*(8, 2) if x == "a" else (2, 8))
               for i in range(2) for x in ("a", "b")}
    config = b'{"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 2, "scale": 10.0}}'
    return {"adapter_config.json": config, "adapters.safetensors": save(tensors)}


@pytest.fixture
def fake_hub():
    repos = [FakeRepo("someuser/sd-good", {"main": peft_files(0)}),
             FakeRepo("someuser/sd-two", {"main": peft_files(1)}),
             FakeRepo("someuser/other", {"main": peft_files(2)}),
             FakeRepo("someuser/mlx", {"main": _mlx_files()}, tags=["lora"])]
    with FakeHub(repos) as hub:
        yield hub


def _cli(args, **env):
    full = {**os.environ, **env}
    full.pop("HF_HUB_OFFLINE", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lolctl", *args], capture_output=True, text=True, env=full,
                          timeout=120)
    return proc, time.monotonic() - start


@pytest.mark.parametrize("command", ["score", "scan", "inspect"])
def test_unreachable_hub_fails_fast_in_one_line_naming_the_pattern(tmp_path, command):
    proc, seconds = _cli([command, "someuser/sd-*"], HF_ENDPOINT=_dead_endpoint(), HF_HOME=str(tmp_path / "hf"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no raw retry lines from huggingface_hub
    assert lines[0].startswith("error[L164 hub-unreachable] someuser/sd-*:"), lines[0]
    assert "--resume" not in lines[0]
    assert seconds < 15, seconds  # huggingface_hub's own retries took ~25 s


def test_a_populated_cache_answers_when_the_hub_is_unreachable(fake_hub, tmp_path):
    cache = tmp_path / "hf" / "hub"
    online = Hub(endpoint=fake_hub.endpoint, cache_dir=cache, offline=False)
    for repo in ("someuser/sd-good", "someuser/other"):
        online.fetch(HubRef(repo))
    dead = _dead_endpoint()
    hub = Hub(endpoint=dead, cache_dir=cache, offline=False)
    assert [r.repo_id for r in hub.expand("someuser", "sd-*")] == ["someuser/sd-good"]
    assert hub.from_cache and len(hub.notes) == 1 and "local cache" in hub.notes[0]
    paths, facts = hub.fetch(HubRef("someuser/other"))
    assert facts["cached"] and (paths[0] / "adapter_model.safetensors").is_file()
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef("someuser/sd-two"))
    assert err.value.code == "L164"
    for command in ("score", "inspect", "scan"):
        proc, _ = _cli([command, "someuser/sd-*", "-f", "json"], HF_ENDPOINT=dead, HF_HOME=str(tmp_path / "hf"))
        assert proc.returncode in (0, 1), proc.stderr
        assert "someuser/sd-good" in proc.stdout and "someuser/sd-two" not in proc.stdout
        notes = [line for line in proc.stderr.splitlines() if "could not be reached" in line]
        assert len(notes) == 1 and "local cache" in notes[0], proc.stderr


def test_inspect_takes_hub_sources_like_score(fake_hub, tmp_path):
    proc, _ = _cli(["inspect", "someuser/sd-*", "-f", "jsonl"], HF_ENDPOINT=fake_hub.endpoint,
                   HF_HOME=str(tmp_path / "hf"))
    assert proc.returncode == 0, proc.stderr
    import json

    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["source"] for r in records] == ["someuser/sd-good", "someuser/sd-two"]
    assert all(r["status"] == "ok" and r["summary"]["modules"] == 4 for r in records)


def test_mlx_adapters_are_matched_by_the_download_patterns(fake_hub, tmp_path):
    assert select_files(["adapter_config.json", "adapters.safetensors", "README.md"]) == [
        "adapter_config.json", "adapters.safetensors"]
    hub = Hub(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "c", offline=False)
    paths, facts = hub.fetch(HubRef("someuser/mlx"))
    assert facts["files"] == ["adapter_config.json", "adapters.safetensors"]
    from lolctl.read import read_adapter

    assert read_adapter(paths[0]).meta.format == "mlx"


def test_repository_not_found_is_one_code_for_adapters_and_checkpoints(fake_hub, tmp_path, monkeypatch):
    hub = Hub(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "c", offline=False)
    with pytest.raises(LolctlError) as adapter_err:
        hub.fetch(HubRef("someuser/no-such-repo"))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c2"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "c2"))
    from lolctl.nn.checkpoint import resolve

    with pytest.raises(LolctlError) as ckpt_err:
        resolve("someuser/no-such-checkpoint")
    assert adapter_err.value.code == ckpt_err.value.code == "L160", (adapter_err.value, ckpt_err.value)


def test_scan_glob_of_adapter_configs_reads_the_folders(tmp_path):
    from hubserver import write_files

    for i in range(3):
        write_files(tmp_path / "runs" / f"r{i}" / "adapter", peft_files(i))
    proc, _ = _cli(["scan", str(tmp_path / "runs" / "**" / "adapter_config.json"), "-f", "jsonl", "--health-only"])
    assert proc.returncode == 0, proc.stderr
    import json

    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    assert all(r["source"].endswith("/adapter") for r in records)
