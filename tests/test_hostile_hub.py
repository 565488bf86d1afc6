"""Hub file names chosen by a hostile repo: the name check used by lolctl.hub refuses every escape (L151) before any
byte is downloaded, and nothing is written outside the cache."""

from __future__ import annotations

import pytest
from hostile import harness as h
from hubserver import FakeHub, FakeRepo, peft_files

from lolctl.errors import LolctlError
from lolctl.hub import Hub, HubRef, check_relative_name

ESCAPES = [
    "../adapter_config.json",
    "../../../../tmp/adapter_model.safetensors",
    "a/../../adapter_config.json",
    "sub/..",
    "..",
    "/etc/passwd",
    "//server/share/adapter_config.json",
    "..\\..\\adapter_config.json",
    "sub\\..\\..\\x.safetensors",
    "C:/Windows/x.safetensors",
    "C:adapter_config.json",
    "a//adapter_config.json",
    "adapter_config.json/",
    "",
    "sub/\0/adapter_config.json",
    "adapter\0.safetensors",
    "sub\n/adapter_config.json",
    "red\x1b[31m/adapter_config.json",
]
FINE = ["adapter_config.json", "sub/adapter_model.safetensors", "..hidden/adapter_config.json", "a..b.safetensors",
        "deep/er/x.safetensors", "unicodé/adapter_config.json"]


@pytest.mark.parametrize("name", ESCAPES)
def test_escaping_names_are_refused(name):
    with pytest.raises(LolctlError) as err:
        check_relative_name(name, "evil/repo")
    assert err.value.code == "L151"
    assert "evil/repo" in err.value.where and "\n" not in err.value.one_line()


@pytest.mark.parametrize("name", FINE)
def test_ordinary_names_pass(name):
    check_relative_name(name, "evil/repo")


@pytest.mark.parametrize("names", [
    ["../adapter_config.json", "../adapter_model.safetensors"],
    ["sub/../../adapter_config.json", "sub/../../adapter_model.safetensors"],
    ["adapter_config.json", "adapter_model.safetensors", "../../adapter_model.safetensors"],
    ["..\\adapter_config.json", "..\\adapter_model.safetensors"],
    ["sub\0/adapter_config.json", "sub\0/adapter_model.safetensors"],
    ["sub\x1b[31m/adapter_config.json", "sub\x1b[31m/adapter_model.safetensors"],
])
def test_a_repo_listing_escaping_names_downloads_nothing(tmp_path, names):
    good = peft_files(0)
    files = {n: good["adapter_config.json" if n.endswith(".json") else "adapter_model.safetensors"] for n in names}
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched")
    before = h.snapshot(tmp_path)
    with FakeHub([FakeRepo("evil/repo", {"main": files})]) as fake:
        hub = Hub(endpoint=fake.endpoint, cache_dir=tmp_path / "cache", offline=False, retries=0, timeout=5)
        try:
            hub.fetch(HubRef("evil/repo"))
        except LolctlError as err:
            code = err.code
        else:
            code = "fetched"
        requests = [path for _, path in fake.log]
    escaping = [n for n in names if ".." in n or not n.isprintable()]
    if code == "fetched":  # the escaping names were not selected; only the ordinary ones were downloaded
        assert len(escaping) < len(names)
    else:
        assert code in ("L151", "L101"), code  # refused, or (backslash names) simply not adapter files
        assert not any("/resolve/" in p for p in requests), requests  # not one byte was downloaded
    assert not any(".." in p or "%2E%2E" in p.upper() for p in requests), requests
    after = {k: v for k, v in h.snapshot(tmp_path).items() if not k.startswith("cache")}
    assert after == before
