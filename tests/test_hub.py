"""lolctl.hub against a loopback fake Hub (tests/hubserver.py): listing, revisions, errors, retries, triage, cache."""

from __future__ import annotations

import json

import pytest
from hubserver import FakeHub, FakeRepo, peft_files

from lolctl.errors import LolctlError
from lolctl.hub import Hub, HubRef, check_relative_name, parse_hub_source, select_files


def _full_model_files() -> dict[str, bytes]:
    import torch
    from safetensors.torch import save

    weights = save({"encoder.layer.0.attention.self.query.weight": torch.zeros(64, 64)})
    return {"config.json": b"{}", "model.safetensors": weights}


@pytest.fixture
def fake_hub():
    repos = [
        FakeRepo("someuser/good", {"main": peft_files(0), "v1": peft_files(1, r=3)}),
        FakeRepo("someuser/good-two", {"main": peft_files(2)}),
        FakeRepo("someuser/untagged", {"main": peft_files(3)}, tags=["transformers"]),
        FakeRepo("someuser/kohya-style", {"main": {"style.safetensors": peft_files(4)["adapter_model.safetensors"]}},
                 tags=["lora"]),
        FakeRepo("someuser/private", {"main": peft_files(5)}, private=True),
        FakeRepo("someuser/gated", {"main": peft_files(6)}, gated=True),
        FakeRepo("someuser/limited", {"main": peft_files(7)}, fail_429=2),
        FakeRepo("someuser/slow", {"main": peft_files(8)}, delay=0.3),
        FakeRepo("someuser/not-lora", {"main": _full_model_files()}),
        FakeRepo("someuser/evil", {"main": {"../adapter_config.json": b"{}", "../adapter_model.safetensors": b""}}),
        FakeRepo("other/thing", {"main": peft_files(9)}),
    ]
    with FakeHub(repos) as hub:
        yield hub


@pytest.fixture
def hub(fake_hub, tmp_path):
    return Hub(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "hf-cache", offline=False, retries=3, timeout=5)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("someuser/*", ("someuser", "*", None)),
        ("someuser/sd-*", ("someuser", "sd-*", None)),
        ("someuser/repo@v1.0", ("someuser", "repo", "v1.0")),
        ("hf://org/repo@refs/pr/1", ("org", "repo", "refs/pr/1")),
        ("just-a-name", None),
        ("a/b/c", None),
    ],
)
def test_parse_hub_source(text, expected):
    assert parse_hub_source(text) == expected


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "a\\b", "C:/x", "a//b"])
def test_check_relative_name_refuses_escapes(name):
    with pytest.raises(LolctlError) as err:
        check_relative_name(name, "u/r")
    assert err.value.code == "L151"


def test_select_files_prefers_peft_folders_and_skips_full_models():
    names = ["README.md", "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin",
             "sub/adapter_config.json", "sub/adapter_model.safetensors", "model.safetensors", "lonely/x.safetensors"]
    assert select_files(names) == ["adapter_config.json", "adapter_model.safetensors", "sub/adapter_config.json",
                                   "sub/adapter_model.safetensors"]
    assert "adapter_model.bin" in select_files(names, trust_pickle=True)
    assert select_files(["model.safetensors", "lora.safetensors", "x/y.safetensors"]) == ["lora.safetensors"]


def test_expand_lists_peft_and_lora_tagged_repos(hub, fake_hub):
    ids = [r.repo_id for r in hub.expand("someuser", "*")]
    assert "someuser/good" in ids and "someuser/kohya-style" in ids  # peft-tagged and lora-tagged
    assert "someuser/untagged" not in ids and "someuser/private" not in ids and "other/thing" not in ids
    assert [r.repo_id for r in hub.expand("someuser", "good*")] == ["someuser/good", "someuser/good-two"]
    listing = [path for method, path in fake_hub.log if path.startswith("/api/models?")]
    assert any("filter=peft" in p for p in listing) and any("filter=lora" in p for p in listing)


def test_fetch_downloads_only_adapter_files_at_a_pinned_revision(hub, fake_hub, tmp_path):
    paths, facts = hub.fetch(HubRef("someuser/good", "v1"))
    assert len(paths) == 1 and (paths[0] / "adapter_model.safetensors").is_file()
    cfg = json.loads((paths[0] / "adapter_config.json").read_text())
    assert cfg["r"] == 3  # the v1 revision, not main
    assert facts["revision"] == "v1" and facts["sha"] == paths[0].name
    assert str(paths[0]).startswith(str(tmp_path / "hf-cache"))
    fetched = {p.rsplit("/", 1)[-1] for m, p in fake_hub.log if "/resolve/" in p}
    assert fetched == {"adapter_config.json", "adapter_model.safetensors"}


