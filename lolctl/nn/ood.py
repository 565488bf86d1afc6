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
- ``input_contrast`` (when the checkpoint keeps ``ood_inputs.safetensors``, :class:`InputContrast`): the mean over
  the modules that read the base model's input width d of log ‖ΔW_i C‖² − log ‖ΔW_i I‖², where I I ᵀ and C Cᵀ
  approximate the second moments of the inputs the zoo's adapters were trained on and of other inputs the base model
  sees (e.g. the other side of a dual encoder) — which inputs the update was fitted to. One-sided: only *more*
  response to the other inputs is suspicious.

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

from lolctl.errors import LolctlError
from lolctl.nn.batch import LoraBatch

FEATURES = ("energy_left", "energy_right", "concentration")
ONE_SIDED = {"energy_left", "energy_right"}  # only a *low* value is out of distribution
HIGH_SIDED = {"input_contrast"}  # only a *high* value is out of distribution
INPUTS_FILE = "ood_inputs.safetensors"  # a checkpoint's InputContrast (optional)
INPUTS_FORMAT = "lolctl-ood-inputs/1"
INPUT_BASIS = 32  # columns of the pooled input bases
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


def pooled_basis(groups: torch.Tensor, k: int = INPUT_BASIS) -> torch.Tensor:
    """(d × k) with B Bᵀ the top-k part of the mean second moment of probe groups (G, d, k_g) (lolctl zoo probes)."""
    M = torch.einsum("gdk,gek->de", groups.double(), groups.double()) / groups.shape[0]
    vals, vecs = torch.linalg.eigh(M)
    return vecs.flip(-1)[:, :k] * vals.flip(-1)[:k].clamp_min(0).sqrt()


