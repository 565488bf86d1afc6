"""Property tests over the reader (short runs; the long run is tests/fuzz/fuzz_reader.py): whatever the bytes,
``read_adapter`` returns an Adapter or raises LolctlError — never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from fuzz import targets as t
from hostile import writers as w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="lolctl-fuzz-") as d:
        yield Path(d)


@SETTINGS
@given(data=st.binary(max_size=256), with_config=st.booleans())
def test_random_bytes(folder, data, with_config):
    config = json.dumps(w.peft_config(rank=2)).encode() if with_config else None
    t.check(t.write_case(folder, data, config, "adapter_model.safetensors"))


@SETTINGS
@given(case=t.mutated_safetensors())
def test_mutated_safetensors(folder, case):
    kind, data = case
    if kind == "peft":
        source = t.write_case(folder, data, json.dumps(w.peft_config(rank=2)).encode(),
                              "adapter_model.safetensors")
    else:
        source = t.write_case(folder, data, None, "lora.safetensors")
    t.check(source)  # the reader property; downstream (health/JSON) failures are counted by the long run


@SETTINGS
@given(config=t.configs())
def test_random_configs(folder, config):
    t.check(t.write_case(folder, t.BASES[0][1], config, "adapter_model.safetensors"))


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=128) | st.binary(min_size=1, max_size=64).map(lambda b: b"\x80\x02" + b))
def test_random_pickles_with_trust(folder, data):
    outcome = t.check(t.write_case(folder, data, b'{"peft_type": "LORA", "r": 2, "lora_alpha": 4}',
                                   "adapter_model.bin"), trust_pickle=True)
    assert outcome != "ok" or data  # an empty file is never an adapter


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=t.mutated_pickles())
def test_mutated_pickles_with_trust(folder, data):
    t.check(t.write_case(folder, data, b'{"peft_type": "LORA", "r": 2, "lora_alpha": 4}', "adapter_model.bin"),
            trust_pickle=True)


def test_the_checker_catches_a_crash(folder, monkeypatch):
    """Test the tester: a reader that raises something else must fail the property."""
    import lolctl.read

    def broken(*args, **kwargs):
        raise IndexError("boom")

    monkeypatch.setattr(lolctl.read, "read_adapter", broken)
    with pytest.raises(IndexError):
        t.check(t.write_case(folder, b"x", None, "lora.safetensors"))