def test_fetch_single_file_lora(hub):
    paths, facts = hub.fetch(HubRef("someuser/kohya-style"))
    assert [p.name for p in paths] == [facts["sha"]] and facts["files"] == ["style.safetensors"]
    assert [p.name for p in paths[0].iterdir()] == ["style.safetensors"]


@pytest.mark.parametrize(
    "repo, code",
    [
        ("someuser/private", "L161"),  # 401: private (or gated, or missing) to an anonymous client
        ("someuser/gated", "L161"),  # info works, file resolve answers 401 GatedRepo
        ("someuser/missing", "L160"),  # 404 RepoNotFound
        ("someuser/evil", "L151"),  # file names escaping the folder: nothing downloaded
        ("someuser/not-lora", "L101"),  # no adapter files at all
    ],
)
def test_fetch_errors_map_to_stable_codes(hub, fake_hub, repo, code):
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef(repo))
    assert err.value.code == code, err.value.one_line()
    assert repo in err.value.where
    if code == "L151":
        assert not any("/resolve/" in p for m, p in fake_hub.log)


def test_invalid_repo_id_is_an_input_error(hub):
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef("someuser/bad..name"))
    assert err.value.code == "L100"


def test_missing_revision_is_not_found(hub):
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef("someuser/good", "no-such-tag"))
    assert err.value.code == "L160" and "revision" in err.value.reason


def test_429_is_retried_then_succeeds(hub, fake_hub):
    paths, _ = hub.fetch(HubRef("someuser/limited"))
    assert paths and (paths[0] / "adapter_config.json").exists()
    infos = [p for m, p in fake_hub.log if p == "/api/models/someuser/limited"]
    assert len(infos) == 3  # two 429 answers, then 200


def test_429_forever_gives_up_with_l162(fake_hub, tmp_path):
    fake_hub.repos["someuser/limited"].fail_429 = 100
    hub = Hub(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "c", offline=False, retries=2)
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef("someuser/limited"))
    assert err.value.code == "L162"
    assert sum(p == "/api/models/someuser/limited" for m, p in fake_hub.log) == 3  # bounded: 1 + 2 retries


@pytest.mark.slow  # > 1 s (several CLI runs / a fixture that trains); CI runs it
def test_slow_response_within_timeout_succeeds_and_beyond_it_is_unreachable(fake_hub, tmp_path):
    patient = Hub(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "a", offline=False, timeout=5)
    paths, _ = patient.fetch(HubRef("someuser/slow"))
    assert paths
    hasty = Hub(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "b", offline=False, timeout=0.1, retries=0)
    with pytest.raises(LolctlError) as err:
        hasty.fetch(HubRef("someuser/slow"))
    assert err.value.code == "L164"


def test_unreachable_endpoint(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = Hub(endpoint=f"http://127.0.0.1:{port}", cache_dir=tmp_path / "c", offline=False, retries=0, timeout=2)
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef("someuser/good"))
    assert err.value.code == "L164"


def test_triage_reads_headers_only(hub, fake_hub):
    fake_hub.repos["someuser/not-lora"].files["main"]["adapter_config.json"] = b'{"peft_type": "LORA"}'
    fake_hub.repos["someuser/not-lora"].files["main"]["adapter_model.safetensors"] = (
        fake_hub.repos["someuser/not-lora"].files["main"]["model.safetensors"])
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef("someuser/not-lora"), triage=True)
    assert err.value.code == "L103"
    resolves = [(m, p) for m, p in fake_hub.log if "/resolve/" in p]
    assert resolves and all(m == "GET" and p.endswith(".safetensors") for m, p in resolves)  # ranged reads only
    _, facts = hub.fetch(HubRef("someuser/good"), triage=True)
    assert facts["triage"]["lora_tensors"] == facts["triage"]["tensors"] == 8
    with pytest.raises(LolctlError) as err:
        hub.fetch(HubRef("someuser/good-two"), triage=True, max_bytes=10)
    assert err.value.code == "L125"


def test_offline_answers_from_the_cache(hub, fake_hub, tmp_path):
    hub.fetch(HubRef("someuser/good"))
    hub.fetch(HubRef("someuser/good", "v1"))
    served = len(fake_hub.log)
    offline = Hub(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "hf-cache", offline=True)
    assert [r.repo_id for r in offline.expand("someuser", "*")] == ["someuser/good"]
    paths, facts = offline.fetch(HubRef("someuser/good"))
    assert (paths[0] / "adapter_model.safetensors").is_file() and facts["cached"]
    paths_v1, _ = offline.fetch(HubRef("someuser/good", "v1"))
    assert json.loads((paths_v1[0] / "adapter_config.json").read_text())["r"] == 3
    with pytest.raises(LolctlError) as err:
        offline.fetch(HubRef("someuser/good-two"))
    assert err.value.code == "L163"
    assert len(fake_hub.log) == served  # offline: not a single request
