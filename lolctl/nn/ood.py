"""Out-of-distribution score of an adapter against a checkpoint's reference adapters, and the inert case.

Reference adapters are training adapters kept with the checkpoint: GL-net's anchors (each module's ΔW at unit
norm), else ``ood.safetensors`` written by ``lolctl train``. Per module i they give the zoo's principal directions:
P_i (n × k), the top-k eigenvectors of Σ ΔW ΔWᵀ, and Q_i (m × k) of Σ ΔWᵀ ΔW (every reference at unit norm).

Features per adapter, all GL(r)-invariant per module (computed from r × r Gram matrices, ΔW never formed):

- ``energy_left`` / ``energy_right``: the mean over modules of ‖P_iᵀ ΔW_i‖² / ‖ΔW_i‖² (and ‖ΔW_i Q_i‖² / ‖ΔW_i‖²)
  — how much of the update lies in the directions the zoo's adapters use. A trained adapter puts most of its energy
  there; a random one about k / n.
- ``concentration``: the mean over modules of σ₁² / ‖ΔW_i‖² — how dominated by one direction the update is.
- ``zero_modules``: the share of modules whose ΔW_i is exactly 0.

The in-distribution spread of each feature is measured on the references themselves without looking twice at the
same data: the bases are fitted on one half of them and the features computed on the other half (and vice versa).
The score is the largest standardised distance, ``max_f |x_f − mean_f| / std_f``, with the energies one-sided (only
*less* energy than the references is suspicious); an adapter is flagged above ``THRESHOLD``.

An adapter whose every module has ΔW = 0 is *inert*: the model with it is exactly the base model, so its facts are
the base model's (:func:`inert_prediction`), not a guess of the network.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lolctl.nn.batch import LoraBatch

FEATURES = ("energy_left", "energy_right", "concentration")
ONE_SIDED = {"energy_left", "energy_right"}  # only a *low* value is out of distribution
CACHE_VERSION = 1  # bump when fit() changes what it computes: cached references of older code are then ignored
THRESHOLD = 4.0  # flag beyond this many reference standard deviations
BASIS = 16  # principal directions per module and side
OOD_REFERENCES = 64  # training adapters a checkpoint without anchors keeps for the OOD score
LABELS = {
    "energy_left": "share of the update in the zoo's principal output directions",
    "energy_right": "share of the update in the zoo's principal input directions",
    "concentration": "share of the update in its top singular direction",
}


def _module_factors(batch: LoraBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(U.double(), V.double()) for U, V in batch.factors()]


def principal_bases(batch: LoraBatch, k: int = BASIS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per module: (P (n × k), Q (m × k)) orthonormal, the top eigenvectors of Σ_b ΔW_b ΔW_bᵀ / ‖ΔW_b‖² and of
    Σ_b ΔW_bᵀ ΔW_b / ‖ΔW_b‖² over the batch (each sum formed from the factors: ΔW ΔWᵀ = U (VᵀV) Uᵀ)."""
    out = []
    for U, V in _module_factors(batch):
        Gu, Gv = U.mT @ U, V.mT @ V
        w = torch.einsum("brs,bsr->b", Gu, Gv).clamp_min(1e-300)  # ‖ΔW_b‖²
        keep = w > 1e-200
        U, V, Gu, Gv, w = U[keep], V[keep], Gu[keep], Gv[keep], w[keep]
        sides = []
        for X, G in ((U, Gv), (V, Gu)):
            M = torch.einsum("bnr,brs,bms->nm", X, G / w[:, None, None], X)
            vals, vecs = torch.linalg.eigh(M)
            sides.append(vecs.flip(-1)[:, : min(k, X.shape[1])])
        out.append((sides[0], sides[1]))
    return out


