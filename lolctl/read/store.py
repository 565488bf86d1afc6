"""One view over a weights file, whatever its container: shapes and dtypes first, tensors on demand."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lolctl.errors import LolctlError
from lolctl.read.codes import clean
from lolctl.read.pickle_io import PICKLE_SUFFIXES, load_pickle, refuse_pickle
from lolctl.read.safetensors_io import DTYPES, SafetensorsHeader, load_tensor, read_header, sniff_pickle_text

if TYPE_CHECKING:
    import torch


@dataclass
class TensorStore:
    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]  # torch dtype names, e.g. "float32"
    nbytes: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)
    _header: SafetensorsHeader | None = None
    _tensors: dict[str, torch.Tensor] | None = None

    def get(self, key: str) -> torch.Tensor:
        if self._tensors is not None:
            return self._tensors[key]
        assert self._header is not None
        return load_tensor(self._header, key)

    def keys(self) -> list[str]:
        return list(self.shapes)

    def dtype_counts(self, keys: list[str] | None = None) -> dict[str, int]:
        return dict(Counter(self.dtypes[k] for k in (self.shapes if keys is None else keys)))

    def where(self, key: str) -> str:
        return f"{self.path}:{clean(key)}"


def open_store(path: Path, *, trust_pickle: bool, max_bytes: int) -> TensorStore:
    if path.suffix == ".safetensors":
        h = read_header(path, max_bytes)
        t = h.tensors
        return TensorStore(
            path=path,
            shapes={k: i.shape for k, i in t.items()},
            dtypes={k: DTYPES[i.dtype][0] for k, i in t.items()},
            nbytes={k: i.nbytes for k, i in t.items()},
            metadata=h.metadata,
            _header=h,
        )
    if path.suffix in PICKLE_SUFFIXES:
        sniff_pickle_text(path)  # a text placeholder is not a pickle that "can run code"
        if not trust_pickle:
            raise refuse_pickle(path)
        tensors = load_pickle(path, max_bytes)
        return TensorStore(
            path=path,
            shapes={k: tuple(v.shape) for k, v in tensors.items()},
            dtypes={k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()},
            nbytes={k: v.numel() * v.element_size() for k, v in tensors.items()},
            _tensors=tensors,
        )
    raise LolctlError("L103", str(path), f"unknown weights file type {path.suffix!r}", "use .safetensors (or .bin)")
