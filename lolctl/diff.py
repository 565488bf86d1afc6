"""How two adapters' updates relate, from their factors only: ΔW = U Vᵀ is never formed.

Per module both updates are brought to their SVD through thin QRs (O((n + m) r²)):
U = Q_u R_u, V = Q_v R_v, R_u R_vᵀ = P diag(S) Hᵀ, so ΔW = L diag(S) Rᵀ with L = Q_u P, R = Q_v H (orthonormal,
truncated at the numerical rank). Everything below is then a product of r × r matrices or of thin bases:

- inner product ⟨ΔW_a, ΔW_b⟩_F = Σ_ij S_a,i (L_aᵀ L_b)_ij S_b,j (R_aᵀ R_b)_ij, norms ‖ΔW‖_F = ‖S‖;
- ‖ΔW_a − ΔW_b‖_F from the QRs of [L_a S_a, −L_b S_b] and [R_a, R_b] (no cancellation of squared norms, so a
  re-factored copy comes out at ~1e-15, not at √eps);
- principal angles between column spaces (span L) and row spaces (span R), from the cosines (singular values of
  L_aᵀ L_b) and sines (of the part of the smaller basis outside the larger space), θ = atan2(sin, cos): accurate
  near 0° and near 90°.

All of it depends on ΔW only, so it is invariant under (U, V) ↦ (U g, V g⁻ᵀ) for any g ∈ GL(r), independently per
module and per side (tests/test_diff.py checks it in float64 with lolctl.testing). Work is done in float64.

Overall figures treat an adapter as the concatenation of its modules' ΔW: a module present on one side only (or with
different shapes on the two sides) counts in that side's norm and adds nothing to the inner product.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lolctl.report.records import DIFF

if TYPE_CHECKING:
    import torch

    from lolctl.factors import Adapter

SCHEMA = DIFF
RANK_RTOL = 1e-10  # singular values of ΔW below RANK_RTOL · σ₁ are numerical zeros (not part of the subspaces)


@dataclass(frozen=True)
class ModuleDiff:
    """How one module's two updates relate. ``cosine`` and ``rel_diff`` are None when ΔW_a (or ΔW_b) is zero."""

    name: str
    shape: tuple[int, int]  # (n, m) of ΔW
    rank_a: int  # stored ranks of the factors
    rank_b: int
    norm_a: float  # ‖ΔW_a‖_F
    norm_b: float
    cosine: float | None  # ⟨ΔW_a, ΔW_b⟩ / (‖ΔW_a‖ ‖ΔW_b‖)
    rel_diff: float | None  # ‖ΔW_a − ΔW_b‖ / ‖ΔW_a‖
    col_angles: tuple[float, ...]  # principal angles between the column spaces, degrees, ascending
    row_angles: tuple[float, ...]  # ... between the row spaces

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "rank_a": self.rank_a,
            "rank_b": self.rank_b,
            "norm_a": self.norm_a,
            "norm_b": self.norm_b,
            "cosine": self.cosine,
            "rel_diff": self.rel_diff,
            "col_angles_deg": list(self.col_angles),
            "row_angles_deg": list(self.row_angles),
        }


@dataclass
class AdapterDiff:
    """Two adapters compared: overall figures, one :class:`ModuleDiff` per common module, and what does not pair."""

    a: str
    b: str
    norm_a: float
    norm_b: float
    cosine: float | None
    rel_diff: float | None
    modules: list[ModuleDiff]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    mismatched: list[dict[str, Any]] = field(default_factory=list)  # same name, different ΔW shapes

    @property
    def max_col_angle(self) -> float | None:
        angles = [max(m.col_angles) for m in self.modules if m.col_angles]
        return max(angles) if angles else None

    @property
    def max_row_angle(self) -> float | None:
        angles = [max(m.row_angles) for m in self.modules if m.row_angles]
        return max(angles) if angles else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "a": self.a,
            "b": self.b,
            "overall": {
                "cosine": self.cosine,
                "rel_diff": self.rel_diff,
                "norm_a": self.norm_a,
                "norm_b": self.norm_b,
                "common_modules": len(self.modules),
                "max_col_angle_deg": self.max_col_angle,
                "max_row_angle_deg": self.max_row_angle,
            },
            "modules": [m.to_dict() for m in self.modules],
            "only_a": self.only_a,
            "only_b": self.only_b,
            "mismatched": self.mismatched,
        }