def features(batch: LoraBatch, bases: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, np.ndarray]:
    """The OOD features of every adapter of ``batch`` (each (B,)), and ``zero_modules``."""
    left, right, conc, zero = [], [], [], []
    for (U, V), (P, Q) in zip(_module_factors(batch), bases):
        Gu, Gv = U.mT @ U, V.mT @ V
        energy = torch.einsum("brs,bsr->b", Gu, Gv)  # ‖ΔW‖²
        PU, QV = P.T.to(U) @ U, Q.T.to(V) @ V  # (B, k, R)
        e_left = torch.einsum("brs,bsr->b", PU.mT @ PU, Gv)  # ‖Pᵀ ΔW‖² = tr((UᵀPPᵀU)(VᵀV))
        e_right = torch.einsum("brs,bsr->b", Gu, QV.mT @ QV)
        from lolctl.canonical import singular_values_from_grams

        top = singular_values_from_grams(Gu, Gv, U, V)[:, 0] ** 2
        nz = energy > 0
        safe = torch.where(nz, energy, torch.ones_like(energy))
        left.append(torch.where(nz, e_left / safe, torch.nan))
        right.append(torch.where(nz, e_right / safe, torch.nan))
        conc.append(torch.where(nz, top / safe, torch.nan))
        zero.append((~nz).double())
    stack = {"energy_left": left, "energy_right": right, "concentration": conc}
    out = {name: torch.stack(v, 1).nanmean(1).numpy() for name, v in stack.items()}
    out["zero_modules"] = torch.stack(zero, 1).mean(1).numpy()
    return out


@dataclass
class Verdict:
    """What the out-of-distribution checks say of one adapter: the reasons (empty when in distribution) and the
    reference-distance score (0 without reference adapters, inf for an inert adapter)."""

    reasons: list[str]
    score: float
    inert: bool = False  # ΔW = 0 in every module: the base model itself


