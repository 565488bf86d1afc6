"""Public test helpers: check GL-invariance / equivariance of a function of LoRA factors, in float64.

``fn`` takes a list of (U, V) pairs (one per module; tensors may have leading batch dims) and returns a tensor (for
invariance) or a list of (U', V') pairs (for equivariance). Each check draws random well-conditioned group elements,
one per module, and compares. :func:`assert_sensitive` is the counterpart every equivariance test is paired with: the
function must change under a *wrong* action (otherwise it may be "invariant" because it ignores its input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lolctl.group import GL

Factors = list[tuple[torch.Tensor, torch.Tensor]]

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def random_factors(
    shapes: Sequence[tuple[int, int]],
    r: int | Sequence[int],
    *batch: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Factors:
    """Random (U, V) per module: shapes are (n, m) per module, r an int or one rank per module."""
    ranks = [r] * len(shapes) if isinstance(r, int) else list(r)
    return [
        (
            torch.randn((*batch, n, k), generator=generator, dtype=dtype),
            torch.randn((*batch, m, k), generator=generator, dtype=dtype),
        )
        for (n, m), k in zip(shapes, ranks)
    ]


def _random_gs(factors: Factors, generator: torch.Generator | None, orthogonal: bool = False) -> list[torch.Tensor]:
    gs = []
    for U, _ in factors:
        batch, r = tuple(U.shape[:-2]), int(U.shape[-1])
        group = GL(r)
        g = (
            group.random_orthogonal(*batch, generator=generator)
            if orthogonal
            else group.random(*batch, generator=generator)
        )
        gs.append(g)
    return gs


def _flat(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.reshape(-1)
    if isinstance(out, (list, tuple)):
        return torch.cat([_flat(o) for o in out])
    if isinstance(out, dict):
        return torch.cat([_flat(out[k]) for k in sorted(out)])
    raise TypeError(f"cannot compare output of type {type(out).__name__}")


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[bool, float]:
    scale = max(1.0, float(a.abs().max()))
    err = float((a - b).abs().max()) / scale
    return err <= tol, err


def assert_invariant(
    fn: Callable[[Factors], Any],
    factors: Factors,
    *,
    trials: int = 3,
    tol: float | None = None,
    orthogonal: bool = False,
    generator: torch.Generator | None = None,
) -> None:
    """fn(U_i g_i, V_i g_i^-T) == fn(U_i, V_i) for random g_i (GL, or O(r) when ``orthogonal``)."""
    tol = tol if tol is not None else TOLERANCE[factors[0][0].dtype]
    base = _flat(fn(factors))
    for _ in range(trials):
        gs = _random_gs(factors, generator, orthogonal)
        moved = _flat(fn([GL.act(U, V, g) for (U, V), g in zip(factors, gs)]))
        ok, err = _close(base, moved, tol)
        if not ok:
            raise AssertionError(f"not invariant: relative error {err:.3e} > tolerance {tol:.1e}")


def assert_equivariant(
    fn: Callable[[Factors], Factors],
    factors: Factors,
    *,
    trials: int = 3,
    tol: float | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """fn(U g, V g^-T) == (U' g, V' g^-T) where (U', V') = fn(U, V), per module."""
    tol = tol if tol is not None else TOLERANCE[factors[0][0].dtype]
    base = fn(factors)
    for _ in range(trials):
        gs = _random_gs(factors, generator)
        moved = fn([GL.act(U, V, g) for (U, V), g in zip(factors, gs)])
        expected = [GL.act(U, V, g) for (U, V), g in zip(base, gs)]
        ok, err = _close(_flat(expected), _flat(moved), tol)
        if not ok:
            raise AssertionError(f"not equivariant: relative error {err:.3e} > tolerance {tol:.1e}")


def assert_sensitive(
    fn: Callable[[Factors], Any],
    factors: Factors,
    *,
    min_change: float = 1e-6,
    generator: torch.Generator | None = None,
) -> None:
    """fn must change when the factors change in a way that changes ΔW (a wrong action (U g, V g)).

    Catches functions that are "invariant" only because they ignore their input.
    """
    base = _flat(fn(factors))
    gs = _random_gs(factors, generator)
    moved = _flat(fn([GL.wrong_act(U, V, g) for (U, V), g in zip(factors, gs)]))
    change = float((base - moved).abs().max()) / max(1.0, float(base.abs().max()))
    if change <= min_change:
        raise AssertionError(f"insensitive: output changed by only {change:.3e} under a wrong action")


class KillOnce:
    """A scan worker (see :class:`lolctl.ray_engine.RayEngine`) that kills its own process when a chunk holds
    ``item_id``, on the first ``times`` such chunks (counted by files in ``marks``, a folder every worker sees);
    after that it runs ``inner``. Tests use it to lose a Ray worker mid-scan."""

    def __init__(self, inner: Callable[[list[Any]], Any], item_id: str, marks: str, times: int = 1) -> None:
        self.inner = inner
        self.item_id = item_id
        self.marks = marks
        self.times = times

    def __call__(self, items: list[Any]) -> Any:
        import os
        from pathlib import Path

        if any(item.id == self.item_id for item in items):
            marks = Path(self.marks)
            if len(list(marks.iterdir())) < self.times:
                (marks / f"killed-{os.getpid()}").touch()
                os._exit(1)
        return self.inner(items)
