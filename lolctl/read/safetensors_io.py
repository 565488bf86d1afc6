"""A bounded safetensors reader: the header is validated completely before any tensor memory is allocated.

Layout (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N, N bytes of JSON
``{key: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the data buffer.
Every check names the file and, where there is one, the key:

    L126 empty file · L120 shorter than its prefix/header · L121 impossible header length · L122 header not JSON of
    the right form · L124 unknown dtype · L127 shape × itemsize ≠ byte range · L123 offsets out of range, overlapping,
    leaving gaps · L125 declared bytes above the budget.
"""

from __future__ import annotations

import json
import math
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lolctl.errors import LolctlError
from lolctl.read.codes import clean

if TYPE_CHECKING:
    import torch

MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit

# safetensors dtype -> (torch dtype name, itemsize)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int  # offset into the data buffer
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass
class SafetensorsHeader:
    path: Path
    data_start: int  # absolute file offset of the data buffer
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def _no_duplicate_keys(path: Path):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise LolctlError("L122", f"{path}:{clean(k)}", "the header names this key twice", "re-save the file")
            out[k] = v
        return out

    return hook


def _placeholder_hint(head: bytes) -> str:
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights; fetch it with `git lfs pull`"
    if head.lstrip().startswith((b"<", b"{")):
        return "it looks like text/HTML (an error page or placeholder), not weights; download the file again"
    return "the file is a placeholder or an interrupted download; download it again"


def text_kind(head: bytes) -> str | None:
    """What a weights file that is really text is: "Git LFS pointer", "HTML page", "text" — or None when ``head``
    (the file's first bytes) does not read as text. Weights files (safetensors, pickles, zips) start with binary."""
    if head.startswith(b"version https://git-lfs"):
        return "Git LFS pointer"
    text = None
    for cut in range(4):  # the read may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    if not text or not all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return None
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in start:
        return "HTML page"
    return "text"


_TEXT_REMEDY = {
    "Git LFS pointer": "run `git lfs pull` in the clone (or download the file from the Hub)",
    "HTML page": "an error or login page was saved instead of the file; download it again (log in first for a "
                 "private or gated repo)",
    "text": "it is a placeholder, not weights; download the real file again",
}


def not_weights(path: Path, kind: str) -> LolctlError:
    """L128 for a weights-named file that is text."""
    what = f"{path.stat().st_size}-byte text file" if kind == "text" else kind
    return LolctlError("L128", str(path), f"not a weights file: a {what}", _TEXT_REMEDY[kind])


def sniff_pickle_text(path: Path) -> None:
    """Before a ``.bin`` is called a pickle: L126 when it is empty, L128 when it is text (an LFS pointer, an HTML
    page, a placeholder). Text ending in ``.`` (pickle's STOP opcode) may be a protocol-0 pickle and is left to the
    pickle refusal."""
    if regular_file_size(path) == 0:
        raise LolctlError("L126", str(path), "the file is empty (0 bytes)", "download the file again")
    with path.open("rb") as f:
        head = f.read(512)
    kind = text_kind(head)
    if kind is not None and not (kind == "text" and head.rstrip().endswith(b".")):
        raise not_weights(path, kind)