@dataclass
class OODReference:
    """Principal bases from every reference adapter and the features' in-distribution mean and std."""

    bases: list[tuple[torch.Tensor, torch.Tensor]]
    mean: dict[str, float]
    std: dict[str, float]
    n: int

    @classmethod
    def fit(cls, refs: LoraBatch, k: int = BASIS) -> OODReference:
        order = torch.randperm(refs.size, generator=torch.Generator().manual_seed(0))
        halves = [order[: refs.size // 2], order[refs.size // 2 :]]
        held: dict[str, list[np.ndarray]] = {f: [] for f in FEATURES}
        for fit_on, test_on in ((halves[0], halves[1]), (halves[1], halves[0])):
            got = features(refs.select(test_on), principal_bases(refs.select(fit_on), k))
            for f in FEATURES:
                held[f].append(got[f])
        vals = {f: np.concatenate(v) for f, v in held.items()}
        mean = {f: float(np.nanmean(v)) for f, v in vals.items()}
        std = {f: max(float(np.nanstd(v)), 1e-3) for f, v in vals.items()}
        return cls(principal_bases(refs, k), mean, std, refs.size)

    def scores(self, batch: LoraBatch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(score (B,), per-feature standardised distances) — higher is further from the references."""
        feats = features(batch, self.bases)
        z = {}
        for f in FEATURES:
            d = (feats[f] - self.mean[f]) / self.std[f]
            z[f] = np.nan_to_num(np.maximum(-d, 0.0) if f in ONE_SIDED else np.abs(d), nan=0.0)
        score = np.max(np.stack([z[f] for f in FEATURES]), axis=0)
        z["_values"] = feats  # type: ignore[assignment]
        return score, z

    def reasons(self, batch: LoraBatch) -> list[list[str]]:
        """Per adapter: the features beyond THRESHOLD, as sentences (empty when in distribution)."""
        return self.explain(self.scores(batch)[1])

    def explain(self, z: dict[str, np.ndarray]) -> list[list[str]]:
        """:meth:`reasons` from the per-feature distances :meth:`scores` returned."""
        values: dict[str, np.ndarray] = z["_values"]  # type: ignore[assignment]
        out = []
        for b in range(len(values["zero_modules"])):
            why = []
            if 0 < values["zero_modules"][b] < 1:
                share = values["zero_modules"][b]
                why.append(f"{round(share * len(self.bases))} of {len(self.bases)} modules have ΔW = 0")
            for f in FEATURES:
                if z[f][b] > THRESHOLD:
                    why.append(f"{LABELS[f]} is {values[f][b]:.2f}; the checkpoint's reference adapters: "
                               f"{self.mean[f]:.2f} ± {self.std[f]:.2f} ({z[f][b]:.0f} std away)")
            out.append(why)
        return out

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(tensors, metadata) for a safetensors file; :meth:`from_tensors` reads them back."""
        tensors = {}
        for i, (P, Q) in enumerate(self.bases):
            tensors[f"P{i}"], tensors[f"Q{i}"] = P.contiguous(), Q.contiguous()
        meta = {"mean": json.dumps(self.mean), "std": json.dumps(self.std), "n": str(self.n),
                "modules": str(len(self.bases))}
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> OODReference:
        bases = [(tensors[f"P{i}"], tensors[f"Q{i}"]) for i in range(int(meta["modules"]))]
        mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
        if set(mean) != set(FEATURES) or set(std) != set(FEATURES):
            raise ValueError("features differ")
        return cls(bases, mean, std, int(meta["n"]))

    @classmethod
    def cached_fit(cls, refs: LoraBatch, cache: Path | None, k: int = BASIS) -> OODReference:
        """:meth:`fit`, kept in ``cache`` (a folder) under the hash of the reference factors and of this code's
        settings, so a process scores its first adapter without refitting (~1 s for the MiniLM checkpoint). An
        unreadable or stale cache file is refitted and rewritten; a cache that cannot be written is skipped."""
        if cache is None:
            return cls.fit(refs, k)
        digest = hashlib.sha256(f"ood-v{CACHE_VERSION} k={k} threshold={THRESHOLD}".encode())
        for name, t in sorted(refs.tensors().items()):
            digest.update(name.encode())
            digest.update(t.detach().to(torch.float64).contiguous().numpy().tobytes())
        path = cache / f"{digest.hexdigest()[:32]}.safetensors"
        from safetensors import safe_open
        from safetensors.torch import save_file

        try:
            with safe_open(str(path), "pt") as fh:
                return cls.from_tensors({key: fh.get_tensor(key) for key in fh.keys()}, fh.metadata() or {})
        except Exception:  # missing, torn or from another version: fit again
            pass
        ref = cls.fit(refs, k)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tensors, meta = ref.to_tensors()
            save_file(tensors, str(tmp), metadata=meta)
            os.replace(tmp, path)
        except OSError:
            pass
        return ref

    def describe(self) -> dict[str, Any]:
        return {"references": self.n, "basis": int(self.bases[0][0].shape[1]), "threshold_std": THRESHOLD,
                "mean": self.mean, "std": self.std}


def is_inert(batch: LoraBatch) -> np.ndarray:
    """(B,) True where every module's ΔW is exactly zero (the adapter leaves the base model unchanged)."""
    from lolctl.nn.base import frobenius_norms

    return (frobenius_norms(batch.to(dtype=torch.float64)) == 0).all(dim=1).numpy()


def base_facts(config: dict[str, Any]) -> dict[str, Any]:
    """The base model's recorded facts from the checkpoint's training zoo manifest (e.g. ``base_quality``)."""
    recipe = (config.get("training_data") or {}).get("recipe") or {}
    facts = recipe.get("facts") if isinstance(recipe, dict) else None
    return facts if isinstance(facts, dict) else {}


def inert_prediction(config: dict[str, Any], tasks: Any) -> dict[str, Any]:
    """What is known for an adapter with ΔW = 0: the base model's recorded facts, and 'no data' for the rest.

    ``quality`` is the manifest's ``base_quality`` (exact, zero-width interval); a multilabel task (membership of
    the training data) has every label at 0; tasks that describe training data an inert adapter never had (its
    size, noise, composition) have no value, with the reason in ``note``."""
    facts = base_facts(config)
    out: dict[str, Any] = {}
    for t in tasks:
        if t.kind == "regression":
            for col in t.columns:
                key = t.name if len(t.columns) == 1 else f"{t.name}.{col}"
                known = facts.get(f"base_{col}")
                if isinstance(known, (int, float)):
                    out[key] = {"kind": "regression", "value": float(known), "interval": [float(known)] * 2,
                                "note": f"the base model's recorded {col} (ΔW = 0)"}
                else:
                    out[key] = {"kind": "regression", "value": None, "interval": None,
                                "note": f"undefined for an inert adapter (ΔW = 0): no base {col} recorded"}
        elif t.kind == "multilabel":
            out[t.name] = {"kind": t.kind, "probs": {lab: 0.0 for lab in t.labels},
                           "note": "an inert adapter (ΔW = 0) learnt nothing from any label"}
        else:
            out[t.name] = {"kind": t.kind, "probs": {},
                           "note": "undefined for an inert adapter (ΔW = 0): it has no training data"}
    return out


def anchors_batch(model: Any) -> LoraBatch | None:
    """GL-net's anchors (training adapters at unit norm per module) as a float64 batch, or None without anchors."""
    for member in getattr(model, "members", []):  # a composite: the first member that keeps anchors
        found = anchors_batch(member)
        if found is not None:
            return found
    K = int(getattr(getattr(model, "config", None), "anchors", 0) or 0)
    if not K:
        return None
    from lolctl.nn.batch import GroupFactors

    R = max(1, int(model.config.anchor_rank))
    groups = []
    for k, g in enumerate(model.spec.groups):
        aU, aV = getattr(model, f"anchor_U{k}").double().cpu(), getattr(model, f"anchor_V{k}").double().cpu()
        L_g = len(g.indices)  # stored (L_g, n, K·R) → (K, L_g, n, R)
        U = aU.reshape(L_g, g.n, K, R).permute(2, 0, 1, 3)
        V = aV.reshape(L_g, g.m, K, R).permute(2, 0, 1, 3)
        groups.append(GroupFactors(g.indices, U, V))
    return LoraBatch(model.spec, tuple(groups), torch.full((K, len(model.spec)), R, dtype=torch.long))


def reference_sample(batch: LoraBatch, k: int = OOD_REFERENCES) -> LoraBatch:
    """``k`` adapters of ``batch`` (a seeded choice), each module's ΔW scaled to unit norm (float32)."""
    from lolctl.nn.base import frobenius_norms
    from lolctl.nn.batch import GroupFactors

    pick = torch.randperm(batch.size, generator=torch.Generator().manual_seed(0))[: min(k, batch.size)]
    chosen = batch.select(pick).to(dtype=torch.float64)
    root = frobenius_norms(chosen).clamp_min(1e-30).sqrt()  # (K, L)
    groups = tuple(GroupFactors(g.indices, (g.U / root[:, list(g.indices), None, None]).float(),
                                (g.V / root[:, list(g.indices), None, None]).float()) for g in chosen.groups)
    return LoraBatch(chosen.spec, groups, chosen.ranks)


RANK_TOLERANCE = 0.10  # a held-out rank split may trail the test split by this much on every task and still count


def _headline(task: dict[str, Any]) -> tuple[str, float] | None:
    """The metric a task is judged by: R² for a regression, AUROC for a multilabel task, accuracy otherwise."""
    for key in ("r2", "auroc", "accuracy") if task.get("kind") != "multiclass" else ("accuracy",):
        if isinstance(task.get(key), (int, float)) and np.isfinite(task[key]):
            return key, float(task[key])
    return None


def rank_reasons(unseen: list[int], seen: list[int], metrics: dict[str, Any]) -> list[str]:
    """Why ranks the checkpoint never trained on are out of distribution, following what was measured: a rank whose
    held-out split (``test_r<rank>``) came within ``RANK_TOLERANCE`` of the test split on every task is in
    distribution; one that fell further is flagged with the task that fell most; one never measured is flagged."""
    test = metrics.get("test") or {}
    reasons = []
    for rank in unseen:
        split = metrics.get(f"test_r{rank}")
        if not split:
            reasons.append(f"rank {rank} not seen in training (seen: {sorted(seen)}) and never measured")
            continue
        worst = None
        for name, task in split.items():
            mine, ref = _headline(task), _headline(test.get(name) or {})
            if mine and ref and mine[0] == ref[0] and ref[1] - mine[1] > RANK_TOLERANCE:
                if worst is None or ref[1] - mine[1] > worst[3] - worst[2]:
                    worst = (name, mine[0], mine[1], ref[1], int(task.get("n", 0)))
        if worst:
            name, metric, got, ref, n = worst
            shown = "R²" if metric == "r2" else metric
            at = ", ".join(map(str, sorted(seen)))
            reasons.append(f"rank {rank} not seen in training: on {n} held-out rank-{rank} adapters {name} "
                           f"{shown} was {got:.2f} (test split at rank {at}: {ref:.2f})")
    return reasons


def numerical_rank(adapter: Any, rtol: float = 1e-6) -> int:
    """The largest numerical rank of ΔW over the adapter's modules: singular values above ``rtol`` × σ₁ (float64,
    from r × r products). A rank-8 adapter whose extra columns are zero has numerical rank 4, like its original."""
    from lolctl.canonical import singular_values

    best = 0
    for m in adapter.modules:
        S = singular_values(m.U.to(torch.float64), m.V.to(torch.float64))
        if S.numel() and float(S[0]) > 0:
            best = max(best, int((S > rtol * S[0]).sum()))
    return best
