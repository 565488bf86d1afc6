"""A checkpoint's config.json as a typed object: what rebuilds the model and what scoring reads from it.

``from_dict`` is tolerant: optional fields default, keys it does not know are kept in ``extra`` and written back by
``to_dict`` (in the order of the file), so configs written by earlier or later versions load and round-trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lolctl.nn.spec import InputSpec, TaskSpec

FORMAT = "lolctl-checkpoint"
_REQUIRED = ("architecture", "input_spec", "tasks")
_WRITTEN_WHEN_SET = ("calibration", "task_descriptions", "fallback")  # older configs have none


@dataclass
class CheckpointConfig:
    architecture: str  # a name of lolctl.nn.registry.MODELS
    input_spec: InputSpec  # the module names and shapes the model reads
    tasks: tuple[TaskSpec, ...]
    model_config: dict[str, Any] = field(default_factory=dict)  # the architecture's config dataclass, as values
    name: str | None = None
    base_model: str | None = None
    base_model_aliases: list[str] = field(default_factory=list)
    target_normalisation: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # task → mean, std
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)  # regression task → lo, hi, n, method, ...
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)  # classification task → temperature, n
    ood: dict[str, Any] = field(default_factory=dict)  # ranks, scale_log_range, base_models
    # a composite's rank fallback (lolctl.nn.composite): seen_ranks, tasks, and its own calibration / intervals
    fallback: dict[str, Any] = field(default_factory=dict)
    task_descriptions: dict[str, str] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)  # the zoo: labels file, recipe, splits, test ids
    metrics: dict[str, Any] = field(default_factory=dict)  # split → task → metric → value
    format_version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # every other key of config.json, kept as read

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointConfig:
        """Raises KeyError / TypeError naming a missing or malformed required field."""
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise KeyError(missing[0])
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["input_spec"] = InputSpec.from_dict(data["input_spec"])
        values["tasks"] = tuple(TaskSpec.from_dict(t) for t in data["tasks"])
        extra = {k: v for k, v in data.items() if k not in known and k != "format"}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The config.json document (``format`` first, unknown keys after the known ones)."""
        out: dict[str, Any] = {"format": FORMAT, "format_version": self.format_version}
        for key in self.__dataclass_fields__:
            if key in ("format_version", "extra") or (key in _WRITTEN_WHEN_SET and not getattr(self, key)):
                continue
            value = getattr(self, key)
            out[key] = value.to_dict() if key == "input_spec" else [t.to_dict() for t in value] \
                if key == "tasks" else value
        return {**out, **self.extra}

    @property
    def probability_floor(self) -> float:
        """The smallest probability (and 1 − the largest) worth showing: 1 / the number of adapters calibration was
        measured on (the validation split), at least 0.01 — a 160-adapter check cannot support 0.9999991."""
        sizes = [int(v.get("n", 0)) for part in (self.calibration, self.intervals) for v in part.values()]
        n = max(sizes, default=0)
        return max(0.01, 1.0 / n) if n > 0 else 0.01
