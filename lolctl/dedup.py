"""Duplicate updates in a scan: a GL-invariant sketch per adapter, and an index that marks later copies.

The sketch of a module is Yᵀ ΔW X = (Yᵀ U)(Vᵀ X) for fixed seeded Gaussian probes Y (n × k) and X (m × k) that
depend only on the module's shape, so it depends on ΔW alone (invariant under (U g, V g⁻ᵀ)), costs O((n + m) r k)
and never forms ΔW. An adapter's sketch concatenates its modules' k × k blocks in module-name order and folds them
into ``DIM`` numbers with a seeded count sketch (random bucket and sign per coordinate). Both steps preserve inner
products in expectation, so the cosine of two sketches estimates the cosine of the two adapters' updates (each the
concatenation of its modules' ΔW), and two copies of one update (bytes-identical, re-factored, cast to float16) have
sketches equal up to rounding.

:class:`DuplicateIndex` keeps the normalised sketches of the adapters seen so far, grouped by signature (the module
names and shapes). A new adapter whose sketch cosine with an earlier one is ≥ ``CANDIDATE_COSINE`` and whose norm
is within ``NORM_RTOL`` is a candidate; it is a duplicate when the exact comparison from the factors
(:mod:`lolctl.diff`, both adapters read again) confirms cosine ≥ ``DUPLICATE_COSINE`` and
‖ΔW_b‖ / ‖ΔW_a‖ within 1 ± ``NORM_RTOL``. The record is then marked ``duplicate_of`` (the first adapter with that
update) and ``similarity`` (the exact cosine).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from lolctl.errors import LolctlError
from lolctl.report.records import Record, ScoreRecord

if TYPE_CHECKING:
    import torch

    from lolctl.factors import ModuleFactors

PROBES = 4  # k: probe columns on each side of ΔW, k² numbers per module
DIM = 128  # numbers in an adapter's sketch
SEED = 15_2026
CANDIDATE_COSINE = 0.999  # sketch cosine that makes a candidate (sketches of copies agree to ~1e-6)
DUPLICATE_COSINE = 0.9999  # exact cosine of the updates that makes a duplicate (a float16 copy: ~1 − 1e-7)
NORM_RTOL = 0.01  # and ‖ΔW‖ within 1 %: a scaled copy is not the same update



@dataclass(frozen=True)
class Sketch:
    signature: str  # hash of the module names and (n, m) shapes: only equal signatures are compared
    norm: float  # norm of the sketch before normalising (≈ ‖ΔW‖_F over all modules)
    values: np.ndarray  # (DIM,) float32, unit norm (zero for a zero update); numpy: the index does tiny ops only

    def to_dict(self) -> dict[str, Any]:
        raw = self.values.astype("<f2").tobytes()
        return {"signature": self.signature, "norm": self.norm, "values": base64.b64encode(raw).decode()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sketch:
        values = np.frombuffer(base64.b64decode(d["values"]), dtype="<f2").astype(np.float32)
        norm = float(np.linalg.norm(values))
        return cls(str(d["signature"]), float(d["norm"]), values / norm if norm > 0 else values)  # unit again


@lru_cache(maxsize=64)
def _probe(dim: int, side: int, dtype: torch.dtype) -> torch.Tensor:
    """The fixed Gaussian probe, transposed (PROBES × dim, contiguous), for one side of ΔW of that dimension: drawn
    in float64 from a seeded generator (the same numbers on every machine), kept in the working dtype."""
    import torch

    rng = np.random.Generator(np.random.PCG64(SEED + 2 * dim + side))
    return torch.from_numpy(rng.standard_normal((PROBES, dim))).to(dtype).contiguous()


@lru_cache(maxsize=64)
def _fold(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Count-sketch bucket and sign per coordinate of a concatenated sketch of ``length`` numbers."""
    rng = np.random.Generator(np.random.PCG64(SEED + 7 * length + 1))
    return rng.integers(0, DIM, length), rng.integers(0, 2, length) * 2.0 - 1.0


STACK_MAX = 1 << 15  # modules whose two factors hold at most this many numbers are batched (fewer small ops)


def module_blocks(modules: Sequence[ModuleFactors]) -> np.ndarray:
    """Yᵀ ΔW X = (Yᵀ U)(Xᵀ V)ᵀ (PROBES × PROBES) per module, as an (L, PROBES, PROBES) float64 array in the order
    given; computed in float64 for float64 factors, else float32.

    The products run in torch (its thread setting, like the rest of lolctl), never in numpy: numpy's OpenBLAS starts
    its own threads, and on a busy 2-core machine their barriers stalled one 11008 × 16 product from 0.06 ms to
    ~100 ms. Both products are wide-by-thin (Yᵀ U, Xᵀ V with the probes stored transposed), several times faster on
    CPU than the thin-output A X. Small modules of one (n, m, r, dtype) are stacked into one batched product (fewer
    small calls); large ones go one by one (stacking would copy them)."""
    import torch

    groups: dict[tuple[int, int, int, torch.dtype], list[int]] = {}
    for i, m in enumerate(modules):
        (n, r), mm = m.U.shape, m.V.shape[0]
        dt = torch.float64 if m.U.dtype == torch.float64 else torch.float32
        key = (n, mm, r if (n + mm) * r <= STACK_MAX else -i - 1, dt)
        if key in groups:
            groups[key].append(i)
        else:
            groups[key] = [i]
    out = np.empty((len(modules), PROBES, PROBES))
    for (n, mm, _, dt), idx in groups.items():
        Y, X = _probe(n, 0, dt), _probe(mm, 1, dt)
        if len(idx) == 1:
            U, V = modules[idx[0]].U.to(dt), modules[idx[0]].V.to(dt)
        else:
            U = torch.stack([modules[i].U for i in idx]).to(dt)  # (L, n, r)
            V = torch.stack([modules[i].V for i in idx]).to(dt)  # (L, m, r)
        blocks = (Y @ U) @ (X @ V).mT  # (L, k, k) or (k, k)
        out[idx] = blocks.double().numpy(force=True).reshape(len(idx), PROBES, PROBES)
    return out