# ---------------------------------------------------------------------------------------------- maths
def svd_parts(U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ΔW = U Vᵀ as (L, S, R): L (n × k), R (m × k) orthonormal, S (k,) descending, k the numerical rank. float64."""
    import torch

    U, V = U.double(), V.double()
    Qu, Ru = torch.linalg.qr(U)
    Qv, Rv = torch.linalg.qr(V)
    P, S, Ht = torch.linalg.svd(Ru @ Rv.T)
    k = int((S > RANK_RTOL * S[0]).sum()) if S.numel() and bool(S[0] > 0) and bool(torch.isfinite(S).all()) else 0
    return Qu @ P[:, :k], S[:k], Qv @ Ht[:k].T


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between span(A) and span(B), A and B with orthonormal columns."""
    import torch

    if A.shape[1] > B.shape[1]:
        A, B = B, A
    p = A.shape[1]
    if p == 0:
        return torch.zeros(0, dtype=torch.float64)
    cos = torch.linalg.svdvals(A.T @ B).clamp(max=1.0)[:p]  # descending
    sin = torch.linalg.svdvals(A - B @ (B.T @ A)).clamp(max=1.0).flip(0)  # ascending
    return torch.atan2(sin, cos)


def _inner(a: tuple[torch.Tensor, torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
           ) -> float:
    La, Sa, Ra = a
    Lb, Sb, Rb = b
    return float((Sa[:, None] * (La.T @ Lb) * Sb[None, :] * (Ra.T @ Rb)).sum())


def _diff_norm(a: tuple[torch.Tensor, torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
               ) -> float:
    """‖L_a S_a R_aᵀ − L_b S_b R_bᵀ‖_F through two thin QRs of the stacked factors."""
    import torch

    La, Sa, Ra = a
    Lb, Sb, Rb = b
    if Sa.numel() + Sb.numel() == 0:
        return 0.0
    _, T1 = torch.linalg.qr(torch.cat([La * Sa, -Lb * Sb], dim=1))
    _, T2 = torch.linalg.qr(torch.cat([Ra, Rb], dim=1))
    return float(torch.linalg.matrix_norm(T1 @ T2.T))


def module_diff(name: str, Ua: torch.Tensor, Va: torch.Tensor, Ub: torch.Tensor, Vb: torch.Tensor) -> ModuleDiff:
    """Compare ΔW_a = Ua Vaᵀ with ΔW_b = Ub Vbᵀ (same (n, m); ranks may differ)."""
    a, b = svd_parts(Ua, Va), svd_parts(Ub, Vb)
    norm_a, norm_b = float(a[1].norm()), float(b[1].norm())
    inner = _inner(a, b)
    cosine = inner / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else None
    rel = _diff_norm(a, b) / norm_a if norm_a > 0 else None
    return ModuleDiff(
        name=name,
        shape=(int(Ua.shape[0]), int(Va.shape[0])),
        rank_a=int(Ua.shape[1]),
        rank_b=int(Ub.shape[1]),
        norm_a=norm_a,
        norm_b=norm_b,
        cosine=None if cosine is None else max(-1.0, min(1.0, cosine)),
        rel_diff=rel,
        col_angles=tuple(math.degrees(float(t)) for t in principal_angles(a[0], b[0])),
        row_angles=tuple(math.degrees(float(t)) for t in principal_angles(a[2], b[2])),
    )


Named = Iterable[tuple[str, "torch.Tensor", "torch.Tensor"]]


def diff_factors(a: Named, b: Named, *, name_a: str = "a", name_b: str = "b") -> AdapterDiff:
    """Compare two adapters given as (module name, U, V) triples; modules pair by name."""
    fa = {name: (U, V) for name, U, V in a}
    fb = {name: (U, V) for name, U, V in b}
    modules: list[ModuleDiff] = []
    mismatched: list[dict[str, Any]] = []
    sq_a = sq_b = inner = sq_diff = 0.0
    for name, (Ua, Va) in fa.items():
        if name not in fb:
            continue
        Ub, Vb = fb[name]
        if (Ua.shape[0], Va.shape[0]) != (Ub.shape[0], Vb.shape[0]):
            mismatched.append({"name": name, "shape_a": [int(Ua.shape[0]), int(Va.shape[0])],
                               "shape_b": [int(Ub.shape[0]), int(Vb.shape[0])]})
            continue
        m = module_diff(name, Ua, Va, Ub, Vb)
        modules.append(m)
        sq_a += m.norm_a**2
        sq_b += m.norm_b**2
        inner += (m.cosine or 0.0) * m.norm_a * m.norm_b
        sq_diff += (m.rel_diff * m.norm_a) ** 2 if m.rel_diff is not None else m.norm_b**2
    only_a = [n for n in fa if n not in fb]
    only_b = [n for n in fb if n not in fa]
    for name in only_a + [d["name"] for d in mismatched]:
        s = float(svd_parts(*fa[name])[1].norm()) ** 2
        sq_a, sq_diff = sq_a + s, sq_diff + s
    for name in only_b + [d["name"] for d in mismatched]:
        s = float(svd_parts(*fb[name])[1].norm()) ** 2
        sq_b, sq_diff = sq_b + s, sq_diff + s
    norm_a, norm_b = math.sqrt(sq_a), math.sqrt(sq_b)
    cosine = max(-1.0, min(1.0, inner / (norm_a * norm_b))) if norm_a > 0 and norm_b > 0 else None
    return AdapterDiff(
        a=name_a, b=name_b, norm_a=norm_a, norm_b=norm_b, cosine=cosine,
        rel_diff=math.sqrt(sq_diff) / norm_a if norm_a > 0 else None,
        modules=modules, only_a=only_a, only_b=only_b, mismatched=mismatched,
    )


def diff_adapters(a: Adapter, b: Adapter) -> AdapterDiff:
    """Compare two read adapters (DoRA magnitudes and non-LoRA payload are not part of ΔW = U Vᵀ and not compared).

    Raises L146 when a factor holds NaN or Inf."""
    from lolctl.errors import LolctlError

    for adapter in (a, b):
        for m in adapter.modules:
            if not (bool(m.U.isfinite().all()) and bool(m.V.isfinite().all())):
                raise LolctlError("L146", f"{adapter.source}: {m.name}", "the factors hold NaN or Inf",
                                  "run `lolctl inspect` on it; retrain or re-export the adapter")
    return diff_factors(((m.name, m.U, m.V) for m in a.modules), ((m.name, m.U, m.V) for m in b.modules),
                        name_a=a.source, name_b=b.source)


def read_source(source: str, *, trust_pickle: bool = False, max_bytes: int | None = None) -> Adapter:
    """Read the one adapter a SOURCE names, resolved the way ``score`` resolves it (lolctl.sources: path, glob or Hub
    repo). A source naming several adapters is an input error (L104)."""
    from lolctl.errors import LolctlError
    from lolctl.read import read_adapter
    from lolctl.sources import resolve

    items = resolve([source])
    if not items:
        raise LolctlError("L101", source, "no adapter found at this source",
                          "point at a PEFT folder, a LoRA .safetensors file or a Hub repo")
    paths = []
    for item in items:
        if item.hub is None:
            assert item.path is not None
            paths.append(item.path)
        else:
            from lolctl.hub import Hub

            paths += Hub().fetch(item.hub, trust_pickle=trust_pickle, max_bytes=max_bytes)[0]
    if len(paths) != 1:
        shown = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        raise LolctlError("L104", source, f"{len(paths)} adapters at this source ({shown})",
                          "name one adapter folder or file")
    import torch

    kwargs: dict[str, Any] = {"trust_pickle": trust_pickle, "dtype": torch.float64}  # float32 files read exactly
    if max_bytes is not None:
        kwargs["max_bytes"] = max_bytes
    adapter = read_adapter(paths[0], **kwargs)
    adapter.source = source if items[0].hub is None else f"{items[0].display}"
    return adapter