@dataclass
class InputContrast:
    """Which inputs an update was fitted to: ``inside`` (d × k) spans the zoo's training inputs of the base model,
    ``contrast`` (d × k) other inputs it sees; ``describe`` says what the other inputs are."""

    inside: torch.Tensor
    contrast: torch.Tensor
    describe: str

    @classmethod
    def from_probes(cls, inside: torch.Tensor, contrast: torch.Tensor, describe: str) -> InputContrast:
        """From two probe bases (G, d, k) of ``lolctl zoo probes``: the training side's and the other inputs'."""
        if inside.shape[1] != contrast.shape[1]:
            raise LolctlError("L180", "--ood-contrast", f"input width {contrast.shape[1]} differs from the training "
                              f"inputs' {inside.shape[1]}", "make both probe files for the same base model")
        return cls(pooled_basis(inside), pooled_basis(contrast), describe)

    def values(self, batch: LoraBatch) -> np.ndarray:
        """(B,) mean over the modules of input width d of log ‖ΔW C‖² − log ‖ΔW I‖² (NaN where no module has width d
        or ΔW = 0). ‖ΔW X‖² = tr((UᵀU)(VᵀX)(VᵀX)ᵀ): GL-invariant, scale-free, any rank, ΔW never formed."""
        d = self.inside.shape[0]
        out = []
        for U, V in _module_factors(batch):
            if V.shape[1] != d:
                continue
            gram = U.mT @ U
            parts = []
            for X in (self.contrast, self.inside):
                A = V.mT @ X.to(V)  # (B, R, k)
                parts.append(torch.einsum("brs,bsk,brk->b", gram, A, A))
            ok = (parts[0] > 0) & (parts[1] > 0)
            ratio = parts[0].clamp_min(1e-300).log() - parts[1].clamp_min(1e-300).log()
            out.append(torch.where(ok, ratio, torch.nan))
        if not out:
            return np.full(batch.size, np.nan)
        return torch.stack(out, 1).nanmean(1).numpy()

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({"inside": self.inside.contiguous(), "contrast": self.contrast.contiguous()}, str(path),
                  metadata={"format": INPUTS_FORMAT, "describe": self.describe})

    @classmethod
    def load(cls, path: Path) -> InputContrast:
        """L170 naming the file when it is not one."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != INPUTS_FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}")
                return cls(fh.get_tensor("inside").double(), fh.get_tensor("contrast").double(), meta["describe"])
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise LolctlError("L170", str(path), f"not a valid OOD input file ({err})",
                              "rewrite it with lolctl calibrate --ood-contrast, or delete it") from err


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
    inputs: InputContrast | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The features this reference scores: FEATURES, and ``input_contrast`` when it has input bases."""
        return FEATURES + (("input_contrast",) if self.inputs is not None else ())

    @classmethod
    def fit(cls, refs: LoraBatch, k: int = BASIS, inputs: InputContrast | None = None) -> OODReference:
        order = torch.randperm(refs.size, generator=torch.Generator().manual_seed(0))
        halves = [order[: refs.size // 2], order[refs.size // 2 :]]
        held: dict[str, list[np.ndarray]] = {f: [] for f in FEATURES}
        for fit_on, test_on in ((halves[0], halves[1]), (halves[1], halves[0])):
            got = features(refs.select(test_on), principal_bases(refs.select(fit_on), k))
            for f in FEATURES:
                held[f].append(got[f])
        vals = {f: np.concatenate(v) for f, v in held.items()}
        if inputs is not None:  # fixed bases of the base model's inputs: nothing fitted on the references
            vals["input_contrast"] = inputs.values(refs)
        mean = {f: float(np.nanmean(v)) for f, v in vals.items()}
        std = {f: max(float(np.nanstd(v)), 1e-3) for f, v in vals.items()}
        return cls(principal_bases(refs, k), mean, std, refs.size, inputs)

    def scores(self, batch: LoraBatch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(score (B,), per-feature standardised distances) — higher is further from the references."""
        feats = features(batch, self.bases)
        if self.inputs is not None:
            feats["input_contrast"] = self.inputs.values(batch)
        z = {}
        for f in self.names:
            d = (feats[f] - self.mean[f]) / self.std[f]
            side = np.maximum(-d, 0.0) if f in ONE_SIDED else np.maximum(d, 0.0) if f in HIGH_SIDED else np.abs(d)
            z[f] = np.nan_to_num(side, nan=0.0)
        score = np.max(np.stack([z[f] for f in self.names]), axis=0)
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
            for f in self.names:
                if z[f][b] <= THRESHOLD:
                    continue
                if f == "input_contrast":
                    assert self.inputs is not None
                    why.append(f"the update acts on other inputs of the base model ({self.inputs.describe}) more than "
                               f"on the training adapters' inputs: log ratio {values[f][b]:+.2f}, reference adapters "
                               f"{self.mean[f]:+.2f} ± {self.std[f]:.2f} ({z[f][b]:.0f} std away)")
                else:
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
        if self.inputs is not None:
            tensors["inputs_inside"] = self.inputs.inside.contiguous()
            tensors["inputs_contrast"] = self.inputs.contrast.contiguous()
            meta["inputs_describe"] = self.inputs.describe
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> OODReference:
        bases = [(tensors[f"P{i}"], tensors[f"Q{i}"]) for i in range(int(meta["modules"]))]
        mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
        inputs = None
        if "inputs_inside" in tensors:
            inputs = InputContrast(tensors["inputs_inside"], tensors["inputs_contrast"], meta["inputs_describe"])
        ref = cls(bases, mean, std, int(meta["n"]), inputs)
        if set(mean) != set(ref.names) or set(std) != set(ref.names):
            raise ValueError("features differ")
        return ref

    @classmethod
    def cached_fit(cls, refs: LoraBatch, cache: Path | None, k: int = BASIS,
                   inputs: InputContrast | None = None) -> OODReference:
        """:meth:`fit`, kept in ``cache`` (a folder) under the hash of the reference factors and of this code's
        settings, so a process scores its first adapter without refitting (~1 s for the MiniLM checkpoint). An
        unreadable or stale cache file is refitted and rewritten; a cache that cannot be written is skipped."""
        if cache is None:
            return cls.fit(refs, k, inputs)
        digest = hashlib.sha256(f"ood-v{CACHE_VERSION} k={k} threshold={THRESHOLD}".encode())
        extra = {} if inputs is None else {"~inside": inputs.inside, "~contrast": inputs.contrast}
        if inputs is not None:
            digest.update(inputs.describe.encode())
        for name, t in sorted({**refs.tensors(), **extra}.items()):
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
        ref = cls.fit(refs, k, inputs)
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
        out = {"references": self.n, "basis": int(self.bases[0][0].shape[1]), "threshold_std": THRESHOLD,
               "mean": self.mean, "std": self.std}
        if self.inputs is not None:
            out["input_contrast"] = self.inputs.describe
        return out


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
        worst: tuple[str, str, float, float, int] | None = None
        for name, task in split.items():
            mine, theirs = _headline(task), _headline(test.get(name) or {})
            if mine and theirs and mine[0] == theirs[0] and theirs[1] - mine[1] > RANK_TOLERANCE:
                if worst is None or theirs[1] - mine[1] > worst[3] - worst[2]:
                    worst = (name, mine[0], mine[1], theirs[1], int(task.get("n", 0)))
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
