"""Shapes apart from tensors: the input spec of a model (module names and (n, m) per module) and its task heads.

An :class:`InputSpec` is frozen: it is built once from the training data, stored in the checkpoint, and every
adapter is checked against it before a model runs. Modules that share a shape form a *group*; models process a group
as one stacked tensor, so forward passes loop over groups, never over modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lolctl.errors import LolctlError

if TYPE_CHECKING:
    from lolctl.factors import Adapter

TaskKind = Literal["regression", "multilabel", "multiclass"]
TASK_KINDS: tuple[str, ...] = ("regression", "multilabel", "multiclass")


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    n: int  # out features of ΔW
    m: int  # in features of ΔW

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.m


@dataclass(frozen=True)
class ShapeGroup:
    """Modules of one shape: ``indices`` are positions in :attr:`InputSpec.modules`."""

    n: int
    m: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class InputSpec:
    modules: tuple[ModuleSpec, ...]

    def __post_init__(self) -> None:
        names = [mod.name for mod in self.modules]
        if not names:
            raise LolctlError("L171", "input spec", "no modules", "train on adapters that have LoRA modules")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise LolctlError("L171", dup, "module listed twice in the input spec", "fix the checkpoint config")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(mod.name for mod in self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    @property
    def groups(self) -> tuple[ShapeGroup, ...]:
        """Shape groups in order of first appearance."""
        order: dict[tuple[int, int], list[int]] = {}
        for i, mod in enumerate(self.modules):
            order.setdefault(mod.shape, []).append(i)
        return tuple(ShapeGroup(n, m, tuple(idx)) for (n, m), idx in order.items())

    @classmethod
    def from_adapter(cls, adapter: Adapter) -> InputSpec:
        return cls(tuple(ModuleSpec(mod.name, *mod.shape) for mod in adapter.modules))

    def check(self, adapter: Adapter) -> None:
        """Raise L171 naming the first module that is missing, unexpected or of another shape."""
        have = {mod.name: mod.shape for mod in adapter.modules}
        for mod in self.modules:
            if mod.name not in have:
                raise LolctlError(
                    "L171",
                    f"{adapter.source}: {mod.name}",
                    f"the model expects module {mod.name} ({mod.n}x{mod.m}) but the adapter has no such module "
                    f"(its first module: {next(iter(have), 'none')}; {len(have)} modules, {len(self.modules)} "
                    "expected)",
                    "score this adapter with a checkpoint trained on its base model and target modules",
                )
            if have[mod.name] != mod.shape:
                n, m = have[mod.name]
                raise LolctlError(
                    "L171",
                    f"{adapter.source}: {mod.name}",
                    f"module has shape {n}x{m} but the model expects {mod.n}x{mod.m}",
                    "score this adapter with a checkpoint trained on its base model",
                )
        extra = sorted(set(have) - set(self.names))
        if extra:
            raise LolctlError(
                "L171",
                f"{adapter.source}: {extra[0]}",
                f"the adapter has {len(extra)} module(s) the model was not trained on (first: {extra[0]})",
                "score this adapter with a checkpoint trained on the same target modules",
            )

    def to_dict(self) -> dict[str, Any]:
        return {"modules": [{"name": m.name, "n": m.n, "m": m.m} for m in self.modules]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        try:
            return cls(tuple(ModuleSpec(str(m["name"]), int(m["n"]), int(m["m"])) for m in data["modules"]))
        except (KeyError, TypeError, ValueError) as err:
            raise LolctlError("L170", "config.json: input_spec", f"malformed input spec ({err})", "re-train") from err


@dataclass(frozen=True)
class TaskSpec:
    """One prediction head. ``columns`` are label-file columns; ``labels`` name the outputs of a classifier."""

    name: str
    kind: TaskKind
    columns: tuple[str, ...]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise LolctlError("L175", f"task {self.name}", f"kind {self.kind!r} is not one of {TASK_KINDS}", "")
        if self.kind in ("multilabel", "multiclass") and not self.labels:
            raise LolctlError("L175", f"task {self.name}", f"a {self.kind} task needs label names", "")

    @property
    def out_dim(self) -> int:
        return len(self.columns) if self.kind == "regression" else len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "columns": list(self.columns), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(str(data["name"]), data["kind"], tuple(data.get("columns", ())), tuple(data.get("labels", ())))