def regular_file_size(path: Path, code: str = "L101") -> int:
    """The size of ``path``, refusing folders, FIFOs and devices (opening a FIFO would block)."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise LolctlError(code, str(path), "not a regular file", "replace it with the real file")
    return st.st_size


def read_header(path: Path, max_bytes: int) -> SafetensorsHeader:
    """Parse and validate the header of ``path`` without reading tensor data."""
    size = regular_file_size(path)
    if size == 0:
        raise LolctlError("L126", str(path), "the file is empty (0 bytes)", "download the file again")
    with path.open("rb") as f:
        head = f.read(64)
        prefix = head[:8]
        f.seek(len(prefix))
        if len(prefix) < 8:
            raise LolctlError(
                "L120", str(path), f"{size} bytes is shorter than the 8-byte safetensors length prefix",
                _placeholder_hint(head),
            )
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER_BYTES or 8 + n > size:
            f.seek(0)
            kind = text_kind(f.read(512))
            f.seek(len(prefix))
            if kind is not None:  # a header length read from text: an LFS pointer, an HTML page, a placeholder
                raise not_weights(path, kind)
        if n > MAX_HEADER_BYTES:
            raise LolctlError(
                "L121", str(path), f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit",
                _placeholder_hint(head),
            )
        if 8 + n > size:
            raise LolctlError(
                "L120", str(path), f"header says {n} bytes but the file has only {size - 8} after the prefix",
                "the file is truncated; download it again",
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys(path))
    except RecursionError:
        raise LolctlError("L122", str(path),
                          "the header nests too deeply to be a safetensors header", "re-save") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, int digit limit
        reason = f"the header is not valid UTF-8 JSON ({' '.join(str(exc).split())[:200]})"
        raise LolctlError("L122", str(path), reason, _placeholder_hint(raw)) from None
    if not isinstance(header, dict):
        raise LolctlError("L122", str(path), "the header is not a JSON object", "re-save the file with safetensors")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LolctlError("L122", f"{path}:__metadata__", "metadata must map strings to strings", "re-save the file")
    data_len = size - 8 - n
    tensors = {key: _parse_entry(path, key, entry) for key, entry in header.items()}
    _check_layout(path, tensors, data_len)
    _check_sizes(path, tensors)
    total = sum(t.nbytes for t in tensors.values())
    if total > max_bytes:
        raise LolctlError(
            "L125", str(path), f"tensors declare {total} bytes, above the {max_bytes}-byte budget",
            "raise max_bytes (--max-bytes) if you trust this file",
        )
    return SafetensorsHeader(path=path, data_start=8 + n, tensors=tensors, metadata=dict(metadata))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _where(path: Path, key: str) -> str:
    """``path:key`` for messages; clean() is the identity on printable keys, so only others pay for it."""
    return f"{path}:{key}" if key.isprintable() else f"{path}:{clean(key)}"


def _parse_entry(path: Path, key: str, entry: Any) -> TensorInfo:
    where = _where(path, key)
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise LolctlError("L122", str(where), "entry must be an object with dtype, shape and data_offsets", "re-save")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise LolctlError("L122", str(where), "dtype must be a string", "re-save the file")
    if dtype not in DTYPES:
        known = ", ".join(DTYPES)
        raise LolctlError("L124", str(where),
                          f"dtype {dtype!r} is not one lolctl reads ({known})", "convert the tensor")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise LolctlError("L122", str(where), f"shape {shape!r} is not a list of non-negative integers", "re-save")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise LolctlError("L122", str(where), f"data_offsets {offsets!r} is not [begin, end]", "re-save the file")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise LolctlError("L123", str(where),
                          f"data_offsets [{begin}, {end}] are not an ordered range", "re-save the file")
    return TensorInfo(dtype, tuple(shape), begin, end)


def _check_sizes(path: Path, tensors: dict[str, TensorInfo]) -> None:
    for key, t in tensors.items():
        expected = math.prod(t.shape) * DTYPES[t.dtype][1]
        if t.nbytes != expected:
            reason = f"shape {list(t.shape)} of {t.dtype} needs {expected} bytes but the offsets give {t.nbytes}"
            raise LolctlError("L127", f"{path}:{clean(key)}", reason, "the file is corrupt; re-save it")


def _check_layout(path: Path, tensors: dict[str, TensorInfo], data_len: int) -> None:
    """The tensors must tile the data buffer exactly: overlaps and gaps are L123; a tiling that runs past the end of
    the file means the file was cut short (L120); bytes after the last tensor are L123."""
    cursor, prev = 0, None
    for key, t in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.nbytes == 0:
            continue
        where = _where(path, key)
        if t.begin < cursor:
            raise LolctlError("L123", where, f"its bytes overlap those of {prev!r}", "re-save the file")
        if t.begin > cursor:
            raise LolctlError("L123", where, f"a {t.begin - cursor}-byte gap precedes it in the data", "re-save")
        cursor, prev = t.end, key
    if cursor > data_len:
        reason = f"the header's tensors need {cursor} data bytes but the file holds {data_len}"
        raise LolctlError("L120", f"{path}:{clean(str(prev))}", reason, "the file is truncated; download it again")
    if cursor < data_len:
        raise LolctlError(
            "L123", str(path), f"{data_len - cursor} bytes after the last tensor are not described by the header",
            "the file was appended to or is corrupt; re-save it",
        )


def load_tensor(header: SafetensorsHeader, key: str) -> torch.Tensor:
    """Read one validated tensor (a fresh CPU tensor in its on-disk dtype)."""
    import torch

    info = header.tensors[key]
    torch_dtype = getattr(torch, DTYPES[info.dtype][0])
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=torch_dtype)
    with header.path.open("rb") as f:
        f.seek(header.data_start + info.begin)
        buf = bytearray(f.read(info.nbytes))
    if len(buf) != info.nbytes:  # the file changed under us
        where = f"{header.path}:{clean(key)}"
        raise LolctlError("L120", where, "the file is shorter than its header says", "download it again")
    return torch.frombuffer(buf, dtype=torch_dtype).reshape(info.shape)
