"""The registry of hostile-corpus cases: what a case is, the expected outcome, and helpers shared by the case modules.

An expected outcome is ``kind="error"`` with a stable code L1xx (refused), ``kind="finding"`` with a code H2xx (read,
and that finding reported) or ``kind="ok"``; ``exit`` is the exit status of ``lolctl inspect TARGET ARGS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hostile import writers as w

MARKER_MODULE = "lolctl_hostile_marker"
IMPORTABLE = "_importable"  # corpus subfolder holding the marker module; tests put it on PYTHONPATH


@dataclass
class Case:
    name: str
    kind: str  # "error" | "finding" | "ok"
    code: str | None
    exit: int
    what: str
    target: str = ""  # path relative to the corpus root given to lolctl (default: the case folder)
    args: list[str] = field(default_factory=list)

    @property
    def expected(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Ctx:
    root: Path
    outside: Path

    @property
    def markers(self) -> Path:
        return self.outside / "markers"


Builder = Callable[[Ctx, Path], "str | None"]
CASES: list[tuple[Case, Builder]] = []


def case(name: str, kind: str, code: str | None, exit: int, what: str, args: tuple[str, ...] = ()):
    def deco(fn: Builder) -> Builder:
        CASES.append((Case(name, kind, code, exit, what, args=list(args)), fn))
        return fn

    return deco


def error(name: str, code: str, what: str, exit: int = 2, args: tuple[str, ...] = ()):
    return case(name, "error", code, exit, what, args)


def good_tensors(**kw) -> dict[str, w.Tensor]:
    return w.lora_tensors(**kw)


def peft(d: Path, weights: bytes | None, config=None, name: str = "adapter_model.safetensors") -> None:
    w.write_peft(d, weights, w.peft_config() if config is None else config, name)


def st_with(header_fn: Callable[[dict], object], *, data_fn: Callable[[bytes], bytes] = lambda b: b) -> bytes:
    """A correct file's header and data, then altered."""
    header, data = w.st_header(good_tensors())
    new = header_fn(header)
    return w.st_pack(header if new is None else new, data_fn(data))


def first_key(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


