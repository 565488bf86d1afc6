"""From a pair of PEFT-convention factors to typed :class:`ModuleFactors` (U = s·B, V = Aᵀ), with structure checks.

Every format reader first brings its tensors to PEFT's convention — A (r, in[, k...]), B (out, r[, 1...]) — and then
calls :func:`check_pair` on the *shapes* (before reading any data) and :func:`make_module` on the tensors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lolctl.errors import LolctlError
from lolctl.factors import ModuleFactors, ModuleKind

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PairShape:
    kind: ModuleKind
    rank: int
    n: int  # rows of ΔW (out features / embedding dim)
    m: int  # columns of ΔW (in features · kernel / vocabulary)
    conv_shape: tuple[int, ...] | None


def check_pair(
    where: str, a_shape: tuple[int, ...] | None, b_shape: tuple[int, ...] | None, *, embedding: bool = False
) -> PairShape:
    """Validate A (r, in[, k...]) against B (out, r[, 1...]); raise L141/L145/L140/L142/L143 (a zero-size layer).

    A rank above min(out, in) is accepted, as PEFT accepts it (r = 8 on a 2-class head): ΔW then has at most
    min(out, in) nonzero singular values, the rest are structurally zero (health finding H204)."""
    if a_shape is None or b_shape is None:
        missing = "A (down)" if a_shape is None else "B (up)"
        raise LolctlError("L141", where, f"the module has no {missing} factor", "re-save the adapter completely")
    if len(a_shape) < 2 or len(b_shape) < 2 or len(a_shape) != len(b_shape) or len(a_shape) > 5:
        raise LolctlError(
            "L145", where, f"factor shapes A {list(a_shape)} and B {list(b_shape)} have unusable dimensions",
            "expected A (r, in) and B (out, r), or conv A (r, in, k...) and B (out, r, 1...)",
        )
    r, n = a_shape[0], b_shape[0]
    if b_shape[1] != r or any(d != 1 for d in b_shape[2:]):
        raise LolctlError(
            "L140", where, f"A {list(a_shape)} and B {list(b_shape)} do not fit together (B must be (out, {r}, 1...))",
            "the factors belong to different modules or were transposed",
        )
    m = math.prod(a_shape[1:])
    if r == 0:
        raise LolctlError("L142", where, "the module has rank 0", "drop the module or re-save the adapter")
    if min(n, m) == 0:  # r > min(n, m) on a real layer is legal (PEFT makes and loads it): see health H204
        raise LolctlError(
            "L143", where, f"the layer has size {n}×{m}: no rank fits a layer without rows or columns",
            "the factors are truncated or from a different layer",
        )
    if len(a_shape) > 2:
        return PairShape("conv", r, n, m, (n, *a_shape[1:]))
    return PairShape("embedding" if embedding else "linear", r, n, m, None)


def make_module(
    name: str,
    shape: PairShape,
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    scale: float,
    scale_source: str,
    dtype: torch.dtype,
    keys: tuple[str, ...],
    extras: dict[str, torch.Tensor] | None = None,
) -> ModuleFactors:
    """U = scale · B (n × r), V = Aᵀ (m × r): U Vᵀ is ΔW in (out, in) orientation (conv: reshaped to (out, in·k·k))."""
    disk_dtype = str(A.dtype).removeprefix("torch.")
    U = B.reshape(shape.n, shape.rank).to(dtype, copy=True).mul_(scale)  # one pass: convert, then scale in place
    V = A.reshape(shape.rank, shape.m).to(dtype).T  # a transposed view: no second copy of A
    return ModuleFactors(
        name=name,
        U=U,
        V=V,
        scale=float(scale),
        scale_source=scale_source,
        kind=shape.kind,
        conv_shape=shape.conv_shape,
        keys=keys,
        dtype=disk_dtype,
        extras={k: v.to(dtype) for k, v in (extras or {}).items()},
    )


def natural_key(name: str) -> tuple:
    """Sort "layers.10" after "layers.2"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name))


def duplicate_error(where: str, name: str, first: str, second: str) -> LolctlError:
    return LolctlError(
        "L144", where, f"keys {first!r} and {second!r} both map to module {name!r}", "remove one of the two copies"
    )
