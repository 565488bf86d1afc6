"""What a recipe is: the builder's only view of a task family.

A recipe is a frozen settings dataclass plus five methods. The builder owns folders, workers, resume, manifest and
labels; the recipe owns what one LoRA is and how it is scored. Everything a recipe returns for job ``index`` must be
a pure function of (settings, index) and the files ``prepare`` wrote, so a resumed build reproduces the same LoRAs.
A recipe may also set ``resources``: the Ray resources one LoRA's task needs with ``--engine ray`` (e.g.
``{"num_gpus": 1}``; default one CPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

# Settings that only append LoRAs to the end of a recipe's plan (no LoRA already planned changes): a zoo built with a
# smaller value may be resumed, and its pack appended to, with a larger one. Left out of a description while 0.
GROWABLE = ("n_train_more",)


def grows(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """True when recipe description ``new`` is ``old`` itself or ``old`` with growable settings raised."""
    if old is None or new is None:
        return old == new
    rest = {k: v for k, v in old.items() if k not in GROWABLE} == {k: v for k, v in new.items() if k not in GROWABLE}
    return rest and all(int(new.get(k, 0)) >= int(old.get(k, 0)) for k in GROWABLE)


@dataclass(frozen=True)
class Job:
    index: int
    split: str
    rank: int

    @property
    def id(self) -> str:
        return f"lora-{self.index:05d}"


@dataclass
class Trained:
    """One finished LoRA: factors per module (U = s·B, V = Aᵀ), its PEFT config fields, targets and hyperparameters."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # PEFT module path → (U (n×r), V (m×r))
    rank: int
    alpha: float
    targets: dict[str, Any]
    hp: dict[str, Any]
    peft: dict[str, Any] = field(default_factory=dict)


class Recipe(Protocol):
    name: str
    settings: Any  # a frozen dataclass; all of it goes into the manifest

    def tasks(self) -> list[dict[str, Any]]: ...

    def plan(self) -> list[Job]: ...

    def prepare(self, zoo: Path) -> dict[str, Any]: ...

    def load(self, zoo: Path) -> Any: ...

    def train(self, context: Any, job: Job) -> Trained: ...


def apply_overrides(settings: Any, overrides: dict[str, str]) -> Any:
    """``{"steps_max": "5"}`` → a copy of the settings dataclass with fields converted to their declared types."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    changes: dict[str, Any] = {}
    for key, text in overrides.items():
        if key not in fields:
            raise KeyError(key)
        current = getattr(settings, key)
        if isinstance(current, bool):
            changes[key] = text.lower() in ("1", "true", "yes")
        elif isinstance(current, int):
            changes[key] = int(text)
        elif isinstance(current, float):
            changes[key] = float(text)
        elif isinstance(current, tuple):
            kind = type(current[0]) if current else str
            changes[key] = tuple(kind(x) for x in text.split(",") if x)
        else:
            changes[key] = text
    return dataclasses.replace(settings, **changes)