def _signature(order: Sequence[ModuleFactors]) -> str:
    text = "\n".join(f"{m.name}\t{m.U.shape[0]}\t{m.V.shape[0]}" for m in order)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sketch_vector(modules: Sequence[ModuleFactors], *, ordered: bool = False) -> np.ndarray:
    """The folded sketch (DIM,) in float64, before normalising: a linear function of the modules' ΔW."""
    flat = module_blocks(modules if ordered else sorted(modules, key=lambda m: m.name)).reshape(-1)
    bucket, sign = _fold(flat.size)
    return np.bincount(bucket, weights=flat * sign, minlength=DIM)


def sketch(modules: Sequence[ModuleFactors]) -> Sketch:
    """The adapter's sketch (see the module docstring): unit-norm float32 values, the norm, the signature."""
    order = sorted(modules, key=lambda m: m.name)
    signature = _signature(order)
    folded = sketch_vector(order, ordered=True)
    norm = float(np.linalg.norm(folded))
    if not 0 < norm < float("inf"):  # zero, NaN or Inf factors: no sketch to compare (the findings say why)
        return Sketch(signature, 0.0, np.zeros(DIM, dtype=np.float32))
    return Sketch(signature, norm, (folded / norm).astype(np.float32))


def exact_similarity(path_a: str, path_b: str) -> tuple[float | None, float | None]:
    """(cosine, ‖ΔW_b‖/‖ΔW_a‖) of two local adapters, read again in float64 and compared with lolctl.diff."""
    import torch

    from lolctl.diff import diff_adapters
    from lolctl.read import read_adapter

    a = read_adapter(path_a, dtype=torch.float64)
    b = read_adapter(path_b, dtype=torch.float64)
    d = diff_adapters(a, b)
    if d.only_a or d.only_b or d.mismatched or not d.norm_a:
        return None, None
    return d.cosine, d.norm_b / d.norm_a


def _matvec(rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """rows @ v through torch (zero-copy): numpy would hand a long product to OpenBLAS's own threads (see above)."""
    import torch

    return (torch.from_numpy(rows) @ torch.from_numpy(v)).numpy()


class _Group:
    """The originals of one signature: their sources and paths, sketch norms, and sketches as rows of a matrix."""

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []
        self.norms: list[float] = []
        self.rows = np.zeros((16, DIM), dtype=np.float32)

    def append(self, source: str, path: str, s: Sketch) -> None:
        if len(self.records) == self.rows.shape[0]:  # grow by doubling: O(1) amortised per adapter
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
        self.rows[len(self.records)] = s.values
        self.records.append({"source": source, "path": path})
        self.norms.append(s.norm)


class DuplicateIndex:
    """Marks records whose update equals that of an earlier record (call :meth:`mark` in output order)."""

    def __init__(self, confirm: Callable[[str, str], tuple[float | None, float | None]] = exact_similarity) -> None:
        self.confirm = confirm
        self._groups: dict[str, _Group] = {}

    def add(self, record: Record) -> None:
        """Remember an original (a record with a sketch that is not itself a duplicate)."""
        if isinstance(record, ScoreRecord) and record.sketch and not record.duplicate_of and record.path:
            self._add(record, Sketch.from_dict(record.sketch))

    def _add(self, record: ScoreRecord, s: Sketch) -> None:
        if s.norm <= 0:
            return  # an inert adapter: "no update" is reported by its findings, not as a duplicate
        group = self._groups.get(s.signature)
        if group is None:
            group = self._groups[s.signature] = _Group()
        group.append(record.source, record.path, s)

    def mark(self, record: Record) -> None:
        """Set ``duplicate_of`` / ``similarity`` on a record that repeats an earlier update; else remember it."""
        if not isinstance(record, ScoreRecord) or not record.sketch or not record.path:
            return
        s = Sketch.from_dict(record.sketch)
        group = self._groups.get(s.signature)
        if group is not None:
            sims = _matvec(group.rows[: len(group.records)], s.values)
            for i in np.flatnonzero(sims >= CANDIDATE_COSINE).tolist():  # in scan order: the first one wins
                if abs(s.norm / group.norms[i] - 1) > 5 * NORM_RTOL:
                    continue
                try:
                    cosine, ratio = self.confirm(group.records[i]["path"], record.path)
                except (LolctlError, OSError):  # the earlier file moved or broke since: not confirmed
                    continue
                if cosine is not None and ratio is not None and cosine >= DUPLICATE_COSINE \
                        and abs(ratio - 1) <= NORM_RTOL:
                    record.duplicate_of = group.records[i]["source"]
                    record.similarity = cosine
                    return
        self._add(record, s)
