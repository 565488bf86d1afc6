"""Typed LoRA factors: what every reader produces and everything downstream consumes.

Convention (everywhere past the reader): ``U = s * B`` with shape (n, r) and ``V = A^T`` with shape (m, r), so
``U @ V.T`` is exactly the weight update ΔW (n = out features, m = in features). For conv LoRA, m = in * kh * kw and
ΔW is reshaped to (out, in, kh, kw); for embedding LoRA, n = embedding dim, m = vocabulary size, matching the layout of
``nn.Embedding.weight.T`` — see :attr:`ModuleFactors.kind`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

ModuleKind = Literal["linear", "conv", "embedding"]
Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "error")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Finding:
    """A coded observation about an adapter (see docs/findings.md for the catalogue)."""

    code: str
    severity: Severity
    message: str
    module: str | None = None
    remedy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass(frozen=True)
class ModuleFactors:
    """The low-rank update of one target module: ΔW = U @ V.T."""

    name: str  # module path without the PEFT wrapper prefix, e.g. "encoder.layer.0.attention.self.query"
    U: torch.Tensor  # (n, r) = scale * lora_B
    V: torch.Tensor  # (m, r) = lora_A^T
    scale: float
    scale_source: str  # "lora_alpha/r", "lora_alpha/sqrt(r) (rslora)", "alpha_pattern", "kohya alpha", ...
    kind: ModuleKind = "linear"
    conv_shape: tuple[int, ...] | None = None  # (out, in, kh, kw) of ΔW for conv modules
    keys: tuple[str, ...] = ()  # the tensor keys this module was read from
    dtype: str = ""  # on-disk dtype of the factors
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. {"dora_magnitude": (n,)}

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(n, m) of ΔW as a matrix."""
        return int(self.U.shape[0]), int(self.V.shape[0])

    def delta(self) -> torch.Tensor:
        """Dense ΔW (n × m). For tests and small modules only: costs n·m memory."""
        return self.U @ self.V.T


@dataclass(frozen=True)
class Payload:
    """A tensor in the adapter file that is not a LoRA factor (modules_to_save, heads, embeddings)."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass
class AdapterMeta:
    """What the adapter says about itself."""

    format: str  # "peft", "kohya", "diffusers", "mlx", ...
    files: list[str] = field(default_factory=list)
    base_model: str | None = None
    base_revision: str | None = None
    peft_type: str | None = None
    target_modules: list[str] | str | None = None
    config_rank: int | None = None
    config_alpha: float | None = None
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> number of tensors
    nbytes: int = 0  # bytes of tensor data
    file_metadata: dict[str, str] = field(default_factory=dict)  # safetensors __metadata__
    config: dict[str, Any] = field(default_factory=dict)  # raw adapter_config.json (plain data)


@dataclass
class Adapter:
    """One LoRA adapter, read: its modules' factors, its metadata, its non-LoRA payload and reader findings."""

    source: str
    meta: AdapterMeta
    modules: list[ModuleFactors]
    payload: list[Payload] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ranks(self) -> list[int]:
        return [m.rank for m in self.modules]

    def module(self, name: str) -> ModuleFactors:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)
