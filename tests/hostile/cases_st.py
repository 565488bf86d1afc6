"""Hostile cases: safetensors containers that lie (truncated, bad headers, bad offsets, bad dtypes, huge shapes)
and the positive controls."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from hostile import writers as w
from hostile.registry import Ctx, case, error, first_key, good_tensors, peft, st_with

# --- positive controls ------------------------------------------------------------------------------------------


@case("ok_peft", "ok", None, 0, "a correct PEFT adapter (control)")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()))


@case("ok_kohya", "ok", None, 0, "a correct kohya single-file LoRA (control)")
def _(c: Ctx, d: Path):
    d.mkdir(parents=True)
    (d / "lora.safetensors").write_bytes(w.st_file(good_tensors(style="kohya"), {"ss_network_dim": "4"}))
    return "lora.safetensors"


@case("fs_symlink_inside", "ok", None, 0, "weights are a symlink to a file inside the adapter folder (control)")
def _(c: Ctx, d: Path):
    peft(d, None)
    (d / "blobs").mkdir()
    (d / "blobs" / "weights.safetensors").write_bytes(w.st_file(good_tensors()))
    (d / "adapter_model.safetensors").symlink_to(Path("blobs") / "weights.safetensors")


# --- safetensors container ---------------------------------------------------------------------------------------


@error("st_zero_length", "L126", "adapter_model.safetensors is 0 bytes")
def _(c: Ctx, d: Path):
    peft(d, b"")


@error("st_two_bytes", "L120", "a 2-byte file (CRLF), like the Hirvita6 real adapter")
def _(c: Ctx, d: Path):
    peft(d, b"\r\n")


@error("st_prefix_only", "L120", "an 8-byte length prefix and nothing else")
def _(c: Ctx, d: Path):
    peft(d, struct.pack("<Q", 64))


@error("st_truncated_header", "L120", "the file ends in the middle of the header")
def _(c: Ctx, d: Path):
    full = w.st_file(good_tensors())
    peft(d, full[:40])


@error("st_truncated_data", "L120", "the file ends 10 bytes before its last tensor does")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors())[:-10])


@error("st_header_len_beyond_file", "L120", "the length prefix says 1,000,000 bytes; the file has 300")
def _(c: Ctx, d: Path):
    peft(d, struct.pack("<Q", 10**6) + b"{" + b" " * 291)


@error("st_header_len_huge", "L121", "the length prefix is 2**64-1")
def _(c: Ctx, d: Path):
    peft(d, b"\xff" * 8 + b"{}")


@error("st_header_len_zero", "L122", "a zero-length header (empty string is not JSON)")
def _(c: Ctx, d: Path):
    peft(d, w.st_pack(b"", b""))


@error("st_header_not_json", "L122", "the header is not JSON")
def _(c: Ctx, d: Path):
    peft(d, w.st_pack(b"{this is not json}      ", b""))


@error("st_header_not_utf8", "L122", "the header is not UTF-8")
def _(c: Ctx, d: Path):
    peft(d, w.st_pack(b'{"\xff\xfe": 1}', b""))


@error("st_header_array", "L122", "the header is a JSON array")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: list(h.values())))


@error("st_header_null", "L122", "the header is JSON null")
def _(c: Ctx, d: Path):
    peft(d, w.st_pack(b"null", b""))


@error("st_entry_not_object", "L122", "a tensor entry is a string")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: {**h, first_key(h): "F32"}))


@error("st_entry_missing_offsets", "L122", "a tensor entry has no data_offsets")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].pop("data_offsets") and None))


@error("st_shape_not_list", "L122", "a shape is the string '4x16'")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(shape="4x16")))


@error("st_shape_negative", "L122", "a shape has a negative dimension")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(shape=[-4, -16])))


@error("st_shape_bool", "L122", "a shape holds booleans")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(shape=[True, 64])))


@error("st_shape_float", "L122", "a shape holds floats")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(shape=[4.0, 16.0])))


@error("st_offsets_floats", "L122", "data_offsets are floats")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(data_offsets=[0.0, 256.0])))


@error("st_offsets_three", "L122", "data_offsets has three numbers")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(data_offsets=[0, 128, 256])))


@error("st_dtype_not_string", "L122", "dtype is a number")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(dtype=4)))


@error("st_duplicate_key", "L122", "the header names one tensor twice")
def _(c: Ctx, d: Path):
    header, data = w.st_header(good_tensors())
    key = first_key(header)
    text = json.dumps(header)
    dup = text[:-1] + f", {json.dumps(key)}: {json.dumps(header[key])}" + "}"
    peft(d, w.st_pack(dup + " " * (-len(dup) % 8), data))


@error("st_metadata_not_strings", "L122", "__metadata__ maps a key to a nested object")
def _(c: Ctx, d: Path):
    peft(d, w.st_pack(*w.st_header(good_tensors(), {"format": "pt", "nested": {"a": 1}})))


@error("st_header_deep_nesting", "L122", "the header nests 100,000 arrays (recursion bomb)")
def _(c: Ctx, d: Path):
    peft(d, w.st_pack(b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""))


@error("st_header_bigint", "L122", "a shape dimension has 5,000 digits")
def _(c: Ctx, d: Path):
    header, data = w.st_header(good_tensors())
    text = json.dumps(header).replace("[4, 16]", "[" + "9" * 5000 + ", 16]", 1)
    peft(d, w.st_pack(text, data))


@error("st_overlapping_offsets", "L123", "two tensors share bytes")
def _(c: Ctx, d: Path):
    header, data = w.st_header(good_tensors())
    keys = [k for k in header]
    b0, e0 = header[keys[1]]["data_offsets"]
    header[keys[1]]["data_offsets"] = [b0 - 64, e0 - 64]  # now overlaps the previous tensor by 64 bytes
    peft(d, w.st_pack(header, data))


@error("st_offsets_out_of_range", "L123", "one tensor's bytes lie far beyond the end of the file")
def _(c: Ctx, d: Path):
    header, data = w.st_header(good_tensors())
    key = first_key(header)
    size = header[key]["data_offsets"][1] - header[key]["data_offsets"][0]
    header[key]["data_offsets"] = [10**9, 10**9 + size]
    peft(d, w.st_pack(header, data))


@error("st_offsets_reversed", "L123", "begin > end")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(data_offsets=h[first_key(h)]["data_offsets"][::-1])))


@error("st_offsets_gap", "L123", "64 undeclared bytes sit between two tensors")
def _(c: Ctx, d: Path):
    header, data = w.st_header(good_tensors())
    keys = list(header)
    for k in keys[1:]:
        header[k]["data_offsets"] = [o + 64 for o in header[k]["data_offsets"]]
    end = header[keys[0]]["data_offsets"][1]
    peft(d, w.st_pack(header, data[:end] + b"\0" * 64 + data[end:]))


@error("st_trailing_garbage", "L123", "1 KiB of bytes after the last tensor")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()) + os.urandom(1024))


@error("st_unknown_dtype", "L124", "a tensor of dtype 'Q4_K'")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(dtype="Q4_K")))


@error("st_shape_size_mismatch", "L127", "shape [4, 8] of F32 but 256 bytes of data")
def _(c: Ctx, d: Path):
    peft(d, st_with(lambda h: h[first_key(h)].update(shape=[4, 8])))


@error("st_declares_huge", "L120", "a header declaring a 16 GiB tensor in a 2 KiB file (refused before allocation)")
def _(c: Ctx, d: Path):
    tensors = good_tensors()
    key = next(iter(tensors))
    header, data = w.st_header(tensors)
    shift = 65536 * 65536 * 4
    for k in header:
        begin, end = header[k]["data_offsets"]
        header[k]["data_offsets"] = [begin + (shift if k != key else 0), end + shift]
    header[key]["shape"] = [65536, 65536]
    peft(d, w.st_pack(header, data))


@error("st_no_tensors", "L101", "a header {} and no tensors", exit=3)
def _(c: Ctx, d: Path):
    peft(d, w.st_pack({}, b""))


@error("st_zero_dim_layer", "L143", "lora_A has shape [4, 0]: the layer has no inputs but rank 4")
def _(c: Ctx, d: Path):
    t = good_tensors(modules={"model.layers.0.self_attn.q_proj": (16, 16)})
    key = next(iter(t))
    t[key] = ("F32", [4, 0], b"")
    peft(d, w.st_file(t))


@error("st_over_budget", "L125", "a sparse file really holding 9 GiB of tensors, above the 8 GiB default budget")
def _(c: Ctx, d: Path):
    w.sparse_adapter(d, 9 * 2**30)
