"""Model-agnostic health of an adapter: GL-invariant statistics per module and coded findings.

Everything here is a function of the singular values of ΔW = U Vᵀ (Gram route, QR fallback; ΔW never formed), so it
is invariant under the GL(r) symmetry and works for every base model. Modules sharing (n, m, r) are processed as one
batch. Findings per code are aggregated over modules (one finding naming the count and the first few modules).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from lolctl.canonical import gram, singular_values_from_grams
from lolctl.factors import Adapter, Finding, ModuleFactors, Severity

# thresholds (documented in docs/findings.md)
COLLAPSE_RTOL = 1e-3  # singular values below this fraction of the largest count as collapsed
SCALE_RANGE = (1e-2, 16.0)  # scale s = alpha / r outside this range is unusual
PAYLOAD_RATIO = 1.0  # non-LoRA payload larger than the LoRA factors themselves
OUTLIER_RATIO = 10.0  # a module's σ₁ at least this many times the median σ₁ of its siblings is an outlier (H205)
OUTLIER_SIBLINGS = 3  # ... judged only among at least this many siblings (the module included)
_LAYER = re.compile(r"(?<=[._])\d+(?=[._]|$)")  # layer numbers in module names: siblings share the rest


@dataclass
class HealthReport:
    source: str
    modules: list[dict[str, Any]]
    summary: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "modules": self.modules,
        }


def _stats(S: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row statistics of singular values S (B, r), descending."""
    energy = S.pow(2)
    total = energy.sum(-1)
    fro = total.sqrt()
    spec = S[:, 0]
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    cum = energy.cumsum(-1) / safe_total.unsqueeze(-1)
    p = S / torch.where(S.sum(-1) > 0, S.sum(-1), torch.ones_like(total)).unsqueeze(-1)
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    return {
        "fro_norm": fro,
        "spectral_norm": spec,
        "stable_rank": torch.where(spec > 0, total / spec.clamp_min(1e-300).pow(2), torch.zeros_like(total)),
        "effective_rank": torch.where(total > 0, entropy.exp(), torch.zeros_like(total)),
        "energy_rank_90": (cum < 0.90 - 1e-12).sum(-1) + 1,
        "energy_rank_99": (cum < 0.99 - 1e-12).sum(-1) + 1,
        "numerical_rank": (S > COLLAPSE_RTOL * spec.unsqueeze(-1)).sum(-1),
    }


def _finite(m: ModuleFactors) -> bool:
    return bool(torch.isfinite(m.U).all() and torch.isfinite(m.V).all())


def module_stats(modules: list[ModuleFactors]) -> list[dict[str, Any]]:
    """Statistics per module, in the input order; same-shape modules are batched.

    The factors are read once each, to form their r × r Gram matrices in float64; finiteness and the singular values
    come from those (a Gram is finite exactly when its factor is, unless the float64 products overflow — then the
    factor itself is checked and its singular values come from QR).
    """
    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i, m in enumerate(modules):
        groups[(*m.shape, m.rank)].append(i)
    finite = [True] * len(modules)
    out: list[dict[str, Any]] = [{} for _ in modules]
    for idx in groups.values():
        Gu = torch.stack([gram(modules[i].U) for i in idx])
        Gv = torch.stack([gram(modules[i].V) for i in idx])
        ok = (torch.isfinite(Gu).all((-1, -2)) & torch.isfinite(Gv).all((-1, -2))).tolist()
        for j, i in enumerate(idx):
            finite[i] = ok[j] or _finite(modules[i])
        keep = [j for j, i in enumerate(idx) if finite[i]]
        if not keep:
            continue
        rows = torch.tensor(keep)
        S = singular_values_from_grams(
            Gu[rows], Gv[rows], [modules[idx[j]].U for j in keep], [modules[idx[j]].V for j in keep]
        )
        stats = _stats(S)
        for row, j in enumerate(keep):
            i = idx[j]
            out[i] = {"singular_values": S[row].tolist()}
            out[i].update({k: float(v[row]) if v.is_floating_point() else int(v[row]) for k, v in stats.items()})
    for i, m in enumerate(modules):
        rec: dict[str, Any] = {"name": m.name, "kind": m.kind, "shape": list(m.shape), "rank": m.rank}
        rec.update({"scale": m.scale, "scale_source": m.scale_source, "dtype": m.dtype, "finite": finite[i]})
        rec.update(out[i])
        if "dora_magnitude" in m.extras:
            mag = m.extras["dora_magnitude"].double()
            rec["dora_magnitude"] = {
                "mean": float(mag.mean()),
                "std": float(mag.std()) if mag.numel() > 1 else 0.0,
                "min": float(mag.min()),
                "max": float(mag.max()),
            }
        out[i] = rec
    return out


