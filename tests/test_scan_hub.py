"""`lolctl scan 'someuser/*'` end to end against the loopback fake Hub, a SIGKILL'd scan resumed, offline mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hubserver import FakeHub, FakeRepo, kohya_file, peft_files
from typer.testing import CliRunner

from lolctl.scan import load_records

pytestmark = pytest.mark.slow  # a fake Hub server and scans in subprocesses (quick set: pytest -m 'not slow')


def _app():
    from lolctl.cli import _register, app

    _register()
    return app


def _env(fake: FakeHub, tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_ENDPOINT": fake.endpoint, "HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "127.0.0.1",
                "no_proxy": "127.0.0.1", "HF_HUB_DISABLE_TELEMETRY": "1"})
    env.update(extra)
    return env


def _user_repos() -> list[FakeRepo]:
    broken = peft_files(3)
    broken["adapter_model.safetensors"] = broken["adapter_model.safetensors"][:40]
    return [
        FakeRepo("someuser/good", {"main": peft_files(0), "v2": peft_files(1, r=4)}),
        FakeRepo("someuser/kohya", {"main": {"style.safetensors": kohya_file(2)}},
                 tags=["lora"]),
        FakeRepo("someuser/broken", {"main": broken}),
        FakeRepo("someuser/gated", {"main": peft_files(4)}, gated=True),
        FakeRepo("someuser/ia3", {"main": peft_files(5, peft_type="IA3")}),
        FakeRepo("someuser/private", {"main": peft_files(6)}, private=True),  # not listed to anonymous users
        FakeRepo("otheruser/x", {"main": peft_files(7)}),
    ]


def test_hub_user_scan_subprocess(tmp_path):
    out = tmp_path / "hub.jsonl"
    with FakeHub(_user_repos()) as fake:
        proc = subprocess.run(
            [sys.executable, "-m", "lolctl", "scan", "someuser/*", "someuser/good@v2", "someuser/private",
             "-o", str(out), "-f", "jsonl", "--jobs", "3"],
            capture_output=True, text=True, env=_env(fake, tmp_path), timeout=120,
        )
    assert proc.returncode == 2, proc.stderr  # some items could not be read
    records = {r["item"]: r for r in load_records(out)}
    assert sorted(json.loads(x)["item"] for x in proc.stdout.splitlines()) == sorted(records)
    assert set(records) == {"hf://someuser/good", "hf://someuser/kohya", "hf://someuser/broken",
                            "hf://someuser/gated", "hf://someuser/ia3", "hf://someuser/good@v2",
                            "hf://someuser/private"}
    good, pinned = records["hf://someuser/good"], records["hf://someuser/good@v2"]
    assert good["status"] == "ok" and good["summary"]["ranks"] == [2] and good["hub"]["files"] == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert pinned["status"] == "ok" and pinned["summary"]["ranks"] == [4] and pinned["hub"]["revision"] == "v2"
    assert records["hf://someuser/kohya"]["status"] == "ok", records["hf://someuser/kohya"]
    codes = {k: r["error"]["code"] for k, r in records.items() if r["status"] == "error"}
    assert codes == {"hf://someuser/broken": "L120", "hf://someuser/gated": "L161", "hf://someuser/ia3": "L102",
                     "hf://someuser/private": "L161"}
    assert "scan summary" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "hf" / "hub" / "models--someuser--good").is_dir()  # the normal HF cache under HF_HOME
    # the same user offline, in a fresh process (huggingface_hub reads HF_HUB_OFFLINE at import): the cache answers
    offline = subprocess.run([sys.executable, "-m", "lolctl", "scan", "someuser/*", "-f", "json"],
                             capture_output=True, text=True, timeout=120,
                             env=_env(fake, tmp_path, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"))
    assert offline.returncode == 2, offline.stderr  # the cached broken and IA3 repos are still unreadable
    status = {r["item"]: r["status"] for r in json.loads(offline.stdout)["records"]}
    assert status == {"hf://someuser/good": "ok", "hf://someuser/kohya": "ok", "hf://someuser/broken": "error",
                      "hf://someuser/ia3": "error"}  # gated and private were never downloaded: not in the cache


def test_hub_scan_in_process_then_offline_from_cache(tmp_path, monkeypatch):
    with FakeHub(_user_repos()) as fake:
        for key, value in _env(fake, tmp_path).items():
            monkeypatch.setenv(key, value)
        res = CliRunner().invoke(_app(), ["scan", "someuser/g*", "-f", "json", "--fail-on", "never"])
        assert res.exit_code == 2, res.output  # the gated repo
        doc = json.loads(res.stdout)
        assert sorted(r["item"] for r in doc["records"]) == ["hf://someuser/gated", "hf://someuser/good"]
        served = len(fake.log)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        res = CliRunner().invoke(_app(), ["scan", "someuser/*", "-f", "json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert [r["item"] for r in doc["records"]] == ["hf://someuser/good"]  # only what the cache holds
        assert doc["records"][0]["hub"]["cached"] is True
        res = CliRunner().invoke(_app(), ["scan", "someuser/ia3", "-f", "json"])
        assert res.exit_code == 2 and json.loads(res.stdout)["records"][0]["error"]["code"] == "L163"
        assert len(fake.log) == served  # offline: no request at all


def _wait_for_lines(path, count: int, proc: subprocess.Popen, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    pytest.fail(f"scan did not write {count} records in time (exit {proc.poll()})")


def test_sigkill_mid_scan_then_resume_gives_exactly_one_record_per_adapter(tmp_path):
    repos = [FakeRepo(f"someuser/a{i:02d}", {"main": peft_files(i)}, delay=0.05) for i in range(12)]
    out = tmp_path / "scan.jsonl"
    args = [sys.executable, "-m", "lolctl", "scan", "someuser/*", "-o", str(out), "-f", "jsonl", "--jobs", "2"]
    with FakeHub(repos) as fake:
        env = _env(fake, tmp_path)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            _wait_for_lines(out, 3, proc)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        before = load_records(out, repair=False)
        assert 3 <= len(before) < 12
        with open(out, "ab") as fh:  # and as if the kill had landed in the middle of a write
            fh.write(b'{"schema": "lolctl.score/v1", "item": "hf://someuser/a')
        mark = len(fake.log)
        done = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        refetched = {p for _, p in fake.log[mark:] if p.startswith("/api/models/someuser/")}
    records = load_records(out)
    items = [r["item"] for r in records]
    assert sorted(items) == [f"hf://someuser/a{i:02d}" for i in range(12)]  # no gaps, no duplicates
    assert all(r["status"] == "ok" for r in records)
    assert not refetched & {"/api/models/" + r["item"][len("hf://"):] for r in before}  # recorded: not redone
    assert len(done.stdout.splitlines()) == 12 - len(before)  # stdout: this run's records only
