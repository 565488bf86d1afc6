"""Fuzz targets for the reader, as hypothesis strategies plus one checker.

The property: for any bytes on disk, ``read_adapter`` returns an :class:`Adapter` or raises :class:`LolctlError` with
a known code and a one-line message. Any other exception, any hang, any unbounded allocation is a bug. A read
adapter's health report and JSON output must work too ("downstream"; failures are counted separately).

Inputs: raw random bytes; valid safetensors adapters (PEFT and kohya) mutated by byte flips, truncation, insertion,
a random length prefix, or a random JSON value grafted into the header; random JSON (or bytes) as
adapter_config.json; random and mutated pickles read with ``trust_pickle`` (torch's weights_only unpickler).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hostile import writers as w
from hypothesis import strategies as st

MAX_BYTES = 2**24  # a 16 MiB budget: the fuzzer must never make the reader allocate more

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _bases() -> list[tuple[str, bytes]]:
    peft = w.st_file(w.lora_tensors(rank=2, modules={"model.q_proj": (4, 4), "model.v_proj": (4, 6)}))
    kohya = w.st_file(w.lora_tensors(rank=2, modules={"model.q_proj": (4, 4)}, style="kohya"), {"ss_network_dim": "2"})
    return [("peft", peft), ("kohya", kohya)]


BASES = _bases()


@st.composite
def mutated_pickles(draw) -> bytes:
    """A valid torch.save (zip) state dict with byte flips, a truncation or an insertion."""
    data = bytearray(PICKLE_BASE)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "flip", "truncate", "insert"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _pickle_base() -> bytes:
    return w.torch_save_bytes(w.torch_state_dict(w.lora_tensors(rank=2, modules={"model.q_proj": (4, 4)})))


PICKLE_BASE = _pickle_base()


@st.composite
def mutated_safetensors(draw) -> tuple[str, bytes]:
    kind, data = draw(st.sampled_from(BASES))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "prefix", "graft", "set_int", "data", "data"]))
        start = 8 + int.from_bytes(data[:8], "little") if len(data) >= 8 else len(data)
        if op == "data" and start < len(data):  # a value in the tensor data: random bits, NaN or Inf
            i = draw(st.integers(start, len(data) - 1)) & ~3
            bits = draw(st.sampled_from([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\xff\xff\x7f\x7f"]) | st.binary(
                min_size=4, max_size=4))
            data[i:i + 4] = bits[: len(data) - i]
        elif op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "prefix":
            data[:8] = struct.pack("<Q", draw(st.integers(0, 2**64 - 1) | st.integers(0, 4096)))
        elif op in ("graft", "set_int"):
            data = bytearray(_graft(draw, bytes(data), op))
    return kind, bytes(data)


def _graft(draw, data: bytes, op: str) -> bytes:
    """Replace one value somewhere in the header with a random JSON value (or a random integer)."""
    if len(data) < 8:
        return data
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return data
    if not isinstance(header, dict) or not header:
        return data
    node, key = header, draw(st.sampled_from(sorted(header)))
    while isinstance(node.get(key), dict) and node[key] and draw(st.booleans()):
        node, key = node[key], draw(st.sampled_from(sorted(node[key])))
    if op == "set_int":
        node[key] = draw(st.integers(-(2**40), 2**66))
    else:
        node[key] = draw(JSON)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def configs() -> st.SearchStrategy[bytes]:
    """adapter_config.json contents: random JSON, a valid config with one field replaced, or random bytes."""
    def one_field(pair):
        key, value = pair
        cfg = w.peft_config(rank=2)
        cfg[key] = value
        return json.dumps(cfg).encode()

    fields = st.sampled_from(["r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "use_rslora",
                              "use_dora", "fan_in_fan_out", "peft_type", "base_model_name_or_path", "auto_mapping"])
    return (
        st.tuples(fields, JSON).map(one_field)
        | JSON.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
    )


def write_case(folder: Path, weights: bytes, config: bytes | None, name: str) -> Path:
    """Write the files of one fuzz input into an emptied ``folder``; returns the source to read."""
    for p in folder.iterdir():
        p.unlink()
    (folder / name).write_bytes(weights)
    if config is not None:
        (folder / "adapter_config.json").write_bytes(config)
    return folder if config is not None else folder / name


def check(source: Path, trust_pickle: bool = False) -> str:
    """Read ``source``; return "ok", the error code, or "downstream:<Exception>" when the adapter was read but its
    health report or JSON output raised. An exception from the reader itself propagates (a bug)."""
    from lolctl.errors import CODES, LolctlError
    from lolctl.read import read_adapter

    try:
        adapter = read_adapter(source, trust_pickle=trust_pickle, max_bytes=MAX_BYTES)
    except LolctlError as err:
        assert err.code in CODES and err.code != "L199", err.code
        assert "\n" not in err.one_line()
        return err.code
    return downstream(adapter)


def downstream(adapter) -> str:
    from lolctl.health import health
    from lolctl.report.encode import dumps

    try:
        dumps(health(adapter).to_dict())
    except Exception as exc:  # noqa: BLE001 - counted and reported, see docs/robustness.md
        return f"downstream:{type(exc).__name__}"
    return "ok"