def _aggregate(code: str, severity: Severity, hits: list[str], what: str, remedy: str, total: int) -> Finding:
    shown = ", ".join(hits[:3]) + (f" and {len(hits) - 3} more" if len(hits) > 3 else "")
    return Finding(code, severity, f"{len(hits)}/{total} modules {what}: {shown}", hits[0] if hits else None, remedy)


def magnitude_outliers(modules: list[ModuleFactors], stats: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(module, σ₁ / median σ₁ of its siblings) for every module at least OUTLIER_RATIO times its siblings' median.

    Siblings are the modules of the same role in other layers (the name with layer numbers folded:
    ``layer.3.attn.q`` and ``layer.7.attn.q``); when roles do not repeat, the modules of the same shape. Only finite,
    non-zero σ₁ count, and a role needs OUTLIER_SIBLINGS of them. σ₁ is GL(r)-invariant, so the finding is too."""
    sigma: dict[str, float] = {}
    for m, s in zip(modules, stats):
        value = s.get("spectral_norm")
        if value is not None and math.isfinite(value) and value > 0:
            sigma[m.name] = float(value)
    by_role: dict[str, list[str]] = defaultdict(list)
    by_shape: dict[tuple[int, int], list[str]] = defaultdict(list)
    for m in modules:
        if m.name in sigma:
            by_role[_LAYER.sub("*", m.name)].append(m.name)
            by_shape[m.shape].append(m.name)
    out = []
    for m in modules:
        if m.name not in by_role.get(_LAYER.sub("*", m.name), []):
            continue
        group = by_role[_LAYER.sub("*", m.name)]
        if len(group) < OUTLIER_SIBLINGS:
            group = by_shape[m.shape]
        if len(group) < OUTLIER_SIBLINGS:
            continue
        others = sorted(sigma[n] for n in group if n != m.name)
        mid = len(others) // 2
        median = others[mid] if len(others) % 2 else 0.5 * (others[mid - 1] + others[mid])
        if median > 0 and sigma[m.name] >= OUTLIER_RATIO * median:
            out.append((m.name, sigma[m.name] / median))
    return out


def findings(adapter: Adapter, stats: list[dict[str, Any]]) -> list[Finding]:
    """Coded findings from the statistics (H201-H208)."""
    out: list[Finding] = []
    total = len(adapter.modules)
    names = [m.name for m in adapter.modules]

    bad = [n for n, s in zip(names, stats) if not s["finite"]]
    if bad:
        out.append(_aggregate("H201", "error", bad, "contain NaN or Inf", "retrain or re-export the adapter", total))
    inert = [n for n, s in zip(names, stats) if s.get("fro_norm") == 0.0]
    if total and len(inert) == total:
        out.append(
            Finding(
                "H202",
                "error",
                "every module has ΔW = 0 (all lora_B are zero): the adapter is inert, probably saved before training",
                None,
                "save the adapter after training",
            )
        )
    elif inert:
        out.append(
            _aggregate(
                "H202",
                "warning",
                inert,
                "have ΔW = 0 (lora_B is zero)",
                "check that these modules were trained",
                total,
            )
        )
    oversized = [f"{m.name} (r={m.rank}, {m.shape[0]}×{m.shape[1]})" for m in adapter.modules if m.rank > min(m.shape)]
    if oversized:
        out.append(
            _aggregate(
                "H204",
                "info",
                oversized,
                "have a rank above the layer's smaller side: the singular values past it are structurally zero",
                "a rank of min(out, in) stores the same update",
                total,
            )
        )
    collapsed = [  # against the largest rank the layer allows: H204 already says why r > min(n, m) cannot be used
        f"{n} ({s['numerical_rank']}/{min(m.rank, *m.shape)})"
        for n, s, m in zip(names, stats, adapter.modules)
        if s.get("fro_norm", 0.0) > 0 and s["numerical_rank"] < min(m.rank, *m.shape)
    ]
    if collapsed:
        out.append(
            _aggregate(
                "H203",
                "warning" if len(collapsed) > total // 2 else "info",
                collapsed,
                f"use fewer directions than their rank (singular values < {COLLAPSE_RTOL:g}·max)",
                "a lower rank would store the same update",
                total,
            )
        )
    odd = [
        f"{m.name} (s={m.scale:.3g})"
        for m in adapter.modules
        if not (SCALE_RANGE[0] <= abs(m.scale) <= SCALE_RANGE[1])
    ]
    if odd:
        out.append(
            _aggregate(
                "H206",
                "info",
                odd,
                f"have a scale outside [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]",
                "check lora_alpha and r in the config",
                total,
            )
        )
    outliers = sorted(magnitude_outliers(adapter.modules, stats), key=lambda x: -x[1])
    if outliers:
        f = _aggregate(
            "H205",
            "warning",
            [f"{n} ({ratio:.0f}x)" for n, ratio in outliers],
            f"have σ₁ at least {OUTLIER_RATIO:g} times the median σ₁ of their sibling modules",
            "one module's update dwarfs the rest: check its learning rate, scale (rank/alpha pattern) or a "
            "corrupted tensor",
            total,
        )
        out.append(replace(f, module=outliers[0][0]))
    lora_bytes = sum((m.U.numel() + m.V.numel()) * _itemsize(m.dtype) for m in adapter.modules)
    payload_bytes = sum(p.nbytes for p in adapter.payload)
    if adapter.payload:
        severity: Severity = "warning" if payload_bytes > PAYLOAD_RATIO * max(lora_bytes, 1) else "info"
        keys = ", ".join(p.key for p in adapter.payload[:3]) + (" ..." if len(adapter.payload) > 3 else "")
        out.append(
            Finding(
                "H207",
                severity,
                f"{len(adapter.payload)} non-LoRA tensors ({_human(payload_bytes)}, "
                f"LoRA factors {_human(lora_bytes)}): {keys}",
                None,
                "full matrices (modules_to_save, heads) are not scored; they change the model directly",
            )
        )
    float_dtypes = sorted(d for d in adapter.meta.dtypes if d.startswith(("F", "BF", "float", "bfloat")))
    if len(float_dtypes) > 1:
        out.append(
            Finding(
                "H208",
                "info",
                f"tensors use several float dtypes: {', '.join(float_dtypes)}",
                None,
                "usually harmless; a mix can signal a partial re-export",
            )
        )
    return out


def summarize(adapter: Adapter, stats: list[dict[str, Any]]) -> dict[str, Any]:
    ranks = sorted({m.rank for m in adapter.modules})
    fro = [s["fro_norm"] for s in stats if "fro_norm" in s]
    nonfinite = sum(not s["finite"] for s in stats)
    return {
        "format": adapter.meta.format,
        "base_model": adapter.meta.base_model,
        "peft_type": adapter.meta.peft_type,
        "modules": len(adapter.modules),
        "ranks": ranks,
        "parameters": sum(m.U.numel() + m.V.numel() for m in adapter.modules),
        "bytes": adapter.meta.nbytes,
        "dtypes": dict(adapter.meta.dtypes),
        "delta_fro_norm": math.sqrt(sum(f * f for f in fro)) if fro else None,
        "max_spectral_norm": max((s["spectral_norm"] for s in stats if "spectral_norm" in s), default=None),
        "mean_stable_rank": _mean([s["stable_rank"] for s in stats if "stable_rank" in s]),
        "mean_effective_rank": _mean([s["effective_rank"] for s in stats if "effective_rank" in s]),
        "payload_tensors": len(adapter.payload),
        # modules with NaN/Inf (H201) have no statistics: the totals above are over the others, and say so here
        "nonfinite_modules": nonfinite,
    }


def health(adapter: Adapter) -> HealthReport:
    """The health report of one adapter: per-module statistics, a summary and every finding (reader's + ours)."""
    stats = module_stats(adapter.modules)
    found = list(adapter.findings) + findings(adapter, stats)
    return HealthReport(adapter.source, stats, summarize(adapter, stats), found)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _itemsize(dtype: str) -> int:
    d = dtype.upper().replace("TORCH.", "")
    for key, size in (("64", 8), ("32", 4), ("16", 2), ("8", 1)):
        if key in d:
            return size
    return 4


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
