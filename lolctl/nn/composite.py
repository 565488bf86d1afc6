"""A composite model: one member model per group of tasks, each trained and early-stopped on its own tasks.

``lolctl train --model auto`` builds one: for every task it trains each candidate (e.g. GL-net with singular values,
MLP+SVD) on that task alone, keeps the candidate with the lowest validation loss, and joins the winners. A single
early stop for all tasks stops where the sum of the task losses is lowest, which for the MiniLM zoo is long before
the regressions are learnt (issue 11: quality R² .61 jointly against .88 alone); per-task members stop each at its
own best epoch. The symmetry of the composite is that of its members (every candidate is GL-invariant).

Rank fallback. Validation adapters all have the training ranks, so selection cannot see that a member fed singular
values σ_1..σ_k (rank-specific inputs: :attr:`LoraModel.rank_free` is False) collapses on other ranks (MiniLM zoo,
trained at r = 4: quality R² −2.3 at r = 1). When a task's winner is rank-specific, the best rank-free candidate is
kept too, as its *fallback* member: adapters with a module rank the training set never had (``seen_ranks``) are
predicted by the fallback, the others by the winner. Rank is GL-invariant, so routing on it keeps the symmetry; the
checkpoint keeps separate calibration for the fallback (``lolctl.nn.workflow.fit_checkpoint_uncertainty``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lolctl.errors import LolctlError
from lolctl.nn.base import LoraModel, ModelConfig
from lolctl.nn.batch import LoraBatch
from lolctl.nn.spec import InputSpec, TaskSpec

# The shipped model's GL-net (rank-free: every rank-specific winner gets it as fallback; its base-model probes are left
# out, they need the base model's own text — add probes=FILE from `lolctl zoo probes`), GL-net with singular values
# and MLP+SVD (spectra carry quality).
DEFAULT_CANDIDATES = ("glnet:unit_norm=true,hidden=8,anchors=64,equiv_dropout=0.2;"
                      "glnet:unit_norm=true,singular_values=4;mlp_svd:unit_norm=true")


@dataclass
class CompositeConfig(ModelConfig):
    # [{"architecture": name, "model_config": {...}, "tasks": [task names], "label": "...", "fallback": bool}]
    members: list = field(default_factory=list)
    seen_ranks: list = field(default_factory=list)  # ranks of the training adapters; others go to fallback members


class Composite(LoraModel):
    name = "composite"
    config_class = CompositeConfig
    config: CompositeConfig

    def __init__(self, config: CompositeConfig, spec: InputSpec, tasks: tuple[TaskSpec, ...],
                 members: list[LoraModel]) -> None:
        """``members``: the models :func:`member_plan` describes, built by :func:`lolctl.nn.registry.build_model`."""
        super().__init__(config, spec, tasks)
        self.members = nn.ModuleList(members)
        self.models: list[LoraModel] = list(members)  # the same modules, typed (nn.ModuleList items are Module)
        # task → the members that predict it (several: a seed ensemble or a blend, their outputs averaged with the
        # members' weights, 1 each unless the config says otherwise)
        self.route: dict[str, list[int]] = {}
        self.fallback_route: dict[str, list[int]] = {}  # the same, for adapters of ranks outside seen_ranks
        for i, (member, entry) in enumerate(zip(members, config.members)):
            for t in member.tasks:
                (self.fallback_route if entry.get("fallback") else self.route).setdefault(t.name, []).append(i)
        missing = [t.name for t in tasks if t.name not in self.route]
        if missing:
            raise LolctlError("L180", "composite config", f"no member predicts {missing[0]}", "retrain")
        if self.fallback_route and not config.seen_ranks:
            raise LolctlError("L180", "composite config", "fallback members without seen_ranks", "retrain")
        self.invariance = " and ".join(sorted({m.invariance for m in members}))  # type: ignore[misc]
        self.force_route: str | None = None  # "primary" / "fallback": every adapter one way (calibration)
        self.alias = list(range(len(members)))  # member -> the member that computes its outputs (share_identical)
        self._sync_member_configs()

    @torch.no_grad()
    def share_identical(self) -> int:
        """Let a member whose architecture, config, tasks and weights equal an earlier one's reuse that member's
        outputs (a blend's fallback often repeats a primary member: the shipped checkpoint has 4 such of 16). Called
        by ``load_checkpoint``; returns how many members are aliased. Training the members afterwards would
        invalidate it."""
        def same(a: LoraModel, b: LoraModel) -> bool:
            if type(a) is not type(b) or a.config.to_dict() != b.config.to_dict() or a.tasks != b.tasks:
                return False
            sa, sb = a.state_dict(), b.state_dict()
            return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

        self.alias = list(range(len(self.models)))
        for j, member in enumerate(self.models):
            self.alias[j] = next((i for i in range(j) if self.alias[i] == i and same(self.models[i], member)), j)
        return sum(i != j for j, i in enumerate(self.alias))

    def _sync_member_configs(self) -> None:
        """Members fill config fields as they are built and prepared (GL-net: anchor rank, probe shape); the saved
        composite config must rebuild them with those values."""
        for entry, member in zip(self.config.members, self.models):
            entry["model_config"] = member.config.to_dict()

    @property
    def has_fallback(self) -> bool:
        return bool(self.fallback_route)

    @property
    def rank_free(self) -> bool:
        """Rank-free where every task's answer at an unseen rank comes from a rank-free member."""
        return all(self.models[i].rank_free for t in self.tasks
                   for i in self.fallback_route.get(t.name, self.route[t.name]))

    def fallback_rows(self, batch: LoraBatch) -> torch.Tensor:
        """(B,) bool: the adapters the fallback members predict (a module rank not in ``seen_ranks``)."""
        if self.force_route is not None or not self.has_fallback:
            return torch.full((batch.size,), self.force_route == "fallback", device=batch.ranks.device)
        seen = torch.as_tensor(self.config.seen_ranks, device=batch.ranks.device)
        unseen = (batch.ranks > 0) & ~torch.isin(batch.ranks, seen)  # rank 0: a module the adapter lacks
        return unseen.any(dim=1)

    @property
    def max_rank(self) -> int | None:
        limits = [limit for m in self.models if (limit := m.max_rank) is not None]
        return min(limits) if limits else None

    @torch.no_grad()
    def prepare(self, batch: LoraBatch) -> None:
        super().prepare(batch)
        for m in self.models:
            m.prepare(batch)
        self._sync_member_configs()

    def representation(self, batch: LoraBatch) -> torch.Tensor:
        return torch.cat([m.representation(batch) for m in self.models], dim=1)

    def forward(self, batch: LoraBatch) -> dict[str, torch.Tensor]:
        rows = self.fallback_rows(batch) if self.has_fallback else None
        some = rows is not None and bool(rows.any())  # any adapter (all of them: every) for the fallback
        every = some and rows is not None and bool(rows.all())
        outs: dict[int, dict[str, torch.Tensor]] = {}

        def run(i: int) -> dict[str, torch.Tensor]:
            i = self.alias[i]
            if i not in outs:
                outs[i] = self.models[i](batch)
            return outs[i]

        def mean(indices: list[int], task: str) -> torch.Tensor:  # standardised values or logits, averaged
            outputs = [run(i)[task] for i in indices]
            if len(outputs) == 1:
                return outputs[0]
            w = torch.tensor([float(self.config.members[i].get("weight", 1.0)) for i in indices],
                             dtype=outputs[0].dtype, device=outputs[0].device)
            return torch.einsum("k,k...->...", w / w.sum(), torch.stack(outputs))

        result = {}
        for t in self.tasks:
            fallback = self.fallback_route.get(t.name)
            if fallback is None or not some:
                result[t.name] = mean(self.route[t.name], t.name)
            elif every:
                result[t.name] = mean(fallback, t.name)
            else:
                assert rows is not None
                result[t.name] = torch.where(rows[:, None], mean(fallback, t.name), mean(self.route[t.name], t.name))
        return result


def member_plan(config: CompositeConfig, tasks: tuple[TaskSpec, ...]) -> list[tuple[str, dict[str, Any],
                                                                                   tuple[TaskSpec, ...]]]:
    """(architecture, model config values, its tasks) of every member of a composite config."""
    if not config.members:
        raise LolctlError("L180", "composite config", "no members", "train with --model auto")
    by_name = {t.name: t for t in tasks}
    return [(m["architecture"], dict(m.get("model_config", {})), tuple(by_name[n] for n in m["tasks"] if n in by_name))
            for m in config.members]


def parse_candidates(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``"glnet:unit_norm=true,singular_values=4;mlp_svd"`` → [("glnet", {...}), ("mlp_svd", {})]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        arch, _, rest = part.partition(":")
        values = {}
        for item in filter(None, (x.strip() for x in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise LolctlError("L180", f"--candidates {part}", f"expected KEY=VALUE, got {item!r}",
                                  "e.g. glnet:unit_norm=true,singular_values=4;mlp_svd")
            values[key.strip()] = value.strip()
        out.append((arch.strip(), values))
    if not out:
        raise LolctlError("L180", "--candidates", "no candidate models", f"e.g. {DEFAULT_CANDIDATES}")
    return out


def parse_ensemble(text: str, tasks: tuple[str, ...]) -> dict[str, int]:
    """Seeds per task: ``"3"`` → every task 3; ``"membership=3,pos_mix=3"`` → those two 3, the others 1."""
    out = {t: 1 for t in tasks}
    items = [x.strip() for x in text.split(",") if x.strip()] or [text]
    for item in items:
        name, eq, count = (x.strip() for x in item.rpartition("="))
        reason = None
        if not count.isdigit() or int(count) < 1:
            reason = "expected a count N ≥ 1, or TASK=N pairs"
        elif eq and name not in out:
            reason = f"no task {name!r} is trained (tasks: {', '.join(tasks)})"
        elif not eq and len(items) > 1:
            reason = "a bare count applies to every task: give it alone, or TASK=N pairs"
        if reason:
            raise LolctlError("L180", f"--ensemble {item}", reason,
                              "e.g. --ensemble 3, or --ensemble membership=3,pos_mix=3")
        out.update({name: int(count)} if eq else dict.fromkeys(tasks, int(count)))
    return out


def candidate_label(arch: str, values: dict[str, Any]) -> str:
    return arch + (" " + " ".join(f"{k}={v}" for k, v in values.items()) if values else "")
