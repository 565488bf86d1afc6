"""Model name → class. Each class carries its config dataclass (``config_class``)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from lolctl.errors import LolctlError
from lolctl.nn.base import LoraModel, ModelConfig
from lolctl.nn.baselines import MLP, MLPSVD, MLPDense, MLPOAlign, Transformer
from lolctl.nn.composite import Composite, CompositeConfig, member_plan
from lolctl.nn.glnet import GLNet
from lolctl.nn.spec import InputSpec, TaskSpec

MODELS: dict[str, type[LoraModel]] = {
    cls.name: cls for cls in (MLP, MLPSVD, MLPOAlign, MLPDense, Transformer, GLNet, Composite)
}


def model_class(name: str) -> type[LoraModel]:
    if name not in MODELS:
        raise LolctlError("L180", f"--model {name}", f"unknown model; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def make_config(name: str, values: dict[str, Any] | None = None) -> ModelConfig:
    """The model's config dataclass from plain values (strings are converted to the field's type)."""
    cls = model_class(name).config_class
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in (values or {}).items():
        if key not in known:
            raise LolctlError("L180", f"{name} config {key}", f"no such field; fields: {', '.join(known)}")
        kind = str(known[key].type)
        try:
            if kind == "int":
                kwargs[key] = int(value)
            elif kind == "float":
                kwargs[key] = float(value)
            elif kind == "bool":
                kwargs[key] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            else:
                kwargs[key] = value
        except ValueError as err:
            raise LolctlError("L180", f"{name} config {key}", f"expected {kind}, got {value!r}") from err
    return cls(**kwargs)


def build_model(
    name: str, config: ModelConfig | dict[str, Any] | None, spec: InputSpec, tasks: tuple[TaskSpec, ...]
) -> LoraModel:
    cls = model_class(name)
    if not isinstance(config, ModelConfig):
        config = make_config(name, config)
    if isinstance(config, CompositeConfig):  # its members first (registry models themselves)
        members = [build_model(arch, values, spec, mine) for arch, values, mine in member_plan(config, tasks)]
        return Composite(config, spec, tasks, members)
    return cls(config, spec, tasks)
