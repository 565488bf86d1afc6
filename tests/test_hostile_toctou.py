"""The file changes between the header check and the data read (another process rewriting or truncating it): the
reader reports L120, never a short tensor or another exception."""

from __future__ import annotations

from hostile import writers as w

from lolctl.errors import LolctlError
from lolctl.read.store import open_store


def test_a_file_truncated_after_its_header_was_validated(tmp_path):
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(w.st_file(w.lora_tensors()))
    store = open_store(path, trust_pickle=False, max_bytes=2**30)
    last = store.keys()[-1]
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 8)
    try:
        store.get(last)
    except LolctlError as err:
        assert err.code == "L120" and str(path) in err.where
    else:
        raise AssertionError("a short read was returned as a tensor")


def test_a_file_rewritten_in_place_is_read_without_crashing(tmp_path):
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(w.st_file(w.lora_tensors(seed=1)))
    store = open_store(path, trust_pickle=False, max_bytes=2**30)
    path.write_bytes(w.st_file(w.lora_tensors(seed=2)))  # same layout, other values
    for key in store.keys():
        assert tuple(store.get(key).shape) == store.shapes[key]
